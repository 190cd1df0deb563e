package xds

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/xdshard/xdshard/snapshot"
)

// refDelta is what a delta client holds as xdshard kept it before streams
// shared the set they were levelled with: a map per stream, changed as
// the requests and pushes go (the reference for TestDeltaLevelMatchesMap).
type refDelta struct {
	names       map[string]bool
	wildcard    bool
	known       map[string]string
	toldMissing map[string]bool
	requested   bool
}

func (r *refDelta) record(req *discovery.DeltaDiscoveryRequest) {
	if !r.requested {
		r.requested = true
		for n, v := range req.InitialResourceVersions {
			r.known[n] = v
		}
		if len(req.ResourceNamesSubscribe) == 0 {
			r.wildcard = true
		}
	}
	for _, n := range req.ResourceNamesSubscribe {
		if n == "*" {
			r.wildcard = true
		} else if !r.names[n] {
			r.names[n] = true
			delete(r.toldMissing, n)
		}
	}
	for _, n := range req.ResourceNamesUnsubscribe {
		if n == "*" {
			r.wildcard = false
			continue
		}
		delete(r.names, n)
		delete(r.known, n)
		delete(r.toldMissing, n)
	}
	if len(req.InitialResourceVersions) > 0 && !r.wildcard {
		for n := range r.known {
			if !r.names[n] {
				delete(r.known, n)
			}
		}
	}
}

func (r *refDelta) push(set *snapshot.Set) (sent, removed []string) {
	send := func(x *snapshot.Resource) {
		if r.known[x.Name] == x.Version {
			return
		}
		r.known[x.Name] = x.Version
		delete(r.toldMissing, x.Name)
		sent = append(sent, x.Name+"@"+x.Version)
	}
	if r.wildcard && set != nil {
		for _, x := range set.Items {
			send(x)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(r.names)) {
		if x := set.Get(n); x != nil {
			send(x)
		} else if _, has := r.known[n]; !has && !r.toldMissing[n] {
			r.toldMissing[n] = true
			removed = append(removed, n)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(r.known)) {
		if set.Get(n) != nil || (!r.names[n] && !r.wildcard) {
			continue
		}
		delete(r.known, n)
		if r.names[n] {
			r.toldMissing[n] = true
		}
		removed = append(removed, n)
	}
	return sent, removed
}

// TestDeltaLevelMatchesMap drives a delta stream's real request handling
// and push computation with random subscriptions, unsubscriptions,
// wildcard changes, client-held versions and sets, and checks after every
// step that what it sends, removes and holds is what a map per stream
// gives, and that a stream that was pushed a set holds it as that set
// (no map) unless what it holds differs.
func TestDeltaLevelMatchesMap(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	universe := []string{"n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"}
	pick := func(rng *rand.Rand) []string {
		var out []string
		for _, n := range universe {
			if rng.IntN(4) == 0 {
				out = append(out, n)
			}
		}
		return out
	}
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		c := newConn(seed+1, node("a", nil), "a", "a", snapshot.ViewEnvoy, true)
		ref := &refDelta{names: map[string]bool{}, known: map[string]string{}, toldMissing: map[string]bool{}}
		first := &discovery.DeltaDiscoveryRequest{Node: node("a", nil), TypeUrl: cds, ResourceNamesSubscribe: pick(rng)}
		if rng.IntN(2) == 0 {
			first.InitialResourceVersions = map[string]string{}
			for _, n := range pick(rng) {
				first.InitialResourceVersions[n] = fmt.Sprint(rng.IntN(3))
			}
		}
		step := func(what string, req *discovery.DeltaDiscoveryRequest) {
			t.Helper()
			if err := e.srv.recordDelta(c, req); err != nil {
				t.Fatalf("seed %d, %s: %v", seed, what, err)
			}
			ref.record(req)
			c.types.get(cds).awaiting, c.types.get(cds).nonce = false, ""
		}
		step("first request", first)
		for i := range 30 {
			what := ""
			switch k := rng.IntN(6); {
			case k == 0:
				what = "subscribe"
				step(what, &discovery.DeltaDiscoveryRequest{TypeUrl: cds, ResourceNamesSubscribe: pick(rng)})
			case k == 1:
				what = "unsubscribe"
				step(what, &discovery.DeltaDiscoveryRequest{TypeUrl: cds, ResourceNamesUnsubscribe: pick(rng)})
			case k == 2 && rng.IntN(2) == 0:
				what = "wildcard on"
				step(what, &discovery.DeltaDiscoveryRequest{TypeUrl: cds, ResourceNamesSubscribe: []string{"*"}})
			case k == 2:
				what = "wildcard off"
				step(what, &discovery.DeltaDiscoveryRequest{TypeUrl: cds, ResourceNamesUnsubscribe: []string{"*"}})
			default:
				what = "push"
				var items []*snapshot.Resource
				for _, n := range pick(rng) {
					r, err := snapshot.Encode(n, wrapperspb.String(fmt.Sprint(rng.IntN(3))))
					if err != nil {
						t.Fatal(err)
					}
					items = append(items, r)
				}
				var set *snapshot.Set
				if rng.IntN(8) != 0 {
					set = snapshot.MustSet(cds, items)
				}
				st := c.types.get(cds)
				resp := deltaChanges(st, set)
				var sent []string
				for _, r := range resp.Resources {
					sent = append(sent, r.Name+"@"+r.Version)
				}
				wantSent, wantRemoved := ref.push(set)
				slices.Sort(sent)
				slices.Sort(wantSent)
				gotRemoved := slices.Sorted(slices.Values(resp.RemovedResources))
				slices.Sort(wantRemoved)
				if !slices.Equal(sent, wantSent) || !slices.Equal(gotRemoved, wantRemoved) {
					t.Fatalf("seed %d step %d push: sent %v removed %v, want %v and %v", seed, i, sent, gotRemoved, wantSent, wantRemoved)
				}
				if st.known != nil && set != nil && maps.Equal(ref.known, levelOf(ref, set)) {
					t.Fatalf("seed %d step %d: the stream holds exactly the set pushed but keeps a map of its own", seed, i)
				}
			}
			st := c.types.get(cds)
			if want := slices.Sorted(maps.Keys(ref.names)); !slices.Equal(st.sorted, want) || st.wildcard != ref.wildcard {
				t.Fatalf("seed %d step %d (%s): subscribed to %v (wildcard %v), want %v (%v)", seed, i, what, st.sorted, st.wildcard, want, ref.wildcard)
			}
			for _, n := range universe {
				v, ok := st.held(n)
				if rv, rok := ref.known[n]; ok != rok || v != rv {
					t.Fatalf("seed %d step %d (%s): holds %s at %q (%v), want %q (%v)", seed, i, what, n, v, ok, rv, rok)
				}
			}
		}
	}
}

// levelOf is what a client levelled with set holds: set's resources in
// its subscription at set's versions.
func levelOf(r *refDelta, set *snapshot.Set) map[string]string {
	out := map[string]string{}
	for _, x := range set.Items {
		if r.wildcard || r.names[x.Name] {
			out[x.Name] = x.Version
		}
	}
	return out
}

// TestTypeStateSize keeps a stream's per-type state within 256 bytes, a
// size class of Go's allocator: a replica holds four or five per stream
// and tens of thousands of streams, and a field added in the wrong place
// (a bool between two words pads it by seven bytes) moves it to the next
// class, 288.
func TestTypeStateSize(t *testing.T) {
	if n := unsafe.Sizeof(typeState{}); n > 256 {
		t.Fatalf("typeState is %d bytes, more than 256: keep the flags together, or make room", n)
	}
}
