package sharding

import (
	"context"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"
)

// Streams are balanced over the replicas the way Consul balances xDS
// sessions over its servers: each replica's share is
// ceil(streams / members x 1.1), counted from the streams every member
// reports in its Lease; a replica above its share ends a few of the
// surplus each round (1 per second for a small fleet, up to 10 for a
// large one, at jittered times), never all at once, so their clients dial
// again through the Service and land anywhere.

// Balancer sheds this replica's surplus of proxy streams.
type Balancer struct {
	Self  string
	Every time.Duration // between rounds, jittered; default 1 s
	// Settle is how long a surplus must last before it is shed: the
	// others' counts are as of their last Lease renewal, and lag right
	// after a fleet connects or a member joins.
	Settle  time.Duration
	Loads   Loads
	Members func() []Member // the ring's
	Streams func() int      // this replica's proxy streams now
	Shed    func(n int)     // end n of them, those of tenants owned elsewhere first
	// Affinity also sheds, at the same rate, the streams of tenants owned
	// elsewhere (Foreign counts them) while this replica holds at least
	// the mean, with no surplus: they redial through the Service and
	// land anywhere, so over rounds each settles on its tenant's owner,
	// where nothing is fetched for it. The surplus rule still bounds
	// every replica.
	Affinity bool
	Foreign  func() int
	Logger   *slog.Logger
	Now      func() time.Time // tests' clock; time.Now if nil

	surplusSince, foreignSince time.Time
}

// Share is a replica's fair number of streams: ceil(total/members x 1.1).
func Share(total, members int) int {
	if members <= 0 {
		return total
	}
	return int(math.Ceil(float64(total) / float64(members) * 1.1))
}

// ShedRate is how many streams one round may end: 1 per 1,000 streams
// in the deployment, from 1 to 10.
func ShedRate(total int) int { return min(max(total/1000, 1), 10) }

// Run runs rounds until ctx ends.
func (b *Balancer) Run(ctx context.Context) {
	every := b.Every
	if every <= 0 {
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
		b.Round()
	}
}

// Round sheds this round's part of the replica's surplus, if it lasted
// Settle; it says how many streams it shed.
func (b *Balancer) Round() int {
	now := time.Now
	if b.Now != nil {
		now = b.Now
	}
	log := b.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	members := b.Members()
	mine := b.Streams()
	total := mine
	reported := b.Loads.Loads()
	for _, m := range members {
		if m.ID != b.Self {
			total += reported[m.ID]
		}
	}
	limit := Share(total, len(members))
	surplus := mine - limit
	if surplus <= 0 {
		b.surplusSince = time.Time{}
		return b.affinityRound(log, now(), mine, total, len(members))
	}
	if b.surplusSince.IsZero() {
		b.surplusSince = now()
	}
	if now().Sub(b.surplusSince) < b.Settle {
		return 0
	}
	n := min(surplus, ShedRate(total))
	log.Info("more than this replica's share of streams; shedding some so clients redial", "streams", mine, "share", limit, "members", len(members), "shedding", n)
	b.Shed(n)
	return n
}

// affinityRound sheds streams of tenants owned elsewhere while this
// replica holds at least the mean of the streams (below it, it takes
// rather than gives), once that lasted Settle.
func (b *Balancer) affinityRound(log *slog.Logger, now time.Time, mine, total, members int) int {
	foreign := 0
	if b.Affinity && b.Foreign != nil && members > 1 && mine*members >= total {
		foreign = b.Foreign()
	}
	if foreign == 0 {
		b.foreignSince = time.Time{}
		return 0
	}
	if b.foreignSince.IsZero() {
		b.foreignSince = now
	}
	if now.Sub(b.foreignSince) < b.Settle {
		return 0
	}
	n := min(foreign, ShedRate(total))
	log.Debug("streams of tenants owned elsewhere; shedding some so they settle on their owners", "streams", mine, "foreign", foreign, "shedding", n)
	b.Shed(n)
	return n
}
