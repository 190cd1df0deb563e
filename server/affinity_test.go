package server_test

import (
	"context"
	"math"
	"testing"
	"time"
)

// TestStreamAffinity runs three replicas sharding by Leases with
// --stream-affinity and proxies of every tenant on every replica (a third
// of them on their tenant's owner). The streams of tenants a replica does
// not own move off it while it holds at least the mean, until the
// balancing's fixed point: no replica above its share, and none at or
// above the mean holding a stream of a tenant owned elsewhere. (The
// owners' tenants are not of equal size, so the share rule can keep some
// streams away from their owner.) Every proxy is current again, and none
// sees a version go back.
func TestStreamAffinity(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const tenants = 6
	d, _ := leaseDeployment(t, ctx, c, "a", tenants, 19, "--stream-affinity")
	defer d.close()
	owners := d.everywhere(ctx, tenants)
	byAddr := map[string]string{}
	for _, p := range d.procs {
		byAddr[p.xds] = p.id
	}
	// spread is, per replica, its streams and those of tenants it does
	// not own, and how many proxies are on their tenant's owner.
	spread := func() (streams, foreign map[string]int, onOwner int) {
		d.mu.Lock()
		defer d.mu.Unlock()
		streams, foreign = map[string]int{}, map[string]int{}
		for _, p := range d.proxies {
			r := byAddr[p.Server()]
			streams[r]++
			if owners[p.tenant] == r {
				onOwner++
			} else {
				foreign[r]++
			}
		}
		return streams, foreign, onOwner
	}
	total := len(d.proxies)
	share := int(math.Ceil(float64(total) / 3 * 1.1))
	took := d.waitFor("the balancing's fixed point", 3*time.Minute, func() bool {
		streams, foreign, _ := spread()
		for _, p := range d.procs {
			if streams[p.id] > share || streams[p.id]*3 >= total && foreign[p.id] > 0 {
				return false
			}
		}
		return true
	})
	d.waitFor("every proxy current again", 30*time.Second, d.agreed)
	d.anomalies()
	streams, foreign, onOwner := spread()
	if onOwner <= total/3 {
		t.Fatalf("%d of %d proxies on their tenant's owner, no more than the round-robin start", onOwner, total)
	}
	t.Logf("after %s: %d of %d proxies on their tenant's owner; streams %v, of tenants owned elsewhere %v", took.Round(time.Millisecond), onOwner, total, streams, foreign)
}
