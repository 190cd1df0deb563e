package builder

import (
	"testing"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/demo"
	"github.com/xdshard/xdshard/snapshot/manifest"
	"github.com/xdshard/xdshard/snapshot/model"
)

// TestComposeIsStable composes every demo tenant many times: identical
// config must give an identical version every time (no map-order
// dependent bytes anywhere), or every rebuild would push.
func TestComposeIsStable(t *testing.T) {
	r, err := manifest.LoadFS(demo.FS())
	if err != nil {
		t.Fatal(err)
	}
	m := model.NewMesh()
	var cs []model.Change
	for _, o := range r.Objects {
		cs = append(cs, model.Change{Key: o.Key, Object: o})
	}
	m.Apply(cs)
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
