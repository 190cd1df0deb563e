package model

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
)

// TestSortedObjectsFollowChanges: over random rounds of edits (objects
// replaced, the kept order reused), additions and deletions, each
// namespace's sorted objects are exactly its objects sorted anew, and
// the current ones, never a replaced copy.
func TestSortedObjectsFollowChanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 9))
	m := NewMesh()
	m.Apply(add(namespace("a", ""), namespace("b", "")))
	vs := func(ns string, i, gen int) *Object {
		return obj(KindVirtualService, ns, fmt.Sprintf("vs-%02d", i), nil, &networking.VirtualService{Hosts: []string{fmt.Sprint("h", gen)}})
	}
	var changes []Change
	for i := range 30 {
		changes = append(changes, add(vs("a", i, 0), vs("b", i, 0))...)
	}
	m.Apply(changes)
	for round := range 300 {
		for _, ns := range []string{"a", "b"} {
			m.mu.Lock()
			m.nsObjectsLocked(ns) // sorted now, so the next change may reuse the order
			m.mu.Unlock()
		}
		changes = nil
		for range 1 + rng.IntN(5) {
			ns, i := []string{"a", "b"}[rng.IntN(2)], rng.IntN(40)
			switch rng.IntN(6) {
			case 0: // deleted
				changes = append(changes, Change{Key: Key{Kind: KindVirtualService, Namespace: ns, Name: fmt.Sprintf("vs-%02d", i)}})
			default: // replaced, or added when it is not there
				changes = append(changes, add(vs(ns, i, round))...)
			}
		}
		m.Apply(changes)
		m.mu.Lock()
		for _, ns := range []string{"a", "b"} {
			got := m.nsObjectsLocked(ns)
			var want []*Object
			for _, o := range m.byNS[ns] {
				want = append(want, o)
			}
			sortObjects(want)
			if !slices.Equal(got, want) {
				m.mu.Unlock()
				t.Fatalf("round %d: namespace %s's sorted objects are not its objects sorted", round, ns)
			}
		}
		m.mu.Unlock()
	}
}
