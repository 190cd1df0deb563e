package demo_test

import (
	"slices"
	"testing"

	"github.com/xdshard/xdshard/snapshot/source/demo"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

func TestDemoLoadsCleanly(t *testing.T) {
	r, err := manifest.LoadFS(demo.FS())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range r.Diags() {
		t.Errorf("demo diagnostic: %v", d.Error())
	}
	m := r.Mesh()
	if got, want := m.Tenants(), []string{"acme", "globex", "initech", "istio-system"}; !slices.Equal(got, want) {
		t.Fatalf("tenants %v, want %v", got, want)
	}
}
