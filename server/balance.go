package server

import (
	"context"
	"math"
	"math/rand/v2"
	"time"

	"github.com/xdshard/xdshard/sharding"
)

// Streams are balanced over the replicas the way Consul balances xDS
// sessions over its servers: each replica's share is
// ceil(streams / members x 1.1), counted from the streams every member
// reports in its Lease; a replica above its share ends a few of the
// surplus each round (1 per second for a small fleet, up to 10 for a
// large one, at jittered times), never all at once, with Unavailable so
// their clients dial again through the Service and land anywhere.

// share is a replica's fair number of streams: ceil(total/members x 1.1).
func share(total, members int) int {
	if members <= 0 {
		return total
	}
	return int(math.Ceil(float64(total) / float64(members) * 1.1))
}

// shedRate is how many streams one round may end: 1 per 1,000 streams
// in the deployment, from 1 to 10.
func shedRate(total int) int { return min(max(total/1000, 1), 10) }

// balance runs rounds until ctx ends.
func (r *Replica) balance(ctx context.Context, loads sharding.Loads) {
	every := r.cfg.Balance
	if every == 0 {
		every = time.Second
	}
	for {
		// Jitter: replicas that all see the same surplus do not all shed
		// in the same instant.
		wait := every/2 + rand.N(every)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		r.balanceRound(loads)
	}
}

// balanceRound sheds this round's part of the replica's surplus, if any.
func (r *Replica) balanceRound(loads sharding.Loads) {
	members := r.ring.Load().Members()
	mine := r.xds.ProxyStreams()
	total := mine
	reported := loads.Loads()
	for _, m := range members {
		if m.ID != r.cfg.ReplicaID {
			total += reported[m.ID]
		}
	}
	limit := share(total, len(members))
	surplus := mine - limit
	if surplus <= 0 {
		r.surplusSince = time.Time{}
		return
	}
	// The others' counts are as of their last Lease renewal: right after a
	// fleet connects, or a member joins, they lag. Shed only a surplus
	// that lasted BalanceSettle, so stale counts cause no churn.
	if r.surplusSince.IsZero() {
		r.surplusSince = time.Now()
	}
	if time.Since(r.surplusSince) < r.cfg.BalanceSettle {
		return
	}
	n := min(surplus, shedRate(total))
	r.log.Info("more than this replica's share of streams; shedding some so clients redial", "streams", mine, "share", limit, "members", len(members), "shedding", n)
	for _, remote := range r.xds.Shed(n) {
		r.xdsConns.closeLater(remote, 500*time.Millisecond)
	}
}
