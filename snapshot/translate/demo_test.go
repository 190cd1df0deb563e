package translate

import (
	"testing"

	"github.com/xdshard/xdshard/snapshot/demo"
	"github.com/xdshard/xdshard/snapshot/manifest"
	"github.com/xdshard/xdshard/snapshot/model"
)

func loadMesh(t testing.TB, r *manifest.Result) *model.Mesh {
	t.Helper()
	m := model.NewMesh()
	var changes []model.Change
	for _, o := range r.Objects {
		changes = append(changes, model.Change{Key: o.Key, Object: o})
	}
	m.Apply(changes)
	for f, d := range r.Diagnostics {
		m.SetDiagnostics(f, d)
	}
	return m
}

func TestDemoBuildsEveryTenant(t *testing.T) {
	r, err := manifest.LoadFS(demo.FS())
	if err != nil {
		t.Fatal(err)
	}
	m := loadMesh(t, r)
	for _, tenant := range m.Tenants() {
		s, err := Build(m.View(tenant), Options{})
		if err != nil {
			t.Fatalf("%s: %v", tenant, err)
		}
		for _, d := range s.Diagnostics {
			t.Logf("%s: %s", tenant, d)
		}
	}
}
