package model_test

import (
	"testing"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/snapshot/model"
)

// TestUnchangedServicesKeepTheirPointers: a change to a namespace's
// services re-resolves that namespace; the services it did not change keep
// their pointers (translation caches key on them), and the changed one is
// a new Service with the change.
func TestUnchangedServicesKeepTheirPointers(t *testing.T) {
	m := model.NewMesh()
	m.Apply(model.Adds(fleet.Generate(fleet.Spec{Tenants: 1, Services: 3, Endpoints: 2, Seed: 2})))
	ns := fleet.Tenant(0)
	byName := func() map[string]*model.Service {
		out := map[string]*model.Service{}
		for _, s := range m.View(ns).Services {
			out[s.Namespace+"/"+s.Name] = s
		}
		return out
	}
	before := byName()
	m.Apply(fleet.ScaleEndpoints(0, 1, 4, 1))
	after := byName()
	for key, s := range before {
		switch {
		case key == ns+"/svc-01":
			if after[key] == s || len(after[key].Endpoints) != 4 {
				t.Errorf("%s: the changed service kept its pointer or its old endpoints (%d)", key, len(after[key].Endpoints))
			}
		case after[key] != s:
			t.Errorf("%s: unchanged, but a new pointer", key)
		}
	}
}
