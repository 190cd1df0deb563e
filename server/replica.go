package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"

	"github.com/xdshard/xdshard/server/admin"
	"github.com/xdshard/xdshard/server/xds"
	"github.com/xdshard/xdshard/sharding"
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/builder"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/translate"
)

// Config is everything a replica is told. Source and XDSAddr are required.
type Config struct {
	Source    model.Source
	XDSAddr   string // HOST:PORT; port 0 picks a free one
	AdminAddr string // HOST:PORT of the admin HTTP server; "" for none
	Debounce  time.Duration
	MaxDelay  time.Duration
	History   int // snapshot versions kept per tenant; 0 for snapshot.DefaultHistory
	// PushConcurrency bounds the streams encoding and sending at once.
	PushConcurrency int
	Logger          *slog.Logger
	// Registry receives every metric; nil for a new one with the Go and
	// process collectors.
	Registry *prometheus.Registry
	// Build turns a tenant's view into its snapshot; nil for
	// translate.Compose, which is what xdshard serves.
	Build builder.BuildFunc

	// Sharding: with Peers (every replica, this one included), this
	// replica builds only the tenants the rendezvous ring gives it and
	// fetches the others' snapshots from their owners over delta ADS;
	// PeerAddr is where it serves its own tenants' snapshots to the
	// others. Without Peers it builds every tenant.
	ReplicaID string
	PeerAddr  string
	Peers     []sharding.Member
	// Membership, when set, says who the replicas are as they come and go
	// (Kubernetes Leases), instead of the static Peers; the caller runs it.
	Membership sharding.Membership
	// FetchGrace is how long a fetched snapshot stays after its last local
	// client left, so a reconnect does not fetch it again. Default 30 s.
	FetchGrace time.Duration
	// FetchCacheBytes bounds the fetched snapshots kept through their
	// grace period with no local client: past it, the least recently left
	// go at once. Default 256 MiB.
	FetchCacheBytes int64
	// Balance is how often the replica compares its proxy streams with
	// its share (ceil(streams/members x 1.1)) and sheds a few of the
	// surplus; 0 for every second, negative for never. It needs a
	// membership that reports every member's streams (Leases).
	Balance time.Duration
}

// ProblemRecorder is a source that records problems where its users look
// for them (the Kubernetes source records an Event on the object). Each
// problem is handed to it once, when it appears.
type ProblemRecorder interface {
	Problem(snapshot.Diagnostic)
}

// SnapshotSink is a source that acts on what is built (the Kubernetes
// source applies the generated NetworkPolicies). It is told of each
// tenant's snapshot after every successful build, and of nil when the
// tenant is gone; never of a failed build.
type SnapshotSink interface {
	Built(tenant string, snap *snapshot.Snapshot)
}

// Replica is one running xdshard: source, model, builder, store, and the
// xDS and admin servers, started by Start and stopped by its context or
// Close.
type Replica struct {
	cfg       Config
	log       *slog.Logger
	reg       *prometheus.Registry
	problems  *problems
	mesh      *model.Mesh
	store     *snapshot.Store
	builder   *builder.Builder
	xds       *xds.Server
	grpc      *grpc.Server
	http      *http.Server
	peerGRPC  *grpc.Server
	fetcher   *sharding.Fetcher
	ring      atomic.Pointer[sharding.Ring]
	dropsMu   sync.Mutex
	drops     map[string]*time.Timer        // tenant -> when its fetched snapshot goes
	idle      *simplelru.LRU[string, int64] // fetched tenants no local client reads, by bytes; under dropsMu
	idleBytes int64
	adoptMu   sync.Mutex
	adopted   map[string]string // tenant -> its unreachable owner, built here meanwhile
	members   sharding.Membership
	handovers prometheus.Counter
	builds    *prometheus.CounterVec
	xdsConns  *connTracker

	xdsAddr, adminAddr string
	synced             chan struct{} // closed once the first full state is built
	errc               chan error    // a stage that ended on its own
	cancel             context.CancelFunc
	done               sync.WaitGroup
	closeOnce          sync.Once
}

// Start opens the listeners and starts the pipeline. It returns once both
// ports are bound; readiness (Synced) follows the source's first full state.
func Start(ctx context.Context, cfg Config) (*Replica, error) {
	if cfg.Source == nil {
		return nil, errors.New("server: Config.Source is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
		cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if cfg.History <= 0 {
		cfg.History = snapshot.DefaultHistory
	}
	if cfg.Build == nil {
		cfg.Build = translate.Compose
	}
	r := &Replica{cfg: cfg, log: cfg.Logger, reg: cfg.Registry, mesh: model.NewMesh(), store: snapshot.NewStore(cfg.History),
		synced: make(chan struct{}), errc: make(chan error, 4)}
	var appeared func(snapshot.Diagnostic)
	if rec, ok := cfg.Source.(ProblemRecorder); ok {
		appeared = rec.Problem
	}
	if st, ok := cfg.Source.(interface{ Staleness() time.Duration }); ok {
		_ = cfg.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xdshard_source_stale_seconds",
			Help: "How long the config source (the Kubernetes API server) has not answered; 0 while it answers. The last config read keeps serving."},
			func() float64 { return st.Staleness().Seconds() }))
	}
	r.problems = newProblems(r.log, r.reg, appeared)
	r.builds = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xdshard_tenant_builds_total",
		Help: "Tenant builds run by this replica, by result (ok, failed). Summed over the replicas of a sharded deployment, each change costs one build per affected tenant."}, []string{"result"})
	r.reg.MustRegister(r.builds)
	identity := cfg.ReplicaID
	if identity == "" {
		identity, _ = os.Hostname()
	}
	xopts := xds.Options{Resolver: r.mesh, Logger: r.log, Registry: r.reg, PushConcurrency: cfg.PushConcurrency, Identity: "xdshard-" + identity}
	if len(cfg.Peers) > 0 || cfg.Membership != nil {
		xopts.MCPComplete = r.holdsEveryTenant
	}
	r.xds = xds.New(r.store, xopts)
	bopts := builder.Options{
		Debounce: cfg.Debounce, MaxDelay: cfg.MaxDelay, Build: cfg.Build, Logger: r.log, Observe: r.xds.Metrics().Stage,
		OnBuild: r.built,
	}
	runCtx, cancel := context.WithCancel(ctx)
	r.cancel = cancel
	if len(cfg.Peers) > 0 || cfg.Membership != nil {
		if err := r.shard(runCtx, &bopts); err != nil {
			cancel()
			return nil, err
		}
	}
	r.builder = builder.New(r.mesh, r.store, bopts)
	if r.members != nil && r.members.Changes() != nil {
		go r.followMembers(runCtx, r.members, r.members.Changes())
	}
	if loads, ok := r.members.(sharding.Loads); ok && cfg.Balance >= 0 {
		loads.ReportStreams(r.xds.ProxyStreams)
		go r.balance(runCtx, loads)
	}
	xdsLis, err := net.Listen("tcp", cfg.XDSAddr)
	if err != nil {
		cancel()
		if r.peerGRPC != nil {
			r.peerGRPC.Stop()
		}
		return nil, fmt.Errorf("xDS address %s: %w (is another xdshard running? pick a free port)", cfg.XDSAddr, err)
	}
	r.xdsConns = newConnTracker(xdsLis)
	xdsLis = r.xdsConns
	r.xdsAddr = xdsLis.Addr().String()
	var adminLis net.Listener
	if cfg.AdminAddr != "" {
		if adminLis, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			cancel()
			if r.peerGRPC != nil {
				r.peerGRPC.Stop()
			}
			xdsLis.Close()
			return nil, fmt.Errorf("admin address %s: %w (pick a free port)", cfg.AdminAddr, err)
		}
		r.adminAddr = adminLis.Addr().String()
	}
	r.grpc = grpc.NewServer(xds.GRPCOptions()...)
	r.xds.Register(r.grpc)

	r.goStage(func() error { return r.runSource(runCtx) })
	r.goStage(func() error { return r.builder.Run(runCtx) })
	r.goStage(func() error { return r.serveXDS(runCtx, xdsLis) })
	if adminLis != nil {
		r.http = &http.Server{Handler: r.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
		r.goStage(func() error {
			if err := r.http.Serve(adminLis); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("admin server: %w", err)
			}
			return nil
		})
	}
	go func() { <-runCtx.Done(); r.stop() }()
	return r, nil
}

func (r *Replica) goStage(f func() error) {
	r.done.Add(1)
	go func() {
		defer r.done.Done()
		if err := f(); err != nil {
			r.errc <- err
		}
	}()
}

// runSource feeds the builder from the source. The first full state is
// built at once, so the first clients get config without waiting for a
// debounce; every later event is debounced per tenant.
func (r *Replica) runSource(ctx context.Context) error {
	first := true
	err := r.cfg.Source.Run(ctx, func(ev model.Event) {
		for file, d := range ev.Diagnostics {
			r.builder.SetDiagnostics(file, d)
			r.problems.set("source "+file, d)
		}
		if !first || !ev.Synced {
			r.builder.Apply(ev.Changes)
			return
		}
		first = false
		start := time.Now()
		r.mesh.Apply(ev.Changes)
		if err := r.builder.BuildAll(); err != nil {
			// Content never stops the process: the failed tenants are
			// shown in /debug/tenantz and retried on their next change.
			r.log.Error("first build: some tenants failed; serving the others", "err", err)
		}
		r.log.Info("config read and built", "tenants", len(r.store.Tenants()), "objects", len(ev.Changes), "took", time.Since(start).Round(time.Millisecond))
		close(r.synced)
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("config source: %w", err)
	}
	return nil
}

// serveXDS opens the xDS port once the first full state is built, as
// istiod waits for its caches: a proxy connecting earlier would be refused
// as a member of no tenant. Until then its connection waits in the backlog.
func (r *Replica) serveXDS(ctx context.Context, lis net.Listener) error {
	select {
	case <-r.synced:
	case <-ctx.Done():
		return lis.Close()
	}
	if err := r.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("xDS server: %w", err)
	}
	return nil
}

// built records a build's diagnostics and outcome for status and health.
func (r *Replica) built(tenant string, snap *snapshot.Snapshot, err error) {
	scope := "tenant " + tenant
	switch {
	case err != nil:
		r.builds.WithLabelValues("failed").Inc()
	case snap != nil:
		r.builds.WithLabelValues("ok").Inc()
	}
	switch {
	case err != nil:
		r.problems.buildFailed(tenant, err.Error())
	case snap == nil:
		r.problems.buildFailed(tenant, "")
		r.problems.set(scope, nil)
	default:
		r.problems.buildFailed(tenant, "")
		r.problems.set(scope, snap.Diagnostics)
	}
	if sink, ok := r.cfg.Source.(SnapshotSink); ok && err == nil {
		sink.Built(tenant, snap)
	}
}

func (r *Replica) adminHandler() http.Handler {
	return admin.Handler(admin.Options{
		Gatherer: r.reg,
		Ready:    r.Ready,
		Health:   r.Health,
		Clients:  func() any { return r.xds.Clients() },
		Store:    r.store,
		Failures: r.builder.Failures,
		MeshWide: r.problems.meshWide,
		Owner:    r.origin,
	})
}

// Health says whether the replica serves all of its config ("serving") or
// serves with problems ("degraded"), and the reasons. Readiness does not
// follow it: proxies must keep their config while an operator fixes it.
func (r *Replica) Health() (status string, reasons []string) {
	if ok, why := r.Ready(); !ok {
		return "starting", []string{why}
	}
	return r.problems.health()
}

// Ready reports whether the replica serves config, and if not, why.
func (r *Replica) Ready() (bool, string) {
	select {
	case <-r.synced:
	default:
		return false, "the config source has not been read yet"
	}
	// Sharded, a replica serves only once it knows who owns what (the
	// builds above were of the tenants the ring gave it).
	if ring := r.ring.Load(); ring != nil && len(ring.Members()) == 0 {
		return false, "no member of the deployment is known yet (Leases not read)"
	}
	return true, ""
}

// Synced is closed once the source's first full state is built and the
// xDS port serves.
func (r *Replica) Synced() <-chan struct{} { return r.synced }

// Wait blocks until the replica stops: its context ends (nil) or a stage
// fails (that error). Either way everything is stopped when it returns.
func (r *Replica) Wait(ctx context.Context) error {
	var err error
	select {
	case <-ctx.Done():
	case err = <-r.errc:
	}
	r.Close()
	return err
}

// Close stops the replica and waits for its stages to end.
func (r *Replica) Close() {
	r.cancel()
	r.stop()
	r.done.Wait()
}

func (r *Replica) stop() {
	r.closeOnce.Do(func() {
		r.cancel()
		r.xds.Close()
		r.grpc.GracefulStop()
		if r.peerGRPC != nil {
			r.peerGRPC.Stop()
		}
		if r.fetcher != nil {
			r.stopDrops()
			r.fetcher.Close()
		}
		if r.http != nil {
			_ = r.http.Close()
		}
	})
}

// XDSAddr is the bound xDS address.
func (r *Replica) XDSAddr() string { return r.xdsAddr }

// AdminAddr is the bound admin address, "" without one.
func (r *Replica) AdminAddr() string { return r.adminAddr }

// Tenants lists the tenants served.
func (r *Replica) Tenants() []string { return r.store.Tenants() }

// Store is the replica's snapshot store.
func (r *Replica) Store() *snapshot.Store { return r.store }

// Registry holds the replica's metrics.
func (r *Replica) Registry() *prometheus.Registry { return r.reg }

// Idle reports whether no change waits for or is in a build.
func (r *Replica) Idle() bool { return r.builder.Idle() }

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
	peers := xds.New(r.store, xds.Options{Resolver: r.mesh, Logger: r.log, Registry: r.reg, Peers: true,
		Limits: xds.Limits{Names: 1 << 22}})
	r.peerGRPC = grpc.NewServer(xds.GRPCOptions()...)
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
		r.log.Info("a tenant's owner answers again; serving its copy", "tenant", tenant, "owner", r.Owner(tenant))
	}
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
			r.unadopt(t) // the new owner is followed afresh (and adopted again if it does not answer)
			switch {
			case r.owns(t):
				r.fetcher.Stop(t)
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
		if r.ringOwns(t) || r.store.Watched(t) || r.store.Watched("") {
			continue
		}
		r.unadopt(t)
		r.fetcher.Stop(t)
		r.store.Remove(t)
		r.log.Debug("dropped a fetched snapshot", "tenant", t, "why", why)
	}
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
