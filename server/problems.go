package server

import (
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdshard/xdshard/snapshot"
)

// problems is every diagnostic the replica knows of, from the source (per
// file, including those that name no namespace) and from each tenant's
// last build. Each distinct diagnostic is logged once at WARN when it
// first appears and once when the last place reporting it clears it, and
// counted in xdshard_config_diagnostics{kind,severity}; a diagnostic both
// the source and a tenant report is one problem.
type problems struct {
	log   *slog.Logger
	gauge *prometheus.GaugeVec
	// appeared is told of each problem when it first appears (the source
	// records it where its users look, a Kubernetes Event); nil for none.
	appeared func(snapshot.Diagnostic)

	mu      sync.Mutex
	byScope map[string][]snapshot.Diagnostic // "source <file>" or "tenant <name>"
	refs    map[snapshot.Diagnostic]int
	failed  map[string]string // tenant -> its last build's error
}

func newProblems(log *slog.Logger, reg prometheus.Registerer, appeared func(snapshot.Diagnostic)) *problems {
	if appeared == nil {
		appeared = func(snapshot.Diagnostic) {}
	}
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "xdshard_config_diagnostics",
		Help: "Problems with the config now: objects rejected (severity error) or used in part (warning), by the kind of object (file and folder for inputs that are not objects yet).",
	}, []string{"kind", "severity"})
	if err := reg.Register(g); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			g = are.ExistingCollector.(*prometheus.GaugeVec)
		}
	}
	return &problems{log: log, gauge: g, appeared: appeared, byScope: map[string][]snapshot.Diagnostic{}, refs: map[snapshot.Diagnostic]int{}, failed: map[string]string{}}
}

// set replaces what scope reports.
func (p *problems) set(scope string, diags []snapshot.Diagnostic) {
	for _, d := range p.update(scope, diags) {
		p.appeared(d)
	}
}

// update records scope's diagnostics and returns those that appeared.
func (p *problems) update(scope string, diags []snapshot.Diagnostic) (appeared []snapshot.Diagnostic) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.byScope[scope]
	if len(diags) == 0 {
		delete(p.byScope, scope)
	} else {
		p.byScope[scope] = slices.Clone(diags)
	}
	for _, d := range dedupe(diags) {
		if p.refs[d]++; p.refs[d] == 1 {
			appeared = append(appeared, d)
			p.gauge.WithLabelValues(kindOf(d), string(d.Severity)).Inc()
			p.log.Warn("config problem", "problem", d.String(), "severity", d.Severity, "reported by", scope)
		}
	}
	for _, d := range dedupe(old) {
		if p.refs[d]--; p.refs[d] == 0 {
			delete(p.refs, d)
			p.gauge.WithLabelValues(kindOf(d), string(d.Severity)).Dec()
			p.log.Info("config problem cleared", "problem", d.String(), "severity", d.Severity)
		}
	}
	return appeared
}

// buildFailed records a tenant's build error ("" when it built).
func (p *problems) buildFailed(tenant, err string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == "" {
		delete(p.failed, tenant)
	} else {
		p.failed[tenant] = err
	}
}

// meshWide lists the source's diagnostics that name no namespace (a file
// that does not parse, an unknown kind, an unreadable folder): they belong
// to no tenant, so no tenant's status shows them.
func (p *problems) meshWide() []snapshot.Diagnostic {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := []snapshot.Diagnostic{}
	for _, scope := range slices.Sorted(maps.Keys(p.byScope)) {
		if !strings.HasPrefix(scope, "source ") {
			continue
		}
		for _, d := range p.byScope[scope] {
			if d.Namespace == "" {
				out = append(out, d)
			}
		}
	}
	return out
}

// health says whether the replica serves all of its config ("serving") or
// serves with problems ("degraded"), and why. Proxies keep their config
// either way: this is for operators and alerts, not for readiness.
func (p *problems) health() (status string, reasons []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range slices.Sorted(maps.Keys(p.failed)) {
		reasons = append(reasons, "tenant "+t+": last build failed, serving its last good snapshot: "+p.failed[t])
	}
	errs := 0 // warnings alone (a field not applied) do not degrade
	for d := range p.refs {
		if !d.Warning() {
			errs++
		}
	}
	if errs > 0 {
		reasons = append(reasons, plural(errs, "object or file is", "objects or files are")+" rejected or kept at their last good version (see /debug/tenantz)")
	}
	if len(reasons) == 0 {
		return "serving", nil
	}
	return "degraded", reasons
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

func dedupe(ds []snapshot.Diagnostic) []snapshot.Diagnostic {
	seen := map[snapshot.Diagnostic]bool{}
	var out []snapshot.Diagnostic
	for _, d := range ds {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// kindOf is the kind of object a diagnostic is about, a bounded label:
// "file" or "folder" when it is about an input that is not an object, and
// "source" for the source itself (an API server that does not answer, a
// kind it does not serve).
func kindOf(d snapshot.Diagnostic) string {
	if k, _, ok := strings.Cut(d.Object, " "); ok && k != "" {
		return k
	}
	if d.Origin == "kubernetes" {
		return "source"
	}
	if strings.Contains(d.Message, "folder") {
		return "folder"
	}
	return "file"
}
