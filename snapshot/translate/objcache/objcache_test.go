package objcache

import (
	"runtime"
	"testing"
	"time"

	"github.com/xdshard/xdshard/snapshot/model"
)

// TestKeptWhileTheObjectLives: a value is computed once per object, and
// goes when the garbage collector takes the object.
func TestKeptWhileTheObjectLives(t *testing.T) {
	c := New[int](nil)
	calls := 0
	f := func(*model.Object) int { calls++; return calls }
	live := &model.Object{Key: model.Key{Kind: model.KindService, Namespace: "a", Name: "live"}}
	if c.Get(live, f) != 1 || c.Get(live, f) != 1 || calls != 1 {
		t.Fatalf("computed %d times for one object, want once", calls)
	}
	for i := 0; i < 50; i++ {
		c.Get(&model.Object{Key: model.Key{Kind: model.KindService, Namespace: "a", Name: "gone"}}, f)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Len() > 1 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := c.Len(); n != 1 {
		t.Fatalf("%d values kept, want the live object's alone", n)
	}
	before := calls
	if got := (*Cache[int])(nil).Get(live, f); got != before+1 {
		t.Fatal("a nil Cache did not compute")
	}
	runtime.KeepAlive(live)
}
