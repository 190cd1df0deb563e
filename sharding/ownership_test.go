package sharding

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/xdshard/xdshard/snapshot"
)

// fakeTimers is a clock whose timers fire only when the test says.
type fakeTimers struct {
	mu     sync.Mutex
	timers []*fakeTimer
}

type fakeTimer struct {
	f       func()
	d       time.Duration
	stopped bool
}

func (ft *fakeTimers) afterFunc(d time.Duration, f func()) Timer {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	t := &fakeTimer{f: f, d: d}
	ft.timers = append(ft.timers, t)
	return t
}

func (t *fakeTimer) Reset(d time.Duration) bool { t.d, t.stopped = d, false; return true }
func (t *fakeTimer) Stop() bool                 { t.stopped = true; return true }

// fire runs every timer not stopped, once.
func (ft *fakeTimers) fire() {
	ft.mu.Lock()
	ts := ft.timers
	ft.timers = nil
	ft.mu.Unlock()
	for _, t := range ts {
		if !t.stopped {
			t.f()
		}
	}
}

// ownershipHarness is an Ownership over a real store, with a fake clock
// and a record of what it asked the replica to build.
type ownershipHarness struct {
	*Ownership
	store   *snapshot.Store
	clock   *fakeTimers
	mu      sync.Mutex
	rebuilt []string
	owning  []string
	moved   int
}

func newOwnershipHarness(t *testing.T, self string, ids []string, tenants []string) *ownershipHarness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &ownershipHarness{store: snapshot.NewStore(0), clock: &fakeTimers{}}
	h.Ownership = NewOwnership(ctx, OwnershipConfig{Self: self, Store: h.store, Members: members(ids...), Grace: time.Minute,
		Tenants: func() []string { return tenants },
		Rebuild: func(ts []string) { h.mu.Lock(); h.rebuilt = append(h.rebuilt, ts...); h.mu.Unlock() },
		Owning:  func(tn string) { h.mu.Lock(); h.owning = append(h.owning, tn); h.mu.Unlock() },
		Handover: func(string) {
			h.mu.Lock()
			h.moved++
			h.mu.Unlock()
		},
		AfterFunc: h.clock.afterFunc})
	t.Cleanup(func() { cancel(); h.Close() })
	return h
}

// copyOf puts a fetched copy of tenant in the store.
func (h *ownershipHarness) copyOf(t *testing.T, tenant string) {
	t.Helper()
	r, err := snapshot.Encode("a", wrapperspb.String(tenant))
	if err != nil {
		t.Fatal(err)
	}
	h.store.PublishRolledOut(snapshot.New(tenant, map[snapshot.View]map[string]*snapshot.Set{
		snapshot.ViewEnvoy: {snapshot.ClusterType: snapshot.MustSet(snapshot.ClusterType, []*snapshot.Resource{r})}}, nil))
}

// ownedBy is a tenant of ts the ring of ids gives to id.
func ownedBy(t *testing.T, id string, ids []string, ts []string) string {
	t.Helper()
	ring := NewRing(members(ids...))
	for _, tn := range ts {
		if o, _ := ring.Owner(tn); o.ID == id {
			return tn
		}
	}
	t.Fatalf("no tenant of %d for %s", len(ts), id)
	return ""
}

// TestFetchedCopyGoesAfterTheGrace: a fetched copy nobody here reads goes
// when its grace ends, not before; a client that came back meanwhile
// keeps it; a tenant owned here never goes.
func TestFetchedCopyGoesAfterTheGrace(t *testing.T) {
	ts := tenants(20)
	h := newOwnershipHarness(t, "a", []string{"a", "b"}, ts)
	foreign, own := ownedBy(t, "b", []string{"a", "b"}, ts), ownedBy(t, "a", []string{"a", "b"}, ts)
	h.copyOf(t, foreign)
	h.copyOf(t, own)

	h.Interest(foreign, false)
	h.Interest(own, false)
	if h.store.Current(foreign) == nil {
		t.Fatal("the fetched copy went before its grace ended")
	}
	h.clock.fire()
	if h.store.Current(foreign) != nil {
		t.Fatal("the fetched copy nobody reads stayed after its grace")
	}
	if h.store.Current(own) == nil {
		t.Fatal("a tenant owned here was dropped")
	}

	// A client comes back before the grace ends: the copy stays.
	h.copyOf(t, foreign)
	h.Interest(foreign, false)
	w := h.store.Watch(foreign) // no OnInterest here: nothing is fetched
	defer w.Close()
	h.clock.fire()
	if h.store.Current(foreign) == nil {
		t.Fatal("a copy a client reads was dropped")
	}
}

// TestMembersChangedMovesTenants: a member leaving gives its tenants to
// the others (this replica builds its share, told of each before), one
// joining takes its share (what this replica held and nobody here reads
// goes); only tenants whose owner changed move.
func TestMembersChangedMovesTenants(t *testing.T) {
	ts := tenants(60)
	h := newOwnershipHarness(t, "a", []string{"a", "b", "c"}, ts)
	fromB := ownedBy(t, "b", []string{"a", "b", "c"}, ts)
	for _, tn := range ts {
		if h.RingOwns(tn) {
			h.copyOf(t, tn)
			h.Built(tn)
		}
	}

	h.MembersChanged(members("a", "c"))
	ring := NewRing(members("a", "c"))
	var want []string
	for _, tn := range ts {
		was, _ := NewRing(members("a", "b", "c")).Owner(tn)
		now, _ := ring.Owner(tn)
		if was.ID == "b" && now.ID == "a" {
			want = append(want, tn)
		}
	}
	if !slices.Equal(h.rebuilt, want) || !slices.Equal(h.owning, want) || len(want) == 0 {
		t.Fatalf("b left: built here %v, told owning %v; want b's tenants the ring gives a: %v", h.rebuilt, h.owning, want)
	}
	if h.Owner(fromB) == "b" {
		t.Fatalf("tenant %s still owned by b, gone", fromB)
	}
	if h.moved == 0 {
		t.Fatal("no handover counted")
	}

	// d joins: the tenants it takes from a go from a's store (nobody here
	// reads them), and are no longer built here.
	h.MembersChanged(members("a", "c", "d"))
	for _, tn := range ts {
		if o := h.Owner(tn); o == "d" && h.store.Current(tn) != nil {
			t.Fatalf("tenant %s moved to d and nobody here reads it, yet its copy stayed", tn)
		}
		if h.Owner(tn) != "a" && h.BuiltSinceOwned(tn) {
			t.Fatalf("tenant %s no longer owned here, yet the peer face would still give it", tn)
		}
	}
}

// TestAdoption: a tenant whose owner does not answer is built here until
// it does.
func TestAdoption(t *testing.T) {
	ts := tenants(20)
	h := newOwnershipHarness(t, "a", []string{"a", "b"}, ts)
	tn := ownedBy(t, "b", []string{"a", "b"}, ts)
	if h.Owns(tn) {
		t.Fatalf("%s is b's", tn)
	}
	h.Adopt(tn)
	if !h.Owns(tn) || h.Adopted() != 1 || !slices.Equal(h.rebuilt, []string{tn}) {
		t.Fatalf("adopted: owns %v, %d adopted, built %v", h.Owns(tn), h.Adopted(), h.rebuilt)
	}
	if _, origin := h.Origin(tn); origin != "built here while b does not answer" {
		t.Fatalf("origin %q", origin)
	}
	if !h.Built(tn) || h.Built(tn) {
		t.Fatal("Built says first only the first time")
	}
	h.Unadopt(tn)
	if h.Owns(tn) || h.BuiltSinceOwned(tn) {
		t.Fatal("unadopted, it is still built here, or given to peers")
	}
}

type fakeLoads map[string]int

func (f fakeLoads) Loads() map[string]int    { return f }
func (f fakeLoads) ReportStreams(func() int) {}

// TestBalancerShedsASurplusThatLasts: a replica over its share sheds
// only once the surplus lasted Settle, a few streams per round.
func TestBalancerShedsASurplusThatLasts(t *testing.T) {
	now := time.Unix(0, 0)
	mine := 3000
	shed := 0
	b := &Balancer{Self: "a", Settle: 2 * time.Second, Loads: fakeLoads{"b": 500, "c": 500},
		Members: func() []Member { return members("a", "b", "c") },
		Streams: func() int { return mine }, Shed: func(n int) { shed += n; mine -= n }, Now: func() time.Time { return now }}
	if n := b.Round(); n != 0 {
		t.Fatalf("shed %d at once; a surplus must last Settle first", n)
	}
	now = now.Add(2 * time.Second)
	if n := b.Round(); n != ShedRate(4000) {
		t.Fatalf("shed %d once the surplus lasted, want %d", n, ShedRate(4000))
	}
	mine = 500 // as many as the others
	if n := b.Round(); n != 0 {
		t.Fatalf("at its share, shed %d", n)
	}
	// Affinity: at its share, it sheds streams of tenants owned elsewhere
	// while it holds at least the mean, once that lasted Settle.
	foreign := 7
	b.Affinity, b.Foreign = true, func() int { return foreign }
	b.Shed = func(n int) { shed += n; foreign -= n }
	mine = 500
	if n := b.Round(); n != 0 {
		t.Fatalf("affinity shed %d at once", n)
	}
	now = now.Add(2 * time.Second)
	if n := b.Round(); n != 1 || foreign != 6 {
		t.Fatalf("affinity shed %d (foreign left %d), want 1", n, foreign)
	}
	mine = 400 // below the mean: it takes rather than gives
	if n := b.Round(); n != 0 {
		t.Fatalf("below the mean, affinity shed %d", n)
	}
	if Share(10, 3) != 4 || ShedRate(500) != 1 || ShedRate(50000) != 10 {
		t.Fatal("share or shed rate")
	}
}
