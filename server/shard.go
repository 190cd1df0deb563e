package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/xdshard/xdshard/identity"
	"github.com/xdshard/xdshard/server/admin"
	"github.com/xdshard/xdshard/server/xds"
	"github.com/xdshard/xdshard/sharding"
	"github.com/xdshard/xdshard/snapshot/builder"
)

// shard sets the replica up as one of its members: the sharding policy
// (sharding.Ownership: which tenants are built here, which are followed
// from their owners, how they move) is wired to the builder, the store
// and a peer face that serves this replica's tenants to the others.
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
	received := prometheus.NewCounter(prometheus.CounterOpts{Name: "xdshard_peer_received_bytes_total", Help: "Resource bytes this replica received from tenants' owners."})
	fetchTime := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "xdshard_peer_fetch_seconds",
		Help: "Time from following a tenant's owner to holding its whole snapshot.", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)})
	handovers := prometheus.NewCounter(prometheus.CounterOpts{Name: "xdshard_handovers_total", Help: "Tenants whose owner changed, as this replica saw membership change."})
	r.reg.MustRegister(received, fetchTime, handovers)
	var creds credentials.TransportCredentials
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS.ClientConfig(r.peerIdentities()))
	}
	r.own = sharding.NewOwnership(ctx, sharding.OwnershipConfig{
		Self: cfg.ReplicaID, Store: r.store, Members: members.Members(), Logger: r.log, Creds: creds,
		Fetch: sharding.FetchObserver{
			Received: func(n int) { received.Add(float64(n)) },
			Fetched:  func(d time.Duration) { fetchTime.Observe(d.Seconds()) },
		},
		Grace: cfg.FetchGrace, CacheBytes: cfg.FetchCacheBytes, Registry: r.reg, Tenants: r.mesh.Tenants,
		Rebuild: func(tenants []string) {
			if r.builder != nil {
				r.builder.Rebuild(tenants)
			}
		},
		Owning:   r.restoreKept,
		Handover: func(string) { handovers.Inc() },
	})
	r.members = members
	// The peer face shares the replica's metrics: peer streams count as
	// pilot_xds{view="peer"}, and their pushes as type "other".
	// A peer names every resource of a tenant's snapshot when it
	// reconnects (initial versions): more than a proxy's names limit for a
	// large tenant, so the peer face allows that many.
	popts := xds.Options{Resolver: r.mesh, Logger: r.log, Registry: r.reg, Peers: true, PeerServes: r.own.BuiltSinceOwned, Limits: xds.Limits{Names: 1 << 22,
		// A peer names a whole tenant, and one connection carries every
		// tenant a replica follows: no client budget applies.
		SubscriptionBytes: 1 << 40, ConnSubscriptionBytes: 1 << 40, IdentitySubscriptionBytes: 1 << 40}}
	if cfg.TLS != nil {
		// Peers prove who they are with their certificates only.
		popts.Access = xds.Access{Authenticate: (&identity.Authenticator{}).Authenticate, Peers: r.peerIdentities()}
	}
	peers := xds.New(r.store, popts)
	r.peers = peers
	r.xds.JudgeWithPeers(peers) // other replicas' canaries count in this replica's rollouts
	r.peerGRPC = grpc.NewServer(r.grpcOptions(true)...)
	peers.Register(r.peerGRPC)
	r.goStage(func() error {
		if err := r.peerGRPC.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("peer server: %w", err)
		}
		return nil
	})
	r.goTracked(func() { <-ctx.Done(); peers.Close() })
	bopts.Owns = r.own.Owns
	bopts.Foreign = r.own.Foreign
	r.store.OnInterest(r.own.Interest)
	fetcher := r.own.Fetcher()
	r.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xdshard_members", Help: "Replicas this replica shards tenants with, itself included."},
			func() float64 { return float64(len(r.own.Ring().Members())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xdshard_remote_snapshots", Help: "Tenants whose snapshot this replica follows from their owner, for its local clients."},
			func() float64 { return float64(fetcher.Following()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xdshard_remote_snapshot_bytes", Help: "Resource bytes of the snapshots this replica follows from their owners."},
			func() float64 { return float64(fetcher.Bytes("")) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xdshard_adopted_tenants", Help: "Tenants this replica builds because their owner does not answer (until it does, or membership moves them)."},
			func() float64 { return float64(r.own.Adopted()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xdshard_owned_tenants", Help: "Tenants this replica builds."},
			func() float64 {
				n := 0
				for _, t := range r.mesh.Tenants() {
					if r.own.Owns(t) {
						n++
					}
				}
				return float64(n)
			}))
	r.log.Info("sharding", "replica", cfg.ReplicaID, "members", len(members.Members()), "peer-addr", lis.Addr().String())
	return nil
}

// sharded says whether this replica is one of a sharded deployment.
func (r *Replica) sharded() bool { return r.own != nil }

// ringOwns says whether the ring gives tenant to this replica (every
// tenant, unsharded).
func (r *Replica) ringOwns(tenant string) bool { return r.own == nil || r.own.RingOwns(tenant) }

// Owner names the replica that builds tenant ("" without sharding).
func (r *Replica) Owner(tenant string) string {
	if r.own == nil {
		return ""
	}
	return r.own.Owner(tenant)
}

// origin is tenantz's owner and origin of this replica's copy of tenant.
func (r *Replica) origin(tenant string) (owner, origin string) {
	if r.own == nil {
		return "", ""
	}
	return r.own.Origin(tenant)
}

// balance sheds this replica's surplus of proxy streams until ctx ends.
func (r *Replica) balance(ctx context.Context, loads sharding.Loads) {
	foreign := func(t string) bool { return !r.own.RingOwns(t) }
	b := &sharding.Balancer{Self: r.cfg.ReplicaID, Every: r.cfg.Balance, Settle: r.cfg.BalanceSettle, Loads: loads, Logger: r.log,
		Affinity: r.cfg.StreamAffinity, Foreign: func() int { return r.xds.ProxyStreamsOf(foreign) },
		Members: func() []sharding.Member { return r.own.Ring().Members() },
		Streams: r.xds.ProxyStreams,
		Shed: func(n int) {
			// Unavailable, so their clients dial again through the Service.
			// The streams of tenants owned elsewhere go first: they drift
			// toward their owners, where nothing is fetched for them.
			for _, remote := range r.xds.Shed(n, foreign) {
				r.xdsConns.closeLater(remote, 500*time.Millisecond)
			}
		}}
	b.Run(ctx)
}

// memberList is /debug/members: the ring's members, what each reported,
// and how many of the mesh's tenants each owns.
func (r *Replica) memberList() []admin.Member {
	if r.own == nil {
		return nil
	}
	ring := r.own.Ring()
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
