package xds

import (
	"testing"

	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/demo"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

func loadMesh(t testing.TB, r *manifest.Result) *model.Mesh {
	t.Helper()
	return r.Mesh()
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
