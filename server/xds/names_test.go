package xds

import (
	"testing"
	"unsafe"
)

// TestStreamsShareTheirNameLists: two streams of a tenant subscribed to
// the same endpoints hold one list between them, and a stream that asks
// for names its tenant does not serve (made up) keeps its list to itself:
// nothing of it is kept beyond the stream.
func TestStreamsShareTheirNameLists(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 2, 0)
	list := func(c *sotw) []string {
		t.Helper()
		conn := c.settle(t)
		conn.mu.Lock()
		defer conn.mu.Unlock()
		return conn.types.get(eds).sorted
	}
	var lists [][]string
	for range 2 {
		c := e.sotw("a", nil)
		c.send(eds, "", "", "a-c2", "a-c1")
		c.recv()
		lists = append(lists, list(c))
	}
	if len(lists[0]) != 2 || unsafe.SliceData(lists[0]) != unsafe.SliceData(lists[1]) {
		t.Fatalf("two streams subscribed to the same names hold lists %p and %p, want one", unsafe.SliceData(lists[0]), unsafe.SliceData(lists[1]))
	}
	if n := e.srv.lists.lru.Len(); n != 1 {
		t.Fatalf("%d lists kept, want 1", n)
	}
	odd := e.sotw("a", nil)
	odd.send(eds, "", "", "a-c1", "made-up")
	odd.recv()
	if l := list(odd); len(l) != 2 {
		t.Fatalf("the odd stream's subscription is %v", l)
	}
	if n := e.srv.lists.lru.Len(); n != 1 {
		t.Fatalf("%d lists kept after a subscription with a made-up name, want still 1", n)
	}
}
