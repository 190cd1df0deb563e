package xds

import (
	"testing"
	"time"
)

// TestShedEndsStreamsOfForeignTenantsFirst: a replica shedding streams
// ends those of the tenants it says go first (owned elsewhere) before any
// other, so clients drift toward their tenants' owners.
func TestShedEndsStreamsOfForeignTenantsFirst(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	e.mesh("b", 1, 0)
	byTenant := map[string][]*sotw{}
	for _, tenant := range []string{"a", "b"} {
		for range 4 {
			c := e.sotw(tenant, nil)
			c.send(cds, "", "")
			c.recv()
			byTenant[tenant] = append(byTenant[tenant], c)
		}
	}
	e.srv.Shed(3, func(tenant string) bool { return tenant == "b" })
	// closed drains what a stream received and says whether it ended.
	closed := func(c *sotw) bool {
		for {
			select {
			case _, ok := <-c.resps:
				if !ok {
					return true
				}
			default:
				return false
			}
		}
	}
	count := func(cs []*sotw) int {
		n := 0
		for _, c := range cs {
			if closed(c) {
				n++
			}
		}
		return n
	}
	ended := 0
	for deadline := time.Now().Add(30 * time.Second); ended < 3 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		ended = count(byTenant["b"])
	}
	if ended != 3 {
		t.Fatalf("%d of tenant b's 4 streams ended, want 3", ended)
	}
	if n := count(byTenant["a"]); n != 0 || e.srv.ProxyStreams() != 5 {
		t.Fatalf("%d of tenant a's streams ended, %d proxy streams left; want 0 and 5", n, e.srv.ProxyStreams())
	}
}
