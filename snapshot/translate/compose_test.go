package translate

import (
	"testing"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/demo"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// TestComposeIsStable composes every demo tenant many times: identical
// config must give an identical version every time (no map-order
// dependent bytes anywhere), or every rebuild would push.
func TestComposeIsStable(t *testing.T) {
	r, err := manifest.LoadFS(demo.FS())
	if err != nil {
		t.Fatal(err)
	}
	m := r.Mesh()
	for _, tenant := range m.Tenants() {
		first, err := Compose(m.View(tenant))
		if err != nil {
			t.Fatal(err)
		}
		if tenant != model.SharedNamespace && first.Set(snapshot.ViewMCP, "security.istio.io/v1/PeerAuthentication").Len() == 0 {
			t.Fatalf("%s: no generated PeerAuthentication in the MCP view", tenant)
		}
		for i := 0; i < 20; i++ {
			again, _ := Compose(m.View(tenant))
			if again.Version != first.Version {
				t.Fatalf("%s: version changed between identical builds", tenant)
			}
		}
	}
}

// TestComposeRejectsWhatIstiodWould: an invalid VirtualService is left out
// of both the Envoy routes and istiod's MCP view, and reported.
func TestComposeRejectsWhatIstiodWould(t *testing.T) {
	doc := `apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.0.0.1, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: shop}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: web}, weight: 150}]}]
`
	m := model.NewMesh()
	for _, d := range manifest.Decode("shop.yaml", []byte(doc)) {
		m.Apply([]model.Change{{Key: d.Object.Key, Object: d.Object}})
	}
	s, err := Compose(m.View("shop"))
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Set(snapshot.ViewMCP, "networking.istio.io/v1/VirtualService").Len(); n != 0 {
		t.Fatalf("the invalid VirtualService was served to istiod (%d items)", n)
	}
	found := false
	for _, d := range s.Diagnostics {
		found = found || (d.Object == "VirtualService shop/bad" && d.Severity == snapshot.SeverityError)
	}
	if !found {
		t.Fatalf("no error diagnostic for the invalid VirtualService: %v", s.Diagnostics)
	}
}
