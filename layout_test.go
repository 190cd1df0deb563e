package xdshard

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/xdshard/xdshard/"

// rule says that the packages matching from must not depend, directly or
// through others, on any package with one of the forbidden prefixes.
type rule struct {
	from   string // a package path relative to the module; "/..." matches beneath
	forbid []string
	why    string
}

var meshTypes = []string{"istio.io/", "k8s.io/", "sigs.k8s.io/"}

var rules = []rule{
	{"snapshot", append([]string{module + "snapshot/", module + "server"}, meshTypes...),
		"the snapshot is the contract between building and serving: it knows no mesh types, no producers and no server"},
	{"server/xds", append([]string{module + "snapshot/", module + "server/admin"}, meshTypes...),
		"the xDS face serves snapshots; it never sees Istio or Kubernetes config types, the model or the builders"},
	{"server/admin", append([]string{module + "snapshot/"}, meshTypes...),
		"the admin face reads the store and what the assembly hands it; it never sees config types or builders"},
	{"snapshot/source/...", []string{module + "server", module + "snapshot/builder", module + "snapshot/translate"},
		"sources feed the model; they know nothing of building or serving"},
	{"snapshot/model", []string{module + "server", module + "snapshot/builder", module + "snapshot/translate", module + "snapshot/source"},
		"the model holds the mesh; stages after it import it, never the reverse"},
	{"snapshot/translate/...", []string{module + "server", module + "snapshot/builder", module + "snapshot/source", module + "bench"},
		"translation is a pure function of a tenant's view"},
	{"snapshot/builder", []string{module + "server", module + "snapshot/translate", module + "snapshot/source"},
		"the scheduler is told what to build with; it publishes to the store and knows no face"},
	{"sharding", []string{module + "server", module + "snapshot/builder", module + "snapshot/translate", module + "snapshot/source"},
		"sharding names owners and fetches snapshots; the assembly wires it to the builder and the faces"},
	{"identity", append([]string{module + "server", module + "snapshot", module + "identity/tokenreview"}, meshTypes...),
		"identity says who a client is; it knows no config, no snapshot and no Kubernetes (the faces import it)"},
	{"identity/tokenreview", []string{module + "server", module + "snapshot"},
		"the TokenReview verifier only verifies tokens"},
}

// TestImportRules checks the tree's import rules over `go list -deps`, so
// a change that breaks one fails here, naming the path that breaks it.
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		deps[f[0]] = f[1:]
	}
	for _, r := range rules {
		matched := 0
		for pkg, ds := range deps {
			if !matches(r.from, strings.TrimPrefix(pkg, module)) || !strings.HasPrefix(pkg, module) {
				continue
			}
			matched++
			for _, d := range ds {
				for _, bad := range r.forbid {
					if strings.HasPrefix(d, bad) && d != pkg {
						t.Errorf("%s depends on %s: %s", pkg, d, r.why)
					}
				}
			}
		}
		if matched == 0 {
			t.Errorf("rule for %q matches no package; update the rule with the tree", r.from)
		}
	}
}

func matches(pattern, rel string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return rel == base || strings.HasPrefix(rel, base+"/")
	}
	return rel == pattern
}
