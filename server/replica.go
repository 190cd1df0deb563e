package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"k8s.io/apimachinery/pkg/labels"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"

	"github.com/xdshard/xdshard/identity"
	"github.com/xdshard/xdshard/identity/tokenreview"
	"github.com/xdshard/xdshard/opstate"
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
	// PushSlotUntilAnswered holds a stream's push slot until its client
	// answers what it was sent (xds.Options.PushSlotUntilAnswered).
	PushSlotUntilAnswered bool
	// SendTimeout closes the connection of a client that has not taken a
	// response within it (xds.Options.SendTimeout).
	SendTimeout time.Duration
	// Limits bound what a proxy may make the replica hold (zero fields:
	// xds's defaults).
	Limits xds.Limits
	// FullSotW sends every subscribed resource in each state-of-the-world
	// EDS and RDS response (xds.Options.FullSotW).
	FullSotW bool
	Logger   *slog.Logger
	// Registry receives every metric; nil for a new one with the Go and
	// process collectors.
	Registry *prometheus.Registry
	// Build turns a tenant's view into its snapshot; nil for
	// translate.Compose, which is what xdshard serves (with its endpoint
	// fast lane, translate.Incremental).
	Build builder.BuildFunc
	// BuildEndpoints, with Build, builds a tenant whose changes are all
	// endpoints (builder.Options.BuildEndpoints); nil: Build. Forget, if
	// set, is told of a tenant that is gone, so what BuildEndpoints keeps
	// of it goes too.
	BuildEndpoints builder.BuildFunc
	Forget         func(tenant string)

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
	// State keeps the decisions about tenants (pins and the candidates a
	// rollout took back) beyond this process: loaded before the first
	// build, and written by the tenant's owner as they are made. Nil:
	// they live in memory, and with the peers that fetch them.
	State opstate.Keeper
	// FetchGrace is how long a fetched snapshot stays after its last local
	// client left, so a reconnect does not fetch it again. Default 30 s.
	FetchGrace time.Duration
	// FetchCacheBytes bounds the fetched snapshots kept through their
	// grace period with no local client: past it, the least recently left
	// go at once. Default 256 MiB.
	FetchCacheBytes int64
	// MCPAddr is where istiod's config-source (MCP) streams are served,
	// and nowhere else; "" serves none. istiod proves no identity to a
	// config source, so this port asks for none: the network protects it
	// (see xds.Server.RegisterMCP).
	MCPAddr string
	// TLS, when set, serves the xDS, peer and admin ports over TLS with
	// these (reloaded) certificates, and clients are who they prove to be:
	// a client certificate's SPIFFE identity, or a service-account token
	// verified by Tokens. A proxy reads only its own namespace's tenant,
	// replicas (PeerIdentities, default this replica's own identity) alone
	// fetch snapshots, and off loopback the admin port answers
	// AdminReaders (default the system namespace's identities) only. The
	// MCP port serves TLS with the same certificate and asks for no client
	// certificate. Without TLS, nodes' claims are trusted: loopback, or
	// --insecure.
	TLS            *identity.Certs
	Tokens         identity.TokenVerifier
	PeerIdentities identity.AllowList
	AdminReaders   identity.AllowList
	// AdminWriters may roll back and unpin beyond loopback (over TLS);
	// default nobody: write calls then come from loopback only.
	AdminWriters identity.AllowList
	// AdminPprof serves /debug/pprof on an admin address beyond loopback
	// too (always on loopback).
	AdminPprof bool
	// Rollout, with a Percent, serves each tenant's new version to that
	// share of its proxies first (canaries, by node ID hash), promotes it
	// once they all accepted it and Bake passed, and takes it back at once
	// if one rejects it.
	Rollout xds.Rollout
	// Drain is how long Wait, when its context ends (SIGTERM), spreads the
	// end of the streams over: readiness fails at once, no new stream is
	// taken (GOAWAY), and each stream ends at a random moment within it,
	// so clients reconnect elsewhere gradually. 0 ends them all at once.
	Drain time.Duration
	// MaxConnectionAge, when set, sends GOAWAY to a connection after about
	// this long (gRPC adds jitter), and closes it 10 s later: long-lived
	// streams move, through the Service, and replicas stay balanced.
	MaxConnectionAge time.Duration
	// MaxConnections bounds the xDS connections open at once; one more is
	// closed as soon as it is accepted. 0 for DefaultMaxConnections.
	MaxConnections int
	// AdminRequireAuth asks admin callers for an identity on loopback too
	// (as beyond it); pprof then needs AdminPprof.
	AdminRequireAuth bool

	// Balance is how often the replica compares its proxy streams with
	// its share (ceil(streams/members x 1.1)) and sheds a few of the
	// surplus; 0 for every second, negative for never. It needs a
	// membership that reports every member's streams (Leases).
	Balance time.Duration
	// BalanceSettle is how long a surplus must last before a replica
	// sheds streams (the others' counts lag by up to a Lease renewal).
	BalanceSettle time.Duration
	// StreamAffinity also moves, at the balancing rate, the streams of
	// tenants owned elsewhere off a replica holding at least the mean,
	// so they settle on their tenants' owners (sharding.Balancer.Affinity).
	StreamAffinity bool
}

// DefaultMaxConnections bounds a replica's xDS connections by default
// (a sidecar holds one; a replica serves a few thousand).
const DefaultMaxConnections = 20000

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
	// Set by Start before anything runs, then only read.
	cfg      Config
	log      *slog.Logger
	reg      *prometheus.Registry
	name     string // "xdshard-<replica>", as istioctl's ISTIOD column says it
	problems *problems
	mesh     *model.Mesh
	store    *snapshot.Store
	builder  *builder.Builder
	xds      *xds.Server
	members  sharding.Membership // nil unless sharded
	own      *sharding.Ownership // the sharding policy; nil unless sharded
	builds   *prometheus.CounterVec
	pages    http.Handler // the admin pages, served in process to istio.io/debug

	// The servers and listeners, set by Start; Close stops them.
	grpc                        *grpc.Server
	mcpGRPC                     *grpc.Server // nil without an MCP address
	http                        *http.Server
	peerGRPC                    *grpc.Server
	peers                       *xds.Server // the peer face, with Peers: the streams of replicas fetching tenants from this one
	xdsConns                    *connTracker
	xdsAddr, mcpAddr, adminAddr string

	// Decisions kept beyond a former process about tenants owned
	// elsewhere at start, restored if this replica comes to build them.
	keptMu sync.Mutex
	kept   map[string]opstate.Decision

	// Lifecycle.
	draining  atomic.Bool
	synced    chan struct{} // closed once the first full state is built
	errc      chan error    // a stage that ended on its own
	cancel    context.CancelFunc
	done      sync.WaitGroup
	closeOnce sync.Once
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
		cfg.Registry = NewRegistry()
	}
	if cfg.History <= 0 {
		cfg.History = snapshot.DefaultHistory
	}
	if cfg.Build == nil {
		inc := translate.NewIncremental(translate.Options{Registry: cfg.Registry})
		cfg.Build, cfg.BuildEndpoints, cfg.Forget = inc.Build, inc.BuildEndpoints, inc.Forget
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
	if rl, ok := cfg.Source.(interface{ Relists() uint64 }); ok {
		_ = cfg.Registry.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "xdshard_source_relists_total",
			Help: "Times the config source (the Kubernetes API server) was read again whole after an outage, each counted once what changed meanwhile was handed to the builder."},
			func() float64 { return float64(rl.Relists()) }))
	}
	r.problems = newProblems(r.log, r.reg, appeared)
	r.builds = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xdshard_tenant_builds_total",
		Help: "Tenant builds run by this replica, by result (ok, failed). Summed over the replicas of a sharded deployment, each change costs one build per affected tenant."}, []string{"result"})
	r.reg.MustRegister(r.builds)
	if tr, ok := cfg.Tokens.(*tokenreview.Reviewer); ok {
		r.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "xdshard_token_reviews_total", Help: "TokenReviews this replica made of clients' service-account tokens."},
				func() float64 { return float64(tr.Stats().Reviews) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "xdshard_token_review_cache_hits_total", Help: "Tokens answered from the review cache or by a review under way."},
				func() float64 { return float64(tr.Stats().Hits) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xdshard_token_review_cached", Help: "Tokens in the review cache, verified and refused."},
				func() float64 { st := tr.Stats(); return float64(st.Cached + st.CachedRefused) }))
	}
	name := cfg.ReplicaID
	if name == "" {
		name, _ = os.Hostname()
	}
	r.name = "xdshard-" + name
	xopts := xds.Options{Resolver: r.mesh, Logger: r.log, Registry: r.reg, PushConcurrency: cfg.PushConcurrency, PushSlotUntilAnswered: cfg.PushSlotUntilAnswered, SendTimeout: cfg.SendTimeout, Limits: cfg.Limits, FullSotW: cfg.FullSotW, Identity: r.name,
		Rollout: cfg.Rollout, DebugPages: func(page string) ([]byte, error) { return r.debugPage(page) },
		// A fetched candidate's verdict goes back to its owner (sharded).
		CandidateVerdict: func(tenant, version string, accepted bool, why string) {
			if r.own != nil {
				r.own.Fetcher().Verdict(tenant, version, accepted, why)
			}
		}}
	if xopts.Rollout.Compile == nil {
		xopts.Rollout.Compile = labelMatcher
	}
	r.store.SetRollout(cfg.Rollout.On())
	if cfg.TLS != nil {
		r.secure()
		xopts.Access = xds.Access{Authenticate: (&identity.Authenticator{Tokens: cfg.Tokens}).Authenticate, DebugReaders: cfg.AdminReaders}
	}
	if len(cfg.Peers) > 0 || cfg.Membership != nil {
		xopts.MCPComplete = func() bool { return r.own.HoldsEveryTenant() }
	}
	// A send the client does not take in time closes its connection
	// (the tracker is made below, before anything is served).
	xopts.EndConn = func(remote string) { r.xdsConns.closeNow(remote) }
	r.xds = xds.New(r.store, xopts)
	bopts := builder.Options{
		Debounce: cfg.Debounce, MaxDelay: cfg.MaxDelay, Build: cfg.Build, BuildEndpoints: cfg.BuildEndpoints, Logger: r.log, Observe: r.xds.Metrics().Stage,
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
	r.pages = r.adminHandler(true)
	if r.members != nil && r.members.Changes() != nil {
		r.goTracked(func() { r.own.FollowMembers(runCtx, r.members) })
	}
	if loads, ok := r.members.(sharding.Loads); ok && cfg.Balance >= 0 {
		loads.ReportStreams(r.xds.ProxyStreams)
		r.goTracked(func() { r.balance(runCtx, loads) })
	}
	xdsLis, mcpLis, adminLis, err := listen(cfg)
	if err != nil {
		cancel()
		if r.peerGRPC != nil {
			r.peerGRPC.Stop()
		}
		return nil, err
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	refusedConns := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xdshard_refused_connections_total",
		Help: "xDS connections closed at once, by reason: too_many (--max-connections established), handshakes (1,024 handshakes under way)."}, []string{"reason"})
	r.reg.MustRegister(refusedConns)
	r.xdsConns = newConnTracker(xdsLis, cfg.MaxConnections, func(reason string) {
		refusedConns.WithLabelValues(reason).Inc()
		r.log.Warn("xDS connection refused", "reason", reason, "max", cfg.MaxConnections)
	})
	xdsLis = r.xdsConns
	r.xdsAddr = xdsLis.Addr().String()
	if adminLis != nil {
		r.adminAddr = adminLis.Addr().String()
	}
	xdsOpts := r.grpcOptions(false)
	if cfg.TLS != nil {
		xdsOpts = append(xdsOpts, grpc.Creds(countingCreds{r.creds(), r.xdsConns, r.xdsConns.refused}))
	} else {
		r.xdsConns.plain = true // nothing to handshake: counted when accepted
	}
	r.grpc = grpc.NewServer(xdsOpts...)
	r.xds.Register(r.grpc)

	if err := r.keepDecisions(runCtx); err != nil {
		cancel()
		if r.peerGRPC != nil {
			r.peerGRPC.Stop()
		}
		return nil, err
	}
	r.goStage(func() error { return r.runSource(runCtx) })
	// Always: a tenant's own setting (a Namespace annotation) can turn
	// rollout on whatever the replica's.
	r.goTracked(func() { r.xds.RunRollouts(runCtx, 200*time.Millisecond) })
	r.goStage(func() error { return r.builder.Run(runCtx) })
	r.goStage(func() error { return r.serveXDS(runCtx, r.grpc, xdsLis) })
	if mcpLis != nil {
		r.mcpAddr = mcpLis.Addr().String()
		r.mcpGRPC = grpc.NewServer(r.mcpGRPCOptions()...)
		r.xds.RegisterMCP(r.mcpGRPC)
		r.goStage(func() error { return r.serveXDS(runCtx, r.mcpGRPC, mcpLis) })
	}
	if adminLis != nil {
		// HTTP/1.1 and HTTP/2 (h2c in plaintext) on one address: the admin
		// gRPC service needs HTTP/2; curl and kubelet probes speak 1.1.
		protocols := new(http.Protocols)
		protocols.SetHTTP1(true)
		protocols.SetHTTP2(true)
		protocols.SetUnencryptedHTTP2(true)
		r.http = &http.Server{Handler: r.adminHandler(isLoopback(adminLis.Addr()) && !cfg.AdminRequireAuth), ReadHeaderTimeout: 10 * time.Second, Protocols: protocols}
		if cfg.TLS != nil {
			r.http.TLSConfig = cfg.TLS.ServerConfig()
			if !slices.Contains(r.http.TLSConfig.NextProtos, "h2") {
				r.http.TLSConfig.NextProtos = append([]string{"h2"}, r.http.TLSConfig.NextProtos...)
			}
			adminLis = tls.NewListener(adminLis, r.http.TLSConfig)
		}
		r.goStage(func() error {
			if err := r.http.Serve(adminLis); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("admin server: %w", err)
			}
			return nil
		})
	}
	if cfg.TLS != nil {
		r.goTracked(func() { cfg.TLS.Run(runCtx, 2*time.Second) })
	}
	r.goTracked(func() { <-runCtx.Done(); r.stop() })
	return r, nil
}

// goTracked runs f on a goroutine Close waits for: everything a replica
// starts ends before Close returns (goleak checks it in this package's
// tests).
func (r *Replica) goTracked(f func()) {
	r.done.Add(1)
	go func() {
		defer r.done.Done()
		f()
	}()
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
			if !ev.Seen.IsZero() && len(ev.Changes) > 0 {
				r.xds.Metrics().Stage("source", time.Since(ev.Seen))
			}
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
		if m, ok := r.members.(interface{ SetServing() }); ok {
			// Built what it owns: the other replicas may give it its
			// tenants now (they kept them meanwhile).
			m.SetServing()
		}
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("config source: %w", err)
	}
	return nil
}

// serveXDS opens the xDS (or MCP) port once the first full state is
// built, as istiod waits for its caches: a proxy connecting earlier would
// be refused as a member of no tenant, and an istiod would be sent an empty
// state and delete its config. Until then a connection waits in the backlog.
func (r *Replica) serveXDS(ctx context.Context, g *grpc.Server, lis net.Listener) error {
	select {
	case <-r.synced:
	case <-ctx.Done():
		return lis.Close()
	}
	if err := g.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("xDS server %s: %w", lis.Addr(), err)
	}
	return nil
}

// listen opens the replica's listeners: xDS, and MCP and admin when
// configured. On an error none is left open.
func listen(cfg Config) (xdsLis, mcpLis, adminLis net.Listener, err error) {
	var opened []net.Listener
	open := func(what, addr string) net.Listener {
		if err != nil || addr == "" {
			return nil
		}
		l, lerr := net.Listen("tcp", addr)
		if lerr != nil {
			err = fmt.Errorf("%s address %s: %w (is another xdshard running? pick a free port)", what, addr, lerr)
			return nil
		}
		opened = append(opened, l)
		return l
	}
	xdsLis, mcpLis, adminLis = open("xDS", cfg.XDSAddr), open("MCP", cfg.MCPAddr), open("admin", cfg.AdminAddr)
	if err != nil {
		for _, l := range opened {
			l.Close()
		}
		return nil, nil, nil, err
	}
	return xdsLis, mcpLis, adminLis, nil
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
		if r.cfg.Forget != nil {
			r.cfg.Forget(tenant)
		}
	default:
		r.problems.buildFailed(tenant, "")
		r.problems.set(scope, snap.Diagnostics)
	}
	if snap != nil && err == nil && r.own != nil && r.own.Built(tenant) {
		r.store.Wake(tenant) // peers waiting for this build (the store may not have changed)
	}
	if sink, ok := r.cfg.Source.(SnapshotSink); ok && err == nil {
		sink.Built(tenant, snap)
	}
}

func (r *Replica) adminHandler(loopback bool) http.Handler {
	var authorize func(*http.Request) (int, error)
	if !loopback {
		authorize = r.authorizeAdmin
	}
	return admin.Handler(admin.Options{
		Write:      func(req *http.Request) (int, error) { return r.authorizeWrite(req, loopback) },
		Rollback:   r.rollback,
		Unpin:      r.unpin,
		Rollout:    r.RolloutStatus,
		DNS:        r.diagnoseDNS,
		ConfigDump: r.xds.ConfigDump,
		Promote:    r.promote,
		Abort:      r.abort,
		Authorize:  authorize,
		Pprof:      loopback || r.cfg.AdminPprof,
		Gatherer:   r.reg,
		Ready:      r.Ready,
		Health:     r.Health,
		Clients:    r.xds.Clients,
		Replica:    r.name,
		Store:      r.store,
		Failures:   r.builder.Failures,
		MeshWide:   r.problems.meshWide,
		Owner:      r.origin,
		Members:    r.memberList,
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
	if r.draining.Load() {
		return false, "draining: shutting down, its streams move to other replicas"
	}
	select {
	case <-r.synced:
	default:
		return false, "the config source has not been read yet"
	}
	// Sharded, a replica serves only once it knows who owns what (the
	// builds above were of the tenants the ring gave it).
	if r.own != nil && len(r.own.Ring().Members()) == 0 {
		return false, "no member of the deployment is known yet (Leases not read)"
	}
	return true, ""
}

// Synced is closed once the source's first full state is built and the
// xDS port serves.
func (r *Replica) Synced() <-chan struct{} { return r.synced }

// Wait blocks until ctx ends (nil; the replica drains first, over
// Config.Drain) or a stage fails (that error). Either way everything is
// stopped when it returns.
func (r *Replica) Wait(ctx context.Context) error {
	var err error
	select {
	case <-ctx.Done():
		r.Drain(r.cfg.Drain)
	case err = <-r.errc:
	}
	r.Close()
	return err
}

// Drain makes the replica unready, takes no new streams (GOAWAY), and
// ends its streams at random moments within period; it returns when none
// is left or the period is over. The peer port keeps serving meanwhile,
// so replicas that fetch from this one move to the tenants' new owners in
// their own time.
func (r *Replica) Drain(period time.Duration) {
	if r.draining.Swap(true) {
		return
	}
	if period <= 0 {
		return
	}
	start := time.Now()
	r.goTracked(r.grpc.GracefulStop) // ended by stop's Stop, at the latest
	if r.mcpGRPC != nil {
		r.goTracked(r.mcpGRPC.GracefulStop)
	}
	r.xds.Drain(period)
	r.log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
}

// Close stops the replica and waits for everything it started to end.
func (r *Replica) Close() {
	r.cancel()
	r.stop()
	r.done.Wait()
}

func (r *Replica) stop() {
	r.closeOnce.Do(func() {
		r.cancel()
		r.xds.Close()
		// Streams whose client does not read stay in their send (the
		// send watchdog ends with r.xds): what graceful stopping has not
		// ended within a second is cut, so a stop never waits on a client.
		stopWithin(r.grpc, time.Second)
		if r.mcpGRPC != nil {
			r.mcpGRPC.Stop()
		}
		if r.peerGRPC != nil {
			r.peerGRPC.Stop()
		}
		if r.own != nil {
			r.own.Close()
		}
		if r.http != nil {
			_ = r.http.Close()
		}
	})
}

// stopWithin stops g gracefully, or at once where its handlers have not
// returned within d.
func stopWithin(g *grpc.Server, d time.Duration) {
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		g.Stop()
		<-done
	}
}

// XDSAddr is the bound xDS address.
func (r *Replica) XDSAddr() string { return r.xdsAddr }

// MCPAddr is the bound MCP address, "" without one.
func (r *Replica) MCPAddr() string { return r.mcpAddr }

// AdminAddr is the bound admin address, "" without one.
func (r *Replica) AdminAddr() string { return r.adminAddr }

// Tenants lists the tenants served.
func (r *Replica) Tenants() []string { return r.store.Tenants() }

// Store is the replica's snapshot store.
func (r *Replica) Store() *snapshot.Store { return r.store }

// NewRegistry is a registry with the Go runtime's and the process's
// collectors, as a replica's metrics start.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Registry holds the replica's metrics.
func (r *Replica) Registry() *prometheus.Registry { return r.reg }

// Idle reports whether no change waits for or is in a build.
func (r *Replica) Idle() bool { return r.builder.Idle() }

// PeerStreams lists the streams of the replicas fetching tenants from
// this one (view peer), as /debug/syncz lists proxies; none without
// sharding. Settled with one request more than its responses, a peer's
// stream has had every response it was sent published there (a replica
// acknowledges a response once it published what it carried).
func (r *Replica) PeerStreams() []xds.ClientStatus {
	if r.peers == nil {
		return nil
	}
	return r.peers.Clients()
}

// labelMatcher compiles a Kubernetes label selector (a rollout's canary
// selector) into a matcher of a proxy's labels.
func labelMatcher(selector string) (func(map[string]string) bool, error) {
	sel, err := labels.Parse(selector)
	if err != nil {
		return nil, err
	}
	return func(l map[string]string) bool { return sel.Matches(labels.Set(l)) }, nil
}
