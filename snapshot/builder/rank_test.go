package builder

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// TestNarrowChangeJumpsQueuedBuilds: with one build slot held, a change to
// eleven tenants queues eleven builds; a change then made to the last of
// them is read by its queued build (no second build, no debounce) and
// gives that build its narrow rank, so it is the next one built, and its
// snapshot says it came of a one-tenant change.
func TestNarrowChangeJumpsQueuedBuilds(t *testing.T) {
	nb := &namesBuild{calls: map[string]int{}, fail: map[string]error{}}
	var mu sync.Mutex
	var order []string
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	gated := false
	build := func(v *model.TenantView) (*snapshot.Snapshot, error) {
		mu.Lock()
		order = append(order, v.Tenant)
		hold := gated && v.Tenant == "gate"
		mu.Unlock()
		if hold {
			entered <- struct{}{}
			<-gate
		}
		return nb.build(v)
	}
	store := snapshot.NewStore(0)
	b := New(model.NewMesh(), store, Options{Debounce: time.Millisecond, MaxDelay: time.Second, Workers: 1, Build: build})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	var open sync.Once
	openGate := func() { open.Do(func() { close(gate) }) }
	defer func() { openGate(); cancel(); <-done }()

	tenants := []string{"gate", "x"}
	for i := range 10 {
		tenants = append(tenants, fmt.Sprintf("a%d", i))
	}
	var all []model.Change
	for _, ns := range tenants {
		all = append(all, pod(ns, "p", "1"))
	}
	b.Apply(all)
	waitIdle(t, b)

	mu.Lock()
	gated = true
	mu.Unlock()
	b.Apply([]model.Change{pod("gate", "p", "2")})
	select {
	case <-entered:
	case <-time.After(time.Minute):
		t.Fatal("the gate tenant's build never started (hang check)")
	}
	var broad []model.Change
	for _, ns := range tenants[1:] {
		broad = append(broad, pod(ns, "p", "2"))
	}
	b.Apply(broad)
	for deadline := time.Now().Add(time.Minute); b.sem.Waiting() < len(broad); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d builds queued, want %d (hang check)", b.sem.Waiting(), len(broad))
		}
	}
	mu.Lock()
	order = nil
	mu.Unlock()
	b.Apply([]model.Change{pod("x", "p", "3")})
	b.mu.Lock()
	_, pendingX := b.pending["x"]
	b.mu.Unlock()
	if pendingX {
		t.Fatal("the change to x waits for a build of its own; its queued build reads it")
	}
	openGate()
	waitIdle(t, b)

	mu.Lock()
	defer mu.Unlock()
	if len(order) != len(broad) || order[0] != "x" {
		t.Fatalf("builds after the gate: %v; want x first and each queued tenant once", order)
	}
	if n := nb.count("x"); n != 2 {
		t.Fatalf("x built %d times, want 2 (the first change, then once for both later ones)", n)
	}
	snap := store.Current("x")
	if snap.Breadth != 1 {
		t.Fatalf("x's snapshot has breadth %d, want 1 (its narrow change)", snap.Breadth)
	}
	if a := store.Current("a0"); a.Breadth != len(broad) {
		t.Fatalf("a0's snapshot has breadth %d, want %d", a.Breadth, len(broad))
	}
	want, _ := nb.build(b.mesh.View("x"))
	if snap.Version != want.Version {
		t.Fatal("x's snapshot does not hold its last change")
	}
}
