package translate

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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

// TestCachedBuildIsAWholeBuild is the translation cache's property test:
// over random edits of every kind that feeds a service's clusters
// (endpoints, a mesh-wide endpoint change, DestinationRules added,
// changed, broken and deleted, a tenant's rule for a shared host, a
// Service's ports changed, a Service deleted and added back, weights), a
// tenant built by an Incremental, which takes unchanged services from its
// cache, is byte for byte the snapshot a Compose without one makes.
// With MCPServices, the ServiceEntries made of the tenants' Services are
// kept with the build and checked the same way.
func TestCachedBuildIsAWholeBuild(t *testing.T) {
	for _, o := range []Options{{}, {MCPServices: true}} {
		t.Run(fmt.Sprintf("MCPServices=%v", o.MCPServices), func(t *testing.T) { cachedBuildIsAWholeBuild(t, o) })
	}
}

func cachedBuildIsAWholeBuild(t *testing.T, o Options) {
	spec := fleet.Spec{Tenants: 4, Services: 5, Endpoints: 2, Seed: 31}
	m := fleetMesh(t, spec)
	inc := NewIncremental(o)
	for _, tn := range m.Tenants() {
		if _, err := inc.Build(m.View(tn)); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(5, 77))
	deleted := map[model.Key]*model.Object{}
	rule := func(ns, name, host string, lb networking.LoadBalancerSettings_SimpleLB, tls networking.ClientTLSSettings_TLSmode) *model.Object {
		dr := &networking.DestinationRule{Host: host, TrafficPolicy: &networking.TrafficPolicy{
			LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: lb}},
			Tls:          &networking.ClientTLSSettings{Mode: tls},
		}, Subsets: []*networking.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}}}
		if lb == networking.LoadBalancerSettings_LEAST_REQUEST { // routes hash by a rule of their destination
			dr.TrafficPolicy.LoadBalancer.LbPolicy = &networking.LoadBalancerSettings_ConsistentHash{ConsistentHash: &networking.LoadBalancerSettings_ConsistentHashLB{
				HashKey: &networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName{HttpHeaderName: "x-user"},
			}}
		}
		return &model.Object{Key: model.Key{Kind: model.KindDestinationRule, Namespace: ns, Name: name}, APIVersion: "networking.istio.io/v1",
			Meta: metav1.ObjectMeta{Namespace: ns, Name: name}, Origin: model.Origin{File: "test"}, Body: dr}
	}
	for round := 1; round <= 200; round++ {
		tenant, svc := rng.IntN(spec.Tenants), rng.IntN(spec.Services)
		ns, name := fleet.Tenant(tenant), fmt.Sprintf("svc-%02d", svc)
		var changes []model.Change
		switch rng.IntN(10) {
		case 0, 1:
			changes = fleet.ScaleEndpoints(tenant, svc, 1+rng.IntN(4), round)
		case 2:
			changes = fleet.MeshWide(round)
		case 3:
			changes = fleet.ShiftWeight(tenant, svc, rng.IntN(100))
		case 4: // a rule changed (LB, TLS mode: some warn), or deleted
			lbs := []networking.LoadBalancerSettings_SimpleLB{networking.LoadBalancerSettings_ROUND_ROBIN, networking.LoadBalancerSettings_RANDOM, networking.LoadBalancerSettings_LEAST_REQUEST}
			tlss := []networking.ClientTLSSettings_TLSmode{networking.ClientTLSSettings_ISTIO_MUTUAL, networking.ClientTLSSettings_DISABLE, networking.ClientTLSSettings_SIMPLE}
			o := rule(ns, name, name, lbs[rng.IntN(len(lbs))], tlss[rng.IntN(len(tlss))])
			if rng.IntN(4) == 0 {
				changes = []model.Change{{Key: o.Key}}
			} else {
				changes = model.Adds([]*model.Object{o})
			}
		case 5: // the tenant's own rule for a shared service
			host := "shared-0." + model.SharedNamespace + ".svc.cluster.local"
			o := rule(ns, "shared-rule", host, networking.LoadBalancerSettings_RANDOM, networking.ClientTLSSettings_ISTIO_MUTUAL)
			if rng.IntN(2) == 0 {
				changes = []model.Change{{Key: o.Key}}
			} else {
				changes = model.Adds([]*model.Object{o})
			}
		case 6: // a Service's ports changed
			key := model.Key{Kind: model.KindService, Namespace: ns, Name: name}
			if old := m.Object(key); old != nil {
				body := old.Body.(*corev1.Service).DeepCopy()
				body.Spec.Ports[0].Port = int32(8000 + rng.IntN(100))
				cp := *old
				cp.Body = body
				changes = model.Adds([]*model.Object{&cp})
			}
		case 7: // a Service deleted, or added back
			key := model.Key{Kind: model.KindService, Namespace: ns, Name: name}
			if old := m.Object(key); old != nil {
				deleted[key] = old
				changes = []model.Change{{Key: key}}
			} else if o := deleted[key]; o != nil {
				changes = model.Adds([]*model.Object{o})
			}
		case 8: // routes to another service of the tenant (which case 7 deletes and adds back), mirrored to a shared one
			other := fmt.Sprintf("svc-%02d", rng.IntN(spec.Services))
			vs := &networking.VirtualService{Hosts: []string{name}, Http: []*networking.HTTPRoute{{
				Route:  []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: other}, Weight: 70}, {Destination: &networking.Destination{Host: name, Subset: "v1"}, Weight: 30}},
				Mirror: &networking.Destination{Host: "shared-1." + model.SharedNamespace + ".svc.cluster.local"},
			}}}
			changes = model.Adds([]*model.Object{{Key: model.Key{Kind: model.KindVirtualService, Namespace: ns, Name: name}, APIVersion: "networking.istio.io/v1",
				Meta: metav1.ObjectMeta{Namespace: ns, Name: name}, Origin: model.Origin{File: "test"}, Body: vs}})
		case 9: // a Service of the tenant named as a shared one: their short names collide on the port
			key := model.Key{Kind: model.KindService, Namespace: ns, Name: "shared-0"}
			if m.Object(key) != nil {
				changes = []model.Change{{Key: key}}
			} else if shared := m.Object(model.Key{Kind: model.KindService, Namespace: model.SharedNamespace, Name: "shared-0"}); shared != nil {
				cp := *shared
				cp.Key, cp.Meta = key, *shared.Meta.DeepCopy()
				cp.Meta.Namespace = ns
				body := shared.Body.(*corev1.Service).DeepCopy()
				body.Namespace = ns
				cp.Body = body
				changes = model.Adds([]*model.Object{&cp})
			}
		}
		for tn := range m.Apply(changes) {
			v := m.View(tn)
			whole, err := o.Compose(v)
			if err != nil {
				t.Fatal(err)
			}
			got, err := inc.Build(v)
			if err != nil {
				t.Fatal(err)
			}
			if got.Version != whole.Version || !slices.Equal(got.Diagnostics, whole.Diagnostics) {
				t.Fatalf("round %d, tenant %s: version %s, want the whole build's %s; diagnostics %v, want %v",
					round, tn, got.Version, whole.Version, got.Diagnostics, whole.Diagnostics)
			}
		}
	}
	hits, misses := inc.CacheStats()
	if hits == 0 || misses == 0 || hits < 3*misses {
		t.Fatalf("cache hits %d, misses %d: want most services taken from the cache", hits, misses)
	}
	t.Logf("cache hits %d, misses %d", hits, misses)
	// The cache holds what the tenants' last builds use, no more: at most
	// two parts (clusters, gRPC listeners) per service and rule a tenant
	// sees and one (routes) per service port, and nothing once every
	// tenant is forgotten.
	live := 0
	for _, tn := range m.Tenants() {
		for _, s := range m.View(tn).Services {
			live += 2 + len(s.Ports)
		}
	}
	if n := inc.CacheLen(); n == 0 || n > live {
		t.Fatalf("the cache keeps %d parts after 200 rounds of edits; the tenants' views hold at most %d", n, live)
	}
	for _, tn := range m.Tenants() {
		inc.Forget(tn)
	}
	if n := inc.CacheLen(); n != 0 {
		t.Fatalf("the cache keeps %d parts after every tenant was forgotten", n)
	}
}

// TestUnchangedSetsAreReused checks that a build reuses, pointer for
// pointer, every set a change did not touch (so serving finds their
// encoded responses made already), and makes new the ones it did: a
// weight change in one VirtualService changes the Envoy and gRPC route
// configurations and istiod's VirtualServices, and nothing else.
func TestUnchangedSetsAreReused(t *testing.T) {
	for _, o := range []Options{{}, {MCPServices: true}} {
		t.Run(fmt.Sprintf("MCPServices=%v", o.MCPServices), func(t *testing.T) { unchangedSetsAreReused(t, o) })
	}
}

func unchangedSetsAreReused(t *testing.T, o Options) {
	m := fleetMesh(t, fleet.Spec{Tenants: 3, Services: 4, Endpoints: 2, Seed: 3})
	inc := NewIncremental(o)
	tn := fleet.Tenant(1)
	before, err := inc.Build(m.View(tn))
	if err != nil {
		t.Fatal(err)
	}
	entries := inc.last[tn].entries
	if o.MCPServices && len(entries) == 0 {
		t.Fatal("no ServiceEntries kept with MCPServices")
	}
	m.Apply(fleet.ShiftWeight(1, 2, 35))
	after, err := inc.Build(m.View(tn))
	if err != nil {
		t.Fatal(err)
	}
	// Every ServiceEntry made of a Service is the one made before: the
	// Services did not change.
	for s, e := range inc.last[tn].entries {
		if entries[s] != e {
			t.Errorf("the ServiceEntry of %s/%s was made again", s.Namespace, s.Name)
		}
	}
	changed := map[snapshot.View]map[string]bool{
		snapshot.ViewEnvoy: {snapshot.RouteType: true},
		snapshot.ViewGRPC:  {snapshot.RouteType: true},
		snapshot.ViewMCP:   {"networking.istio.io/VirtualService": true},
	}
	for view, sets := range after.Views {
		for key, set := range sets {
			want := !changed[view][key]
			if view == snapshot.ViewMCPByRevision && strings.HasPrefix(key, "networking.istio.io/VirtualService") {
				want = false
			}
			if got := before.Views[view][key] == set; got != want {
				t.Errorf("%s %s: the same set as before is %v, want %v", view, key, got, want)
			}
		}
	}
	whole, err := o.Compose(m.View(tn))
	if err != nil {
		t.Fatal(err)
	}
	if after.Version != whole.Version {
		t.Fatalf("version %s, want the whole build's %s", after.Version, whole.Version)
	}
	if !o.MCPServices {
		return
	}
	// An endpoint change makes that Service's entry alone again.
	m.Apply(fleet.ScaleEndpoints(1, 2, 3, 7))
	if _, err := inc.Build(m.View(tn)); err != nil {
		t.Fatal(err)
	}
	remade := 0
	for s, e := range inc.last[tn].entries {
		if entries[s] != e {
			remade++
			if s.Name != "svc-02" {
				t.Errorf("the ServiceEntry of unchanged %s/%s was made again", s.Namespace, s.Name)
			}
		}
	}
	if remade != 1 {
		t.Errorf("%d ServiceEntries made again after one Service's endpoints changed, want 1", remade)
	}
}
