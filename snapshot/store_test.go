package snapshot

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func testSnap(t *testing.T, tenant, value string) *Snapshot {
	t.Helper()
	r, err := Encode("a", wrapperspb.String(value))
	if err != nil {
		t.Fatal(err)
	}
	return New(tenant, map[View]map[string]*Set{ViewEnvoy: {ClusterType: MustSet(ClusterType, []*Resource{r})}}, nil)
}

func TestPublishSameVersionIsNoChange(t *testing.T) {
	s := NewStore(3)
	w := s.Watch("t1")
	defer w.Close()
	if !s.Publish(testSnap(t, "t1", "x")) {
		t.Fatal("first publish reported no change")
	}
	<-w.C()
	if s.Publish(testSnap(t, "t1", "x")) {
		t.Fatal("identical rebuild reported a change")
	}
	select {
	case <-w.C():
		t.Fatal("identical rebuild woke a watcher")
	default:
	}
}

func TestHistoryKeepsLastK(t *testing.T) {
	s := NewStore(2)
	for _, v := range []string{"a", "b", "c", "b"} {
		s.Publish(testSnap(t, "t", v))
	}
	h := s.History("t")
	if len(h) != 2 {
		t.Fatalf("history has %d versions, want 2", len(h))
	}
	if h[1] != s.Current("t") {
		t.Fatal("last history entry is not current")
	}
	if h[0].Version != testSnap(t, "t", "c").Version || h[1].Version != testSnap(t, "t", "b").Version {
		t.Fatal("history is not [c, b]")
	}
}

func TestWatchIsPerTenantAndAll(t *testing.T) {
	s := NewStore(0)
	w1, wAll := s.Watch("t1"), s.Watch("")
	defer w1.Close()
	defer wAll.Close()
	s.Publish(testSnap(t, "t2", "x"))
	select {
	case <-w1.C():
		t.Fatal("t1 watcher woken by t2")
	default:
	}
	select {
	case <-wAll.C():
	default:
		t.Fatal("all-tenant watcher not woken")
	}
}

func TestVersionIsContentHash(t *testing.T) {
	a, b := testSnap(t, "t", "x"), testSnap(t, "other", "x")
	if a.Version != b.Version {
		t.Fatal("same content, different versions")
	}
	if testSnap(t, "t", "y").Version == a.Version {
		t.Fatal("different content, same version")
	}
}

func TestMCPKey(t *testing.T) {
	for in, want := range map[string]string{
		"networking.istio.io/v1/VirtualService":       "networking.istio.io/VirtualService",
		"networking.istio.io/v1alpha3/VirtualService": "networking.istio.io/VirtualService",
		ClusterType: ClusterType,
	} {
		if got := MCPKey(in); got != want {
			t.Errorf("MCPKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestAnyIsDeterministic: a message with a map encodes to the same bytes
// every time, so its version never changes by itself.
func TestAnyIsDeterministic(t *testing.T) {
	m, _ := structpb.NewStruct(map[string]any{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8})
	first, err := Any(m)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		again, _ := Any(m)
		if string(again.Value) != string(first.Value) {
			t.Fatal("Any encoded the same message differently")
		}
	}
}

// TestRollbackPinsAndSurvivesBuilds: a rollback serves a kept version and
// pins it; versions published later wait (no watcher is woken) and are
// counted; the pinned version stays in the bounded history however many
// come after it; unpinning serves the newest; unknown versions and a
// tenant with nothing before are refused with what is kept.
func TestRollbackPinsAndSurvivesBuilds(t *testing.T) {
	s := NewStore(3)
	a, b := testSnap(t, "t", "a"), testSnap(t, "t", "b")
	a.Breadth = 101 // built in a mesh-wide change
	s.Publish(a)
	if _, err := s.Rollback("t", ""); err == nil {
		t.Fatal("a rollback with no earlier version was accepted")
	}
	s.Publish(b)
	w := s.Watch("t")
	defer w.Close()
	got, err := s.Rollback("t", "")
	if err != nil || got.Version != a.Version || s.Current("t").Version != a.Version || !s.Current("t").Pinned {
		t.Fatalf("rollback served %v, %v; want a, pinned", got, err)
	}
	if br := s.Current("t").Breadth; br != 1 || a.Breadth != 101 {
		t.Fatalf("the pinned copy ranks as a change of %d tenants (the original %d); want 1, the original untouched", br, a.Breadth)
	}
	<-w.C()
	for _, v := range []string{"c", "d", "e", "f"} {
		if s.Publish(testSnap(t, "t", v)) {
			t.Fatalf("publishing %s while pinned reported a change", v)
		}
	}
	select {
	case <-w.C():
		t.Fatal("a build while pinned woke a watcher")
	default:
	}
	if s.Current("t").Version != a.Version {
		t.Fatal("a build replaced the pinned version")
	}
	if pinned, waiting := s.Pinned("t"); !pinned || waiting != 2 {
		t.Fatalf("Pinned = %v, %d waiting; want pinned, 2 (history of 3 keeps a, e, f)", pinned, waiting)
	}
	if h := s.History("t"); len(h) != 3 || h[0] != a {
		t.Fatalf("history %d long, first %v: want 3, the pinned version kept", len(h), h[0].Version)
	}
	if _, err := s.Rollback("t", "no-such-version"); err == nil || !strings.Contains(err.Error(), a.Version) {
		t.Fatalf("an unknown version: %v, want an error listing what is kept", err)
	}
	latest, err := s.Unpin("t")
	if err != nil || latest.Version != testSnap(t, "t", "f").Version || s.Current("t") != latest || latest.Pinned {
		t.Fatalf("unpin served %v, %v; want f", latest, err)
	}
	<-w.C()
	if s.Publish(testSnap(t, "t", "g")); s.Current("t").Version != testSnap(t, "t", "g").Version {
		t.Fatal("after unpin, a new build is not served")
	}
}

// TestRolledOutVersionIsNoCandidate: with rollout on, a version published
// as rolled out elsewhere (fetched from the tenant's owner, which ran the
// canary rollout) is served at once, not rolled out a second time.
func TestRolledOutVersionIsNoCandidate(t *testing.T) {
	s := NewStore(3)
	s.SetRollout(true)
	s.Publish(testSnap(t, "t", "a"))
	b := testSnap(t, "t", "b")
	s.Publish(b)
	if s.Current("t") == b || s.Rollout("t").Candidate != b {
		t.Fatal("with rollout on, a built version is not a candidate")
	}
	c := testSnap(t, "t", "c")
	if !s.PublishRolledOut(c) || s.Current("t") != c || s.Rollout("t").Candidate != nil {
		t.Fatalf("a rolled-out version: current %v, candidate %v; want it served and no candidate", s.Current("t").Version, s.Rollout("t").Candidate)
	}
}

// TestRemoveUnwatchedKeepsAWatchedTenant: removing a tenant no client
// watches is one step with the check, so a watch taken first keeps it
// (and a watch of every tenant keeps them all); an unwatched tenant goes,
// and one the store never had reads as unwatched.
func TestRemoveUnwatchedKeepsAWatchedTenant(t *testing.T) {
	s := NewStore(3)
	s.Publish(testSnap(t, "t1", "x"))
	w := s.Watch("t1")
	if s.RemoveUnwatched("t1") || s.Current("t1") == nil {
		t.Fatal("a watched tenant was removed")
	}
	w.Close()
	all := s.Watch("")
	if s.RemoveUnwatched("t1") || s.Current("t1") == nil {
		t.Fatal("a tenant was removed while every tenant is watched")
	}
	all.Close()
	if !s.RemoveUnwatched("t1") || s.Current("t1") != nil {
		t.Fatal("an unwatched tenant was kept")
	}
	if !s.RemoveUnwatched("never") {
		t.Fatal("a tenant the store never had reads as watched")
	}
}

// TestFetchedPinIsHeld: a replica fetching a tenant takes its owner's pin
// with the snapshot: a pinned copy is served and held (a build here, had
// this replica come to own the tenant, waits in history), and the
// owner's unpinned copy ends the pin, of the same version or another.
func TestFetchedPinIsHeld(t *testing.T) {
	s := NewStore(5)
	a, b, c := testSnap(t, "t", "a"), testSnap(t, "t", "b"), testSnap(t, "t", "c")
	s.PublishRolledOut(b)
	s.PublishRolledOut(a.withPinned(true))
	if pinned, _ := s.Pinned("t"); !pinned || s.Current("t").Version != a.Version {
		t.Fatalf("after the owner's pinned copy: pinned %v, serving %s; want pinned, a", pinned, s.Current("t").Version)
	}
	if s.Publish(c) || s.Current("t").Version != a.Version {
		t.Fatal("a build here replaced the owner's pinned version")
	}
	if !s.PublishRolledOut(a) || s.Current("t").Version != a.Version {
		t.Fatal("the owner's unpinned copy of the same version did not end the pin")
	}
	if pinned, _ := s.Pinned("t"); pinned {
		t.Fatal("still pinned after the owner unpinned")
	}
	s.PublishRolledOut(a.withPinned(true))
	if !s.PublishRolledOut(b) || s.Current("t").Version != b.Version {
		t.Fatal("the owner's unpinned newer version was not served")
	}
}

// TestFetchedCandidate follows an owner's rollout on a replica that
// fetches the tenant: the candidate is served to canaries while the
// owner's stable version announces it, through the owner's peer copy;
// ends when the announcement does (an abort) or the candidate becomes the
// stable version (a promotion); and one rejected here is refused again.
func TestFetchedCandidate(t *testing.T) {
	owner, s := NewStore(5), NewStore(5)
	owner.SetRollout(true)
	v1, v2, v3 := testSnap(t, "t", "1"), testSnap(t, "t", "2"), testSnap(t, "t", "3")
	owner.Publish(v1)
	owner.Publish(v2) // the owner's candidate
	fetch := func() *Snapshot {
		t.Helper()
		set, err := owner.PeerServing("t", false).PeerSet()
		if err != nil {
			t.Fatal(err)
		}
		items := map[string]*Resource{}
		for _, r := range set.Items {
			items[r.Name] = r
		}
		snap, err := FromPeer("t", items, nil)
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	everyone := func(*Snapshot) bool { return true }
	stable := fetch()
	if stable.Version != v1.Version || stable.Candidate != v2.Version {
		t.Fatalf("the owner's peer copy is %s announcing %q; want %s announcing %s", stable.Version, stable.Candidate, v1.Version, v2.Version)
	}
	if c := owner.PeerServing("t", true); c == nil || c.Version != v2.Version {
		t.Fatalf("the owner's candidate stream is sent %v, want %s", c, v2.Version)
	}
	s.PublishRolledOut(stable)
	if err := s.PublishFetchedCandidate(v2); err != nil {
		t.Fatal(err)
	}
	if got, canary := s.Serving("t", everyone); got.Version != v2.Version || !canary || !s.Rollout("t").Fetched {
		t.Fatalf("a canary here is served %s (canary %v, fetched %v), want the owner's candidate %s", got.Version, canary, s.Rollout("t").Fetched, v2.Version)
	}
	s.PublishRolledOut(stable) // the same announcement again keeps it
	if s.Rollout("t").Candidate == nil {
		t.Fatal("the candidate ended while the owner still announces it")
	}

	// The owner aborts: its stable copy no longer announces the candidate.
	if _, err := owner.Abort("t", "rejected"); err != nil {
		t.Fatal(err)
	}
	s.PublishRolledOut(fetch())
	if got, _ := s.Serving("t", everyone); got.Version != v1.Version || s.Rollout("t").Candidate != nil {
		t.Fatalf("after the owner's abort a canary here is served %s, want %s", got.Version, v1.Version)
	}
	// The held candidate travels with the copy: should this replica come
	// to own the tenant, its own build of that version is not rolled out.
	if h := s.Rollout("t"); h.Held == nil || h.Held.Version != v2.Version || h.HeldWhy != "rejected" {
		t.Fatalf("the owner's held candidate did not travel: %+v", h)
	}
	s.SetRollout(true)
	if s.Publish(v2) {
		t.Fatal("a replica that fetched the owner's held candidate rolled it out again")
	}
	s.SetRollout(false)

	// A new candidate, promoted: it arrives as the stable version.
	owner.Publish(v3)
	s.PublishRolledOut(fetch())
	if err := s.PublishFetchedCandidate(v3); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Promote("t"); err != nil {
		t.Fatal(err)
	}
	s.PublishRolledOut(fetch())
	if got, canary := s.Serving("t", everyone); got.Version != v3.Version || canary || s.Rollout("t").Candidate != nil {
		t.Fatalf("after the promotion a canary here is served %s as canary %v, want %s as stable", got.Version, canary, v3.Version)
	}

	// Rejected here once, refused again.
	v4 := testSnap(t, "t", "4")
	owner.Publish(v4)
	if s.PublishRolledOut(fetch()); fetch().Candidate != v4.Version {
		t.Fatalf("the owner announces %q, want %s", fetch().Candidate, v4.Version)
	}
	if err := s.PublishFetchedCandidate(v4); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Abort("t", "a canary here rejected it"); err != nil {
		t.Fatal(err)
	}
	if err := s.PublishFetchedCandidate(v4); err == nil || !strings.Contains(err.Error(), "a canary here rejected it") {
		t.Fatalf("a candidate rejected here was taken again: %v", err)
	}
}
