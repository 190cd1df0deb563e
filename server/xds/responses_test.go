package xds

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/xdshard/xdshard/snapshot"
)

// TestResponseCacheDropsACollectedSetsResponses: the responses made from
// a set go when the garbage collector takes the set, however far from the
// LRU's old end they sit, so replaced snapshots' responses never fill the
// bound (a 10-minute soak found them doing so); a live set's stay.
func TestResponseCacheDropsACollectedSetsResponses(t *testing.T) {
	c := newResponseCache(1<<30, nil)
	live, err := snapshot.NewSet(snapshot.ClusterType, []*snapshot.Resource{snapshot.FromBytes("live", snapshot.ClusterType, []byte{1})})
	if err != nil {
		t.Fatal(err)
	}
	c.sotw(snapshot.ClusterType, live, nil, nil, 0, true)
	for i := 0; i < 100; i++ {
		set, err := snapshot.NewSet(snapshot.ClusterType, []*snapshot.Resource{snapshot.FromBytes(fmt.Sprint("c", i), snapshot.ClusterType, []byte{byte(i)})})
		if err != nil {
			t.Fatal(err)
		}
		c.sotw(snapshot.ClusterType, set, nil, nil, 0, true)
		c.sotw(snapshot.ClusterType, set, nil, []string{fmt.Sprint("c", i)}, uint64(i), false)
		// The live set's response is used again, so the dead ones are not
		// all at the old end.
		c.sotw(snapshot.ClusterType, live, nil, nil, 0, true)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.len() > 1 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := c.len(); n != 1 {
		t.Fatalf("%d responses kept after their sets were collected; want the live set's one", n)
	}
	c.mu.Lock()
	tracked := len(c.bySet)
	c.mu.Unlock()
	if tracked != 1 {
		t.Fatalf("%d sets tracked, want the live one", tracked)
	}
	runtime.KeepAlive(live)
}
