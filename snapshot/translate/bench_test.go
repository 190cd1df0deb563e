package translate

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/snapshot/model"
)

// benchSpec is the reference mesh: 100 tenants x 20 services x 5
// endpoints (2,000 services).
var benchSpec = fleet.Spec{Tenants: 100, Services: 20, Endpoints: 5, Seed: 1}

func fleetMesh(tb testing.TB, s fleet.Spec) *model.Mesh {
	tb.Helper()
	m := model.NewMesh()
	m.Apply(model.Adds(fleet.Generate(s)))
	return m
}

func buildAll(tb testing.TB, m *model.Mesh) {
	for _, t := range m.Tenants() {
		if _, err := Compose(m.View(t)); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkFullBuild composes every tenant of the reference mesh, as
// serving builds them (validation, policies, xDS views, MCP).
func BenchmarkFullBuild(b *testing.B) {
	m := fleetMesh(b, benchSpec)
	b.ReportAllocs()
	for b.Loop() {
		buildAll(b, m)
	}
}

// BenchmarkIncrementalBuild applies one endpoint change and rebuilds only
// the tenants it affects (one).
func BenchmarkIncrementalBuild(b *testing.B) {
	m := fleetMesh(b, benchSpec)
	b.ReportAllocs()
	gen := 0
	for b.Loop() {
		gen++
		for t := range m.Apply(fleet.ScaleEndpoints(42, 3, 5, gen)) {
			if _, err := Compose(m.View(t)); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// builtReference is the reference mesh with every tenant built once by an
// Incremental, as a replica is after its start.
func builtReference(b *testing.B) (*model.Mesh, *Incremental) {
	m := fleetMesh(b, benchSpec)
	inc := NewIncremental(Options{})
	for _, t := range m.Tenants() {
		if _, err := inc.Build(m.View(t)); err != nil {
			b.Fatal(err)
		}
	}
	return m, inc
}

// BenchmarkIncrementalBuildCached is BenchmarkIncrementalBuild as serving
// builds: through Incremental, whose cache keeps the services the change
// did not touch, and its endpoint fast lane.
func BenchmarkIncrementalBuildCached(b *testing.B) {
	m, inc := builtReference(b)
	b.ReportAllocs()
	gen := 0
	for b.Loop() {
		gen++
		for t := range m.Apply(fleet.ScaleEndpoints(42, 3, 5, gen)) {
			if _, err := inc.BuildEndpoints(m.View(t)); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkEveryTenantWeights rebuilds every tenant after a weight change
// in each (the file-driven bench's "every tenant's file"), as serving
// builds them: through Incremental, whose cache keeps every cluster.
func BenchmarkEveryTenantWeights(b *testing.B) {
	m, inc := builtReference(b)
	b.ReportAllocs()
	gen := 0
	for b.Loop() {
		gen++
		var changes []model.Change
		for i := 0; i < benchSpec.Tenants; i++ {
			changes = append(changes, fleet.ShiftWeight(i, 0, 10+gen%80)...)
		}
		for t := range m.Apply(changes) {
			if _, err := inc.Build(m.View(t)); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestFleetBuildsCleanly checks the benchmark's path: every tenant of a
// smaller fleet builds without a diagnostic (but the one the fleet's own
// Sidecar causes by design: it replaces the generated one), and sees its
// own services plus the shared ones.
func TestFleetBuildsCleanly(t *testing.T) {
	m := fleetMesh(t, fleet.Spec{Tenants: 5, Services: 20, Endpoints: 5, Seed: 1})
	for _, tenant := range m.Tenants() {
		s, err := Compose(m.View(tenant))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range s.Diagnostics {
			if d.Warning() && d.Object == "Sidecar "+tenant+"/default" && strings.Contains(d.Message, "replaces the Sidecar") {
				continue
			}
			t.Errorf("%s: %s", tenant, d)
		}
		if tenant != model.SharedNamespace && len(m.View(tenant).Services) != 20+fleet.Shared {
			t.Errorf("%s sees %d services, want %d", tenant, len(m.View(tenant).Services), 20+fleet.Shared)
		}
	}
}

// TestIncrementalRebuildTouchesOneTenant checks the incremental path: an
// endpoint change affects only its tenant, and rebuilding that tenant gives
// what a full rebuild gives.
func TestIncrementalRebuildTouchesOneTenant(t *testing.T) {
	m := fleetMesh(t, fleet.Spec{Tenants: 5, Services: 20, Endpoints: 5, Seed: 1})
	before, _ := Compose(m.View(fleet.Tenant(2)))
	affected := slices.Sorted(maps.Keys(m.Apply(fleet.ScaleEndpoints(2, 3, 5, 7))))
	if !slices.Equal(affected, []string{fleet.Tenant(2)}) {
		t.Fatalf("affected %v, want only %s", affected, fleet.Tenant(2))
	}
	inc, _ := Compose(m.View(fleet.Tenant(2)))
	if inc.Version == before.Version {
		t.Fatal("the endpoint change did not change the tenant's version")
	}
	full, _ := Compose(fleetAfter(t).View(fleet.Tenant(2)))
	if inc.Version != full.Version {
		t.Fatal("incremental and full rebuilds differ")
	}
	mw := slices.Sorted(maps.Keys(m.Apply(fleet.MeshWide(1))))
	if len(mw) != 6 {
		t.Fatalf("a mesh-wide change affected %v, want all 6 tenants", mw)
	}
}

func fleetAfter(t *testing.T) *model.Mesh {
	m := fleetMesh(t, fleet.Spec{Tenants: 5, Services: 20, Endpoints: 5, Seed: 1})
	m.Apply(fleet.ScaleEndpoints(2, 3, 5, 7))
	return m
}

// BenchmarkFullBuildParallel builds every tenant with GOMAXPROCS workers,
// as the builder's BuildAll does at start-up: the full build's wall time.
func BenchmarkFullBuildParallel(b *testing.B) {
	m := fleetMesh(b, benchSpec)
	tenants := m.Tenants()
	b.ReportAllocs()
	for b.Loop() {
		work := make(chan string)
		var wg sync.WaitGroup
		for w := 0; w < runtime.GOMAXPROCS(0); w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for t := range work {
					if _, err := Compose(m.View(t)); err != nil {
						b.Error(err)
					}
				}
			}()
		}
		for _, t := range tenants {
			work <- t
		}
		close(work)
		wg.Wait()
	}
}

// BenchmarkMeshWideEndpoints rebuilds every tenant after an endpoint
// change in istio-system (the bench's mesh-wide change): whole builds,
// against the endpoint fast lane.
//
//	go test -run '^$' -bench MeshWideEndpoints -count 6 ./snapshot/translate
func BenchmarkMeshWideEndpoints(b *testing.B) {
	for _, fastLane := range []bool{false, true} {
		name := "whole"
		if fastLane {
			name = "fast-lane"
		}
		b.Run(name, func(b *testing.B) {
			m, inc := builtReference(b)
			b.ReportAllocs()
			gen := 0
			for b.Loop() {
				gen++
				for t := range m.Apply(fleet.MeshWide(gen)) {
					build := inc.Build
					if fastLane {
						build = inc.BuildEndpoints
					}
					if _, err := build(m.View(t)); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// fileSpec is the file-driven bench's fleet: 50 tenants x 50 services x 5
// endpoints, served from files (so with MCPServices, as serve --config).
var fileSpec = fleet.Spec{Tenants: 50, Services: 50, Endpoints: 5, Seed: 1}

// BenchmarkEveryTenantFileWeights is the file-driven bench's "every
// tenant's file" as builds: in each tenant three VirtualServices in four
// get new weights, and every tenant is rebuilt through an Incremental with
// MCPServices, as serve --config builds them. TestFleetBuildsCleanly
// checks the fleet's builds.
func BenchmarkEveryTenantFileWeights(b *testing.B) {
	m := fleetMesh(b, fileSpec)
	inc := NewIncremental(Options{MCPServices: true})
	for _, t := range m.Tenants() {
		if _, err := inc.Build(m.View(t)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	gen := 0
	for b.Loop() {
		gen++
		var changes []model.Change
		for i := range fileSpec.Tenants {
			for j := range fileSpec.Services {
				if j%4 != 3 {
					changes = append(changes, model.Adds([]*model.Object{fleet.VirtualService(fleet.Tenant(i), fmt.Sprintf("svc-%02d", j), 10+gen%80)})...)
				}
			}
		}
		for t := range m.Apply(changes) {
			if _, err := inc.Build(m.View(t)); err != nil {
				b.Fatal(err)
			}
		}
	}
}
