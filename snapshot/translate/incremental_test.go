package translate

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// TestEndpointFastLaneIsAWholeBuild is the fast lane's property test:
// over random edits of a mesh (endpoints scaled in a tenant or in
// istio-system, weights shifted, services' VirtualServices changed), a
// tenant built with BuildEndpoints after endpoint-only changes is byte for
// byte the snapshot a whole Compose makes (same version, same sets, same
// diagnostics), and the parts endpoints cannot change are the very sets
// of its last whole build.
func TestEndpointFastLaneIsAWholeBuild(t *testing.T) {
	spec := fleet.Spec{Tenants: 5, Services: 6, Endpoints: 3, Seed: 21}
	m := fleetMesh(t, spec)
	inc := NewIncremental(Options{})
	for _, tn := range m.Tenants() {
		if _, err := inc.Build(m.View(tn)); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(8, 13))
	fast := 0
	for round := 1; round <= 150; round++ {
		tenant, svc := rng.IntN(spec.Tenants), rng.IntN(spec.Services)
		var changes []model.Change
		endpointsOnly := true
		switch rng.IntN(5) {
		case 0, 1:
			changes = fleet.ScaleEndpoints(tenant, svc, 1+rng.IntN(5), round)
		case 2:
			changes = fleet.MeshWide(round)
		case 3:
			changes = fleet.ShiftWeight(tenant, svc, rng.IntN(100))
			endpointsOnly = false
		case 4:
			// Pods only: labels and readiness ride on endpoints.
			_, pods := fleet.EndpointSlice(fleet.Tenant(tenant), "svc-00", "http", 8080, tenant, 0, 2, round)
			changes = model.Adds(pods)
		}
		for tn := range m.Apply(changes) {
			v := m.View(tn)
			whole, err := Compose(v)
			if err != nil {
				t.Fatal(err)
			}
			var got *snapshot.Snapshot
			if endpointsOnly {
				got, err = inc.BuildEndpoints(v)
				fast++
			} else {
				got, err = inc.Build(v)
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Version != whole.Version || !slices.Equal(got.Diagnostics, whole.Diagnostics) || !slices.Equal(got.Namespaces, whole.Namespaces) {
				t.Fatalf("round %d, tenant %s (endpoints only %v): version %s, want the whole build's %s; diagnostics equal %v",
					round, tn, endpointsOnly, got.Version, whole.Version, slices.Equal(got.Diagnostics, whole.Diagnostics))
			}
			for view, sets := range whole.Views {
				for key, set := range sets {
					if g := got.Views[view][key]; g == nil || g.Version != set.Version {
						t.Fatalf("round %d, tenant %s: set %s/%s differs from the whole build's", round, tn, view, key)
					}
				}
			}
		}
	}
	if fast == 0 {
		t.Fatal("no build took the fast lane")
	}
}

// TestFastLaneFallsBackWithoutAWholeBuild: with no remembered build (a
// first build, or after MCPServices, whose entries carry endpoints), the
// fast lane is a whole build.
func TestFastLaneFallsBackWithoutAWholeBuild(t *testing.T) {
	m := fleetMesh(t, fleet.Spec{Tenants: 2, Services: 2, Endpoints: 1, Seed: 3})
	for _, o := range []Options{{}, {MCPServices: true}} {
		inc := NewIncremental(o)
		v := m.View(fleet.Tenant(0))
		got, err := inc.BuildEndpoints(v)
		if err != nil {
			t.Fatal(err)
		}
		whole, _ := o.Compose(v)
		if got.Version != whole.Version {
			t.Fatalf("options %+v: the fallback differs from a whole build", o)
		}
	}
}

// TestForgetDropsAGoneTenant: what is kept of a tenant goes when it is
// gone, so a deleted tenant's policies and MCP sets are not held forever.
func TestForgetDropsAGoneTenant(t *testing.T) {
	m := fleetMesh(t, fleet.Spec{Tenants: 2, Services: 1, Endpoints: 1, Seed: 4})
	inc := NewIncremental(Options{})
	tn := fleet.Tenant(1)
	if _, err := inc.Build(m.View(tn)); err != nil {
		t.Fatal(err)
	}
	if inc.last[tn] == nil {
		t.Fatal("nothing kept of a whole build")
	}
	inc.Forget(tn)
	if inc.last[tn] != nil {
		t.Fatal("Forget kept the tenant")
	}
}
