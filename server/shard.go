package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/xdshard/xdshard/identity"
	"github.com/xdshard/xdshard/server/admin"
	"github.com/xdshard/xdshard/server/xds"
	"github.com/xdshard/xdshard/sharding"
	"github.com/xdshard/xdshard/snapshot/builder"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// shard sets the replica up as one of its members: the builder builds
// only the tenants the ring gives this replica, the fetcher follows the
// others' owners, and the peer face serves this replica's tenants to the
// others. When members change, tenants move: one this replica now owns is
// built (and keeps serving what it had until then), one it no longer owns
// follows its new owner (its last copy serves until the owner's arrives).
func (r *Replica) shard(ctx context.Context, bopts *builder.Options) error {
	cfg := r.cfg
	members := cfg.Membership
	if members == nil {
		if !slices.ContainsFunc(cfg.Peers, func(m sharding.Member) bool { return m.ID == cfg.ReplicaID }) || cfg.ReplicaID == "" {
			return fmt.Errorf("replica id %q is not among the peers %v; list every replica, this one included", cfg.ReplicaID, cfg.Peers)
		}
		members = sharding.Static(cfg.Peers)
	}
	lis, err := net.Listen("tcp", cfg.PeerAddr)
	if err != nil {
		return fmt.Errorf("peer address %s: %w", cfg.PeerAddr, err)
	}
	r.ring.Store(sharding.NewRing(members.Members()))
	received := prometheus.NewCounter(prometheus.CounterOpts{Name: "xdshard_peer_received_bytes_total", Help: "Resource bytes this replica received from tenants' owners."})
	fetchTime := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "xdshard_peer_fetch_seconds",
		Help: "Time from following a tenant's owner to holding its whole snapshot.", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)})
	r.reg.MustRegister(received, fetchTime)
	r.fetcher = sharding.NewFetcher(cfg.ReplicaID, r.store, r.log, sharding.FetchObserver{
		Received:    func(n int) { received.Add(float64(n)) },
		Fetched:     func(d time.Duration) { fetchTime.Observe(d.Seconds()) },
		Unreachable: r.adopt,
		Reached:     r.unadopt,
	})
	if cfg.FetchCacheBytes <= 0 {
		r.cfg.FetchCacheBytes = 256 << 20
	}
	r.idle, _ = simplelru.NewLRU[string, int64](1<<30, nil)
	// The peer face shares the replica's metrics: peer streams count as
	// pilot_xds{view="peer"}, and their pushes as type "other".
	// A peer names every resource of a tenant's snapshot when it
	// reconnects (initial versions): more than a proxy's names limit for a
	// large tenant, so the peer face allows that many.
	popts := xds.Options{Resolver: r.mesh, Logger: r.log, Registry: r.reg, Peers: true, PeerServes: r.builtSinceOwned, Limits: xds.Limits{Names: 1 << 22,
		// A peer names a whole tenant, and one connection carries every
		// tenant a replica follows: no client budget applies.
		SubscriptionBytes: 1 << 40, ConnSubscriptionBytes: 1 << 40, IdentitySubscriptionBytes: 1 << 40}}
	if cfg.TLS != nil {
		// Peers prove who they are with their certificates only.
		popts.Access = xds.Access{Authenticate: (&identity.Authenticator{}).Authenticate, Peers: r.peerIdentities()}
		r.fetcher.Creds = credentials.NewTLS(cfg.TLS.ClientConfig(r.peerIdentities()))
	}
	peers := xds.New(r.store, popts)
	r.xds.JudgeWithPeers(peers) // other replicas' canaries count in this replica's rollouts
	r.peerGRPC = grpc.NewServer(r.grpcOptions(true)...)
	peers.Register(r.peerGRPC)
	r.goStage(func() error {
		if err := r.peerGRPC.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("peer server: %w", err)
		}
		return nil
	})
	go func() { <-ctx.Done(); peers.Close() }()
	bopts.Owns = r.owns
	bopts.Foreign = func(tenant string, gone bool) {
		if gone {
			r.fetcher.Stop(tenant)
			return
		}
		r.followIfWatched(ctx, tenant)
	}
	if r.cfg.FetchGrace <= 0 {
		r.cfg.FetchGrace = 30 * time.Second
	}
	r.store.OnInterest(func(tenant string, watched bool) { r.interest(ctx, tenant, watched) })
	r.members = members
	r.handovers = prometheus.NewCounter(prometheus.CounterOpts{Name: "xdshard_handovers_total", Help: "Tenants whose owner changed, as this replica saw membership change."})
	r.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xdshard_members", Help: "Replicas this replica shards tenants with, itself included."},
			func() float64 { return float64(len(r.ring.Load().Members())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xdshard_remote_snapshots", Help: "Tenants whose snapshot this replica follows from their owner, for its local clients."},
			func() float64 { return float64(r.fetcher.Following()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xdshard_remote_snapshot_bytes", Help: "Resource bytes of the snapshots this replica follows from their owners."},
			func() float64 { return float64(r.fetcher.Bytes("")) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xdshard_adopted_tenants", Help: "Tenants this replica builds because their owner does not answer (until it does, or membership moves them)."},
			func() float64 { r.adoptMu.Lock(); defer r.adoptMu.Unlock(); return float64(len(r.adopted)) }),
		r.handovers,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xdshard_owned_tenants", Help: "Tenants this replica builds."},
			func() float64 {
				n := 0
				for _, t := range r.mesh.Tenants() {
					if r.owns(t) {
						n++
					}
				}
				return float64(n)
			}))
	r.log.Info("sharding", "replica", cfg.ReplicaID, "members", len(members.Members()), "peer-addr", lis.Addr().String())
	return nil
}

// owns says whether this replica builds tenant: the ring gives it to this
// replica, or its owner does not answer (adopted). Two builders for a
// moment publish identical bytes, while none would leave clients waiting.
func (r *Replica) owns(tenant string) bool {
	if r.ringOwns(tenant) {
		return true
	}
	r.adoptMu.Lock()
	defer r.adoptMu.Unlock()
	_, ok := r.adopted[tenant]
	return ok
}

// ringOwns says whether the ring gives tenant to this replica. With no
// member known yet (membership not read), it gives it everything.
func (r *Replica) ringOwns(tenant string) bool {
	o, ok := r.ring.Load().Owner(tenant)
	return !ok || o.ID == r.cfg.ReplicaID
}

// adopt builds tenant here while its owner does not answer: a proxy that
// failed over from a dead owner gets its config at once, not after the
// owner's Lease expired. The fetcher keeps trying the owner meanwhile.
func (r *Replica) adopt(tenant string) {
	if r.ringOwns(tenant) || r.builder == nil {
		return
	}
	owner := r.Owner(tenant)
	r.adoptMu.Lock()
	if r.adopted == nil {
		r.adopted = map[string]string{}
	}
	_, was := r.adopted[tenant]
	r.adopted[tenant] = owner
	r.adoptMu.Unlock()
	if !was {
		r.log.Warn("a tenant's owner does not answer; building the tenant here until it does", "tenant", tenant, "owner", owner)
		r.restoreKept(tenant)
		r.builder.Rebuild([]string{tenant})
	}
}

// unadopt leaves tenant to its owner again: it answered, or membership
// named another.
func (r *Replica) unadopt(tenant string) {
	r.adoptMu.Lock()
	_, was := r.adopted[tenant]
	delete(r.adopted, tenant)
	r.adoptMu.Unlock()
	if was {
		if !r.ringOwns(tenant) {
			r.forgetBuilt(tenant)
		}
		r.log.Info("a tenant's owner answers again; serving its copy", "tenant", tenant, "owner", r.Owner(tenant))
	}
}

// builtSinceOwned says whether tenant was built here since this replica
// came to own it: only then does the peer face give it to the others.
func (r *Replica) builtSinceOwned(tenant string) bool {
	r.adoptMu.Lock()
	defer r.adoptMu.Unlock()
	return r.builtHere[tenant]
}

// forgetBuilt records that tenant's snapshot here may be a fetched copy
// again (it moved, or its adoption ended).
func (r *Replica) forgetBuilt(tenant string) {
	r.adoptMu.Lock()
	delete(r.builtHere, tenant)
	r.adoptMu.Unlock()
}

// followMembers swaps the ring on every membership change and moves the
// tenants whose owner changed.
func (r *Replica) followMembers(ctx context.Context, members sharding.Membership, changes <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-changes:
		}
		old := r.ring.Swap(sharding.NewRing(members.Members()))
		var mine []string
		for _, t := range r.mesh.Tenants() {
			was, _ := old.Owner(t)
			now, _ := r.ring.Load().Owner(t)
			if was == now {
				continue
			}
			r.handovers.Inc()
			r.unadopt(t)     // the new owner is followed afresh (and adopted again if it does not answer)
			r.forgetBuilt(t) // owned here now or not, peers get it only once built here again
			switch {
			case r.owns(t):
				r.fetcher.Stop(t)
				r.restoreKept(t)
				mine = append(mine, t)
			case r.store.Watched(t) || r.store.Watched(""):
				r.followIfWatched(ctx, t) // what it serves now keeps serving until the owner's copy arrives
			default:
				r.fetcher.Stop(t)
				r.store.Remove(t) // built here before, owned elsewhere now, and nobody here reads it
			}
		}
		r.log.Info("members changed; tenants moved", "members", len(members.Members()), "now built here", len(mine))
		r.builder.Rebuild(mine)
	}
}

// Owner names the replica that builds tenant ("" without sharding).
func (r *Replica) Owner(tenant string) string {
	ring := r.ring.Load()
	if ring == nil {
		return ""
	}
	o, _ := ring.Owner(tenant)
	return o.ID
}

// origin is tenantz's owner and origin of this replica's copy of tenant.
func (r *Replica) origin(tenant string) (owner, origin string) {
	owner = r.Owner(tenant)
	switch {
	case owner == "":
		return "", ""
	case r.ringOwns(tenant):
		return owner, "built here"
	}
	r.adoptMu.Lock()
	_, adopted := r.adopted[tenant]
	r.adoptMu.Unlock()
	if adopted {
		return owner, "built here while " + owner + " does not answer"
	}
	return owner, "fetched from " + owner
}

// followIfWatched follows a tenant this replica does not own from its
// owner while a local client watches it: a proxy of the tenant, or an
// istiod (MCP reads every tenant). Nobody watching, nothing is fetched.
func (r *Replica) followIfWatched(ctx context.Context, tenant string) {
	r.followMu.Lock()
	defer r.followMu.Unlock()
	if r.owns(tenant) || !(r.store.Watched(tenant) || r.store.Watched("")) {
		return
	}
	owner, _ := r.ring.Load().Owner(tenant)
	if err := r.fetcher.Follow(ctx, tenant, owner); err != nil {
		r.log.Warn("cannot follow a tenant's owner", "tenant", tenant, "owner", owner.ID, "err", err)
	}
}

// interest follows a foreign tenant when its first local client comes,
// and drops its fetched snapshot FetchGrace after its last one left, or
// sooner when the fetched snapshots nobody here reads pass FetchCacheBytes.
func (r *Replica) interest(ctx context.Context, tenant string, watched bool) {
	tenants := []string{tenant}
	if tenant == "" { // an istiod's MCP stream: every tenant
		tenants = r.mesh.Tenants()
	}
	if watched {
		r.dropsMu.Lock()
		for _, t := range tenants {
			if b, ok := r.idle.Peek(t); ok {
				r.idle.Remove(t)
				r.idleBytes -= b
			}
		}
		r.dropsMu.Unlock()
		for _, t := range tenants {
			r.followIfWatched(ctx, t)
		}
		return
	}
	// One timer per tenant (or for "", every tenant), reset by each
	// departure: clients coming and going quickly cost no more timers.
	r.dropsMu.Lock()
	defer r.dropsMu.Unlock()
	if ctx.Err() != nil {
		return
	}
	var evict []string
	for _, t := range tenants {
		if r.ringOwns(t) || r.store.Watched(t) || r.store.Watched("") {
			continue
		}
		if b, ok := r.idle.Peek(t); ok {
			r.idleBytes -= b
		}
		b := r.fetcher.Bytes(t)
		r.idle.Add(t, b)
		r.idleBytes += b
	}
	for r.idleBytes > r.cfg.FetchCacheBytes {
		t, b, ok := r.idle.RemoveOldest()
		if !ok {
			break
		}
		r.idleBytes -= b
		evict = append(evict, t)
	}
	if len(evict) > 0 {
		go r.drop(ctx, evict, "the fetched snapshots no local client reads passed the cache bound")
	}
	if t := r.drops[tenant]; t != nil {
		t.Reset(r.cfg.FetchGrace)
		return
	}
	if r.drops == nil {
		r.drops = map[string]*time.Timer{}
	}
	r.drops[tenant] = time.AfterFunc(r.cfg.FetchGrace, func() {
		r.dropsMu.Lock()
		delete(r.drops, tenant)
		for _, t := range tenants {
			if b, ok := r.idle.Peek(t); ok {
				r.idle.Remove(t)
				r.idleBytes -= b
			}
		}
		r.dropsMu.Unlock()
		r.drop(ctx, tenants, "no local client left")
	})
}

// drop forgets the fetched (or adopted) snapshots of the tenants no local
// client reads.
func (r *Replica) drop(ctx context.Context, tenants []string, why string) {
	if ctx.Err() != nil {
		return
	}
	for _, t := range tenants {
		r.dropUnwatched(t, why)
	}
}

// dropUnwatched forgets tenant's fetched snapshot and stops following it,
// if no local client watches it: the check and the removal are one step
// in the store, and following and dropping exclude each other (followMu),
// so a client that comes meanwhile either keeps the snapshot or has the
// tenant followed again once it is dropped; it never waits on a tenant
// removed and not followed.
func (r *Replica) dropUnwatched(t, why string) {
	r.followMu.Lock()
	defer r.followMu.Unlock()
	if r.ringOwns(t) || !r.store.RemoveUnwatched(t) {
		return
	}
	r.unadopt(t)
	r.fetcher.Stop(t)
	r.log.Debug("dropped a fetched snapshot", "tenant", t, "why", why)
}

// stopDrops stops the pending drop timers.
func (r *Replica) stopDrops() {
	r.dropsMu.Lock()
	defer r.dropsMu.Unlock()
	for t, timer := range r.drops {
		timer.Stop()
		delete(r.drops, t)
	}
}

// holdsEveryTenant says whether the store has a snapshot of every tenant
// of the mesh: built here, or fetched from its owner.
func (r *Replica) holdsEveryTenant() bool {
	for _, t := range r.mesh.Tenants() {
		if r.store.Current(t) == nil {
			return false
		}
	}
	return true
}

// memberList is /debug/members: the ring's members, what each reported,
// and how many of the mesh's tenants each owns.
func (r *Replica) memberList() []admin.Member {
	ring := r.ring.Load()
	if ring == nil {
		return nil
	}
	var loads map[string]int
	if l, ok := r.members.(sharding.Loads); ok {
		loads = l.Loads()
	}
	owned := map[string]int{}
	for _, t := range r.mesh.Tenants() {
		if o, ok := ring.Owner(t); ok {
			owned[o.ID]++
		}
	}
	out := []admin.Member{}
	for _, m := range ring.Members() {
		row := admin.Member{ID: m.ID, Addr: m.Addr, Self: m.ID == r.cfg.ReplicaID, Owns: owned[m.ID]}
		if n, ok := loads[m.ID]; ok {
			row.Streams = &n
		}
		if row.Self {
			n := r.xds.ProxyStreams()
			row.Streams = &n
		}
		out = append(out, row)
	}
	return out
}
