package translate

import (
	"strings"
	"testing"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/demo"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// demoWith is the demo mesh plus extra manifests.
func demoWith(t *testing.T, extra string) *model.Mesh {
	t.Helper()
	r, err := manifest.LoadFS(demo.FS())
	if err != nil {
		t.Fatal(err)
	}
	m := r.Mesh()
	for _, d := range manifest.Decode("extra.yaml", []byte(extra)) {
		if d.Diag != nil && !d.Diag.Warning() {
			t.Fatalf("extra manifest does not decode: %v", d.Diag)
		}
		m.Apply([]model.Change{{Key: d.Object.Key, Object: d.Object}})
	}
	return m
}

// Each of these passes istiod's validation but yields config Envoy
// rejects. Before, each failed its whole tenant's build (and istio-system's
// failed every tenant's).
var poison = map[string]struct{ yaml, object string }{
	"service port above 65535": {`
apiVersion: v1
kind: Service
metadata: {name: huge, namespace: acme-web}
spec:
  clusterIP: 10.96.9.9
  ports: [{name: http, port: 70000}]
`, "Service acme-web/huge"},
	"header removed by an empty name": {`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: blank-header, namespace: acme-web}
spec:
  hosts: [ratings.acme-data.svc.cluster.local]
  http:
    - headers: {request: {remove: [""]}}
      route: [{destination: {host: ratings.acme-data.svc.cluster.local}}]
`, "VirtualService acme-web/blank-header"},
	"shared service port above 65535": {`
apiVersion: v1
kind: Service
metadata: {name: huge, namespace: istio-system}
spec:
  clusterIP: 10.96.9.8
  ports: [{name: http, port: 70000}]
`, "Service istio-system/huge"},
}

// TestBadObjectCostsOnlyItself: a poison object is left out with an error
// diagnostic naming it; everything else of its tenant (and of every other
// tenant) is built as without it.
func TestBadObjectCostsOnlyItself(t *testing.T) {
	clean := map[string]*snapshot.Snapshot{}
	base := demoWith(t, "")
	for _, tenant := range base.Tenants() {
		s, err := Compose(base.View(tenant))
		if err != nil {
			t.Fatal(err)
		}
		clean[tenant] = s
	}
	for name, p := range poison {
		t.Run(name, func(t *testing.T) {
			m := demoWith(t, p.yaml)
			blamed, poisoned := 0, 0
			for _, tenant := range m.Tenants() {
				if _, err := (Options{}).compose(m.View(tenant), nil, nil); err != nil {
					poisoned++ // what Compose did before it isolated bad inputs
				}
				s, err := Compose(m.View(tenant))
				if err != nil {
					t.Fatalf("%s: the tenant failed to build: %v", tenant, err)
				}
				for _, d := range s.Diagnostics {
					if d.Object == p.object && d.Severity == snapshot.SeverityError && strings.Contains(d.Message, "left out") {
						blamed++
					} else if strings.Contains(d.Message, "left out") {
						t.Errorf("%s: an innocent input was left out: %s", tenant, d)
					}
				}
				for _, typ := range []string{snapshot.ClusterType, snapshot.ListenerType, snapshot.RouteType} {
					want := clean[tenant].Set(snapshot.ViewEnvoy, typ).Names()
					got := s.Set(snapshot.ViewEnvoy, typ)
					for _, n := range want {
						if got.Get(n) == nil {
							t.Errorf("%s: %s %s is missing; only the bad object may go", tenant, typ, n)
						}
					}
				}
			}
			if poisoned == 0 {
				t.Fatalf("%s does not break a plain build; the case tests nothing", p.object)
			}
			if blamed == 0 {
				t.Fatalf("no tenant reported %s as left out", p.object)
			}
		})
	}
}
