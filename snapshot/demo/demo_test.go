package demo_test

import (
	"slices"
	"testing"

	"github.com/xdshard/xdshard/snapshot/demo"
	"github.com/xdshard/xdshard/snapshot/manifest"
	"github.com/xdshard/xdshard/snapshot/model"
)

func TestDemoLoadsCleanly(t *testing.T) {
	r, err := manifest.LoadFS(demo.FS())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range r.Diags() {
		t.Errorf("demo diagnostic: %v", d.Error())
	}
	m := model.NewMesh()
	var changes []model.Change
	for _, o := range r.Objects {
		changes = append(changes, model.Change{Key: o.Key, Object: o})
	}
	m.Apply(changes)
	if got, want := m.Tenants(), []string{"acme", "globex", "initech", "istio-system"}; !slices.Equal(got, want) {
		t.Fatalf("tenants %v, want %v", got, want)
	}
}
