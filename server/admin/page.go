package admin

import (
	"cmp"
	"fmt"
	"html/template"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/xdshard/xdshard/internal/plot"
	"github.com/xdshard/xdshard/server/xds"
	"github.com/xdshard/xdshard/snapshot"
)

// pageProxies bounds the proxies the page lists, problems first; the rest
// are in /debug/syncz.
const pageProxies = 300

// stageMetric is the push-stage histogram the page plots.
const stageMetric = "xdshard_push_stage_seconds"

// stageOrder is the order of a push's stages.
var stageOrder = []string{"source", "debounce", "build", "publish", "queue", "send", "ack"}

// operatorPage serves the operator's page at /: the replica's status, its
// tenants (problems first), its proxies (stale and rejecting first), the
// members sharing the tenants, and where push time goes, as server-made
// HTML with no script, under the admin port's authorization.
func operatorPage(o Options) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.Error(w, "no such page: the operator's page is /, the JSON pages are under /debug/", http.StatusNotFound)
			return
		}
		d := pageData{Replica: o.Replica, Now: time.Now().UTC().Format(time.RFC3339)}
		d.Status, d.Reasons = o.Health()
		d.Ready, d.NotReady = o.Ready()
		d.MeshWide = o.MeshWide()
		d.Tenants = pageTenants(o)
		d.Proxies, d.MoreProxies = pageProxyRows(o.Clients())
		for _, p := range d.Proxies {
			if p.Problem {
				d.ProxyProblems++
			}
		}
		if o.Members != nil {
			d.Members = o.Members()
			d.Sharded = len(d.Members) > 0
		}
		d.Stages, d.StagePlot = pageStages(o)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := pageTemplate.Execute(w, d); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}
}

type pageData struct {
	Replica, Now, Status string
	Reasons              []string
	Ready                bool
	NotReady             string
	MeshWide             []snapshot.Diagnostic
	Tenants              []pageTenant
	Proxies              []pageProxy
	MoreProxies          int
	ProxyProblems        int
	Sharded              bool
	Members              []Member
	Stages               []pageStage
	StagePlot            template.HTML
}

type pageTenant struct {
	TenantStatus
	Rollout string // "candidate v (since t)" or "held v: why"
	Errors  int
}

// pageTenants lists the tenants, those with a failed build or an error
// first.
func pageTenants(o Options) []pageTenant {
	var out []pageTenant
	for _, t := range Tenants(o.Store, o.Failures()) {
		t.Owner, t.Origin = o.Owner(t.Tenant)
		pt := pageTenant{TenantStatus: t}
		for _, d := range t.Diagnostics {
			if d.Severity == snapshot.SeverityError {
				pt.Errors++
			}
		}
		if o.Rollout != nil {
			if rs, err := o.Rollout(t.Tenant); err == nil {
				switch {
				case rs.Candidate != "":
					pt.Rollout = fmt.Sprintf("canary %s since %s", short(rs.Candidate), rs.Since.UTC().Format(time.TimeOnly))
				case rs.Held != "":
					pt.Rollout = fmt.Sprintf("held back %s: %s", short(rs.Held), rs.HeldWhy)
				}
			}
		}
		out = append(out, pt)
	}
	rank := func(t pageTenant) int {
		switch {
		case t.BuildError != "":
			return 0
		case t.Errors > 0 || strings.HasPrefix(t.Rollout, "held"):
			return 1
		case len(t.Diagnostics) > 0 || t.Pinned || t.Rollout != "":
			return 2
		}
		return 3
	}
	slices.SortStableFunc(out, func(a, b pageTenant) int { return cmp.Compare(rank(a), rank(b)) })
	return out
}

type pageProxy struct {
	xds.ClientStatus
	Problem bool
	Worst   string
	Types   []pageType
	NACKs   []string
}

type pageType struct{ Name, Sync string }

// typeNames are the short names istioctl gives the Envoy types.
var typeNames = map[string]string{
	snapshot.ClusterType: "CDS", snapshot.EndpointType: "EDS", snapshot.ListenerType: "LDS", snapshot.RouteType: "RDS",
}

// syncRank orders sync states, the worst first.
var syncRank = map[string]int{"ERROR": 0, "STALE": 1, "NOT_SENT": 2, "SYNCED": 3}

// pageProxyRows lists the proxies, rejecting ones first, then stale, then
// not sent, then synced; at most pageProxies, and how many more.
func pageProxyRows(cs []xds.ClientStatus) ([]pageProxy, int) {
	out := make([]pageProxy, 0, len(cs))
	for _, c := range cs {
		p := pageProxy{ClientStatus: c, Worst: "SYNCED"}
		for _, t := range slices.Sorted(maps.Keys(c.Types)) {
			st := c.Types[t]
			name := typeNames[t]
			if name == "" {
				name = t[strings.LastIndex(t, ".")+1:]
			}
			p.Types = append(p.Types, pageType{name, st.Sync})
			if syncRank[st.Sync] < syncRank[p.Worst] {
				p.Worst = st.Sync
			}
			if st.LastNACK != nil && st.Sync == "ERROR" {
				p.NACKs = append(p.NACKs, name+": "+st.LastNACK.Message)
			}
		}
		p.Problem = p.Worst != "SYNCED"
		out = append(out, p)
	}
	slices.SortStableFunc(out, func(a, b pageProxy) int { return cmp.Compare(syncRank[a.Worst], syncRank[b.Worst]) })
	if len(out) > pageProxies {
		return out[:pageProxies], len(out) - pageProxies
	}
	return out, 0
}

type pageStage struct {
	Stage         string
	Count         uint64
	P50, P90, P99 string
}

// pageStages reads the push-stage histogram: a row per stage with its
// quantiles (bucket bounds), and one plot of every stage's distribution.
func pageStages(o Options) ([]pageStage, template.HTML) {
	mfs, err := o.Gatherer.Gather()
	if err != nil {
		return nil, ""
	}
	byStage := map[string]*dto.Histogram{}
	for _, mf := range mfs {
		if mf.GetName() != stageMetric {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "stage" && m.GetHistogram().GetSampleCount() > 0 {
					byStage[l.GetValue()] = m.GetHistogram()
				}
			}
		}
	}
	var rows []pageStage
	var series []plot.Series
	for _, stage := range stageOrder {
		h := byStage[stage]
		if h == nil {
			continue
		}
		n := h.GetSampleCount()
		s := plot.Series{Name: stage}
		for _, b := range h.GetBucket() {
			if math.IsInf(b.GetUpperBound(), 1) {
				break
			}
			s.X = append(s.X, b.GetUpperBound()*1000)
			s.Y = append(s.Y, float64(b.GetCumulativeCount())/float64(n))
			if b.GetCumulativeCount() == n {
				break // the buckets beyond hold nothing more
			}
		}
		series = append(series, s)
		rows = append(rows, pageStage{Stage: stage, Count: n, P50: quantile(h, 0.5), P90: quantile(h, 0.9), P99: quantile(h, 0.99)})
	}
	if len(series) == 0 {
		return nil, ""
	}
	return rows, plot.CDF("push time by stage, cumulative, milliseconds on a logarithmic scale", "ms", true, series)
}

// quantile is the bucket bound at or below which q of a histogram's
// samples fall, as "≤ N ms".
func quantile(h *dto.Histogram, q float64) string {
	want := q * float64(h.GetSampleCount())
	for _, b := range h.GetBucket() {
		if float64(b.GetCumulativeCount()) >= want {
			if math.IsInf(b.GetUpperBound(), 1) {
				break
			}
			return fmt.Sprintf("≤ %g ms", b.GetUpperBound()*1000)
		}
	}
	return "above the largest bucket"
}

// short is a version's first 12 characters, as the page shows it.
func short(v string) string {
	if len(v) > 12 {
		return v[:12]
	}
	return v
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{"short": short}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xdshard {{.Replica}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#111}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eee}caption{text-align:left;font-weight:bold;padding:.25em 0}
.bad{background:#fdd}.warn{background:#ffe8b0}.ok{color:#075}
code{font-size:.95em}nav a{margin-right:1em}
</style></head><body>
<header><h1>xdshard {{.Replica}}</h1>
<p>Status: <strong class="{{if eq .Status "serving"}}ok{{else}}bad{{end}}">{{.Status}}</strong>{{range .Reasons}}; {{.}}{{end}}.
{{if .Ready}}Ready.{{else}}<strong class="bad">Not ready: {{.NotReady}}</strong>{{end}}
As of {{.Now}}.</p>
<nav aria-label="sections"><a href="#tenants">Tenants</a><a href="#proxies">Proxies</a><a href="#members">Members</a><a href="#push">Push time</a>
<a href="/debug/tenantz">tenantz</a><a href="/debug/syncz">syncz</a><a href="/metrics">metrics</a></nav></header>
<main>
{{if .MeshWide}}<section aria-labelledby="meshwide"><h2 id="meshwide">Problems of no tenant</h2><ul>
{{range .MeshWide}}<li class="{{if eq .Severity "error"}}bad{{else}}warn{{end}}">{{.Severity}}: {{.String}}</li>{{end}}</ul></section>{{end}}

<section aria-labelledby="tenants"><h2 id="tenants">Tenants</h2>
<table><caption>{{len .Tenants}} tenants, those with problems first</caption>
<thead><tr><th scope="col">Tenant</th><th scope="col">Version</th>{{if .Sharded}}<th scope="col">Owner</th><th scope="col">Copy</th>{{end}}<th scope="col">Pin</th><th scope="col">Rollout</th><th scope="col">Problems</th></tr></thead><tbody>
{{range .Tenants}}<tr{{if .BuildError}} class="bad"{{else if .Errors}} class="warn"{{end}}>
<th scope="row">{{.Tenant}}</th><td><code>{{short .Version}}</code></td>{{if $.Sharded}}<td>{{.Owner}}</td><td>{{.Origin}}</td>{{end}}
<td>{{if .Pinned}}pinned{{if .Waiting}}, {{.Waiting}} newer waiting{{end}}{{end}}</td><td>{{.Rollout}}</td>
<td>{{if .BuildError}}<p><strong>Last build failed</strong> (the last good version is served): {{.BuildError}}</p>{{end}}
{{if .Diagnostics}}<ul>{{range .Diagnostics}}<li>{{.Severity}}: {{.String}}</li>{{end}}</ul>{{else if not .BuildError}}none{{end}}</td></tr>
{{end}}</tbody></table></section>

<section aria-labelledby="proxies"><h2 id="proxies">Proxies</h2>
<table><caption>{{len .Proxies}} proxies shown, {{.ProxyProblems}} not in sync, rejecting ones first, then stale ones{{if .MoreProxies}}; {{.MoreProxies}} more in /debug/syncz{{end}}</caption>
<thead><tr><th scope="col">Proxy</th><th scope="col">Tenant</th><th scope="col">Kind</th><th scope="col">Version</th><th scope="col">Sync by type</th><th scope="col">Rejected with</th></tr></thead><tbody>
{{range .Proxies}}<tr{{if eq .Worst "ERROR"}} class="bad"{{else if .Problem}} class="warn"{{end}}>
<th scope="row">{{.Node}}</th><td>{{.Tenant}}</td><td>{{.View}}{{if .Delta}} (delta){{end}}</td><td><code>{{short .Snapshot}}</code>{{if .Canary}} (canary){{end}}</td>
<td>{{range .Types}}{{.Name}}&nbsp;{{.Sync}}<br>{{end}}</td><td>{{range .NACKs}}<p>{{.}}</p>{{end}}</td></tr>
{{end}}</tbody></table></section>

<section aria-labelledby="members"><h2 id="members">Members</h2>
{{if not .Sharded}}<p>Not sharded: this replica builds every tenant.</p>{{else}}
<table><caption>The replicas sharing the tenants</caption>
<thead><tr><th scope="col">Replica</th><th scope="col">Peer address</th><th scope="col">Tenants owned</th><th scope="col">Streams</th></tr></thead><tbody>
{{range .Members}}<tr><th scope="row">{{.ID}}{{if .Self}} (this one){{end}}</th><td>{{.Addr}}</td><td>{{.Owns}}</td><td>{{if .Streams}}{{.Streams}}{{end}}</td></tr>
{{end}}</tbody></table>{{end}}</section>

<section aria-labelledby="push"><h2 id="push">Push time by stage</h2>
{{if .Stages}}<table><caption>Since the replica started (bucket bounds)</caption>
<thead><tr><th scope="col">Stage</th><th scope="col">Count</th><th scope="col">p50</th><th scope="col">p90</th><th scope="col">p99</th></tr></thead><tbody>
{{range .Stages}}<tr><th scope="row">{{.Stage}}</th><td>{{.Count}}</td><td>{{.P50}}</td><td>{{.P90}}</td><td>{{.P99}}</td></tr>{{end}}
</tbody></table>
<figure>{{.StagePlot}}<figcaption>The share of pushes whose stage took at most the time on the x axis.</figcaption></figure>
{{else}}<p>No push yet.</p>{{end}}</section>
</main></body></html>
`))
