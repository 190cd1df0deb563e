package xds

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/xdshard/xdshard/identity"
	"github.com/xdshard/xdshard/internal/cache"
	"github.com/xdshard/xdshard/internal/prio"
	"github.com/xdshard/xdshard/snapshot"
)

// MCPHandler serves a stream from istiod's config-source client (node
// metadata GENERATOR: api). first is the request that identified it.
type MCPHandler interface {
	StreamMCP(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer, first *discovery.DiscoveryRequest) error
}

// Options configure a Server. Resolver is required.
type Options struct {
	Resolver Resolver
	Logger   *slog.Logger
	// Registry receives the server's metrics; nil means a private one.
	Registry prometheus.Registerer
	// MCP serves istiod's config-source streams; nil uses the built-in
	// MCP server over the store's ViewMCP.
	MCP MCPHandler
	// PushConcurrency bounds the streams encoding and sending at once;
	// default DefaultPushConcurrency. A stream's sends give their slot
	// back once they take longer than slotHold (stream.go).
	PushConcurrency int
	// PushSlotUntilAnswered holds a stream's push slot after its sends
	// until its client answers them (ACK or NACK), slotHold (20 ms) from
	// the sends' start at most: what the server hands to gRPC ahead of its
	// clients is then bounded by the slots, and a backlog waits in the
	// ranked queue, where a narrow change goes first, rather than in HTTP/2
	// buffers. It costs the broad pushes: see docs/serving.md.
	PushSlotUntilAnswered bool
	// SendTimeout ends the connection of a client that has not taken a
	// response within it (Unavailable, counted as send_timeout), through
	// EndConn: a client that does not read holds nothing of the server's
	// longer than this. Default DefaultSendTimeout.
	SendTimeout time.Duration
	// EndConn closes the client connection of a remote address (the
	// replica's connection tracker); nil leaves sends unbounded.
	EndConn func(remote string)
	// Limits bound what a client may make the server hold or do.
	Limits Limits
	// Identity names this replica to istioctl (its ISTIOD column);
	// default "xdshard".
	Identity string
	// MCPComplete, when set, says whether the store holds every tenant's
	// snapshot. An MCP response is the full state of its type: istiod
	// deletes what is missing, so while a sharded replica still fetches
	// some tenants it answers no MCP request. Nil: always complete.
	MCPComplete func() bool
	// Peers makes this server the peer face: it serves other replicas
	// (nodes "xdshard-peer~ID" naming a TENANT in metadata) the tenants'
	// whole snapshots over delta ADS, and nothing else. A server without
	// it refuses peers.
	Peers bool
	// PeerServes, on the peer face, says whether a tenant's snapshot may
	// be given to peers now: its owner built it since it came to own it.
	// Until then a peer waits, keeping what it has (make before break):
	// what the store holds may be an old copy fetched from the former
	// owner, and peers must never step back to it. Nil serves at once.
	PeerServes func(tenant string) bool
	// Access authenticates clients and says what each may read; its zero
	// value trusts what nodes claim.
	Access Access
	// Rollout picks canary proxies and says how long a candidate bakes.
	Rollout Rollout
	// CandidateVerdict is told, for a candidate fetched from its owner
	// (snapshot.Store.PublishFetchedCandidate), what this replica's
	// canaries make of it: accepted (every canary here acknowledged it
	// and it baked here) or rejected, with why. The owner counts it as
	// it counts its own canaries. Nil: nobody is told.
	CandidateVerdict func(tenant, version string, accepted bool, why string)
	// FullSotW makes every state-of-the-world EDS and RDS response carry
	// every subscribed resource, as go-control-plane does, for clients
	// that take such a response as the whole state. By default a client
	// that ACKed the type's last response is sent only the resources that
	// changed since (partial.go), as istiod does for endpoints.
	FullSotW bool
	// DebugPages answers `istioctl x internal-debug PAGE` (type
	// istio.io/debug): the page's body, as the admin port serves it.
	DebugPages func(page string) ([]byte, error)
}

// PeerNodePrefix starts the node ID of a replica fetching a snapshot
// (the peer exchange's, defined with its format).
const PeerNodePrefix = snapshot.PeerNodePrefix

// MaxRequestBytes bounds one request on a proxy port. The peer port
// allows PeerMaxRequestBytes: a peer names every resource of a tenant it
// holds when it reconnects.
const (
	MaxRequestBytes     = 4 << 20
	PeerMaxRequestBytes = 64 << 20
)

// DefaultPushConcurrency is istiod's default PILOT_PUSH_THROTTLE.
const DefaultPushConcurrency = 100

// DefaultSendTimeout is how long a response may wait for the client to
// take it (gRPC flow control) before its stream is ended.
const DefaultSendTimeout = 5 * time.Second

// Server serves a snapshot.Store over ADS.
type Server struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer

	store   *snapshot.Store
	opts    Options
	log     *slog.Logger
	cache   *responseCache
	lists   *nameLists // subscriptions' name lists, shared by the streams that ask alike
	metrics *Metrics
	nextID  atomic.Uint64
	limits  Limits
	refused refusals
	pushSem *prio.Sem // a slot per stream encoding and sending, narrow changes first
	budgets *budgets  // names held per client connection and identity

	// Test hooks, set by tests before the first stream: testSendHook runs
	// before each send,
	// testEncodeHook before each state-of-the-world encode.
	// testPushHook each time a send loop looks for what is due.
	testSendHook, testEncodeHook, testPushHook func()
	// slotHold is how long a stream may hold its push slot from its
	// sends' start (slotHold; a test sets it before the first stream).
	slotHold time.Duration

	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	conns map[*conn]struct{}
	// selectors caches parsed canary selectors by their text (config, not clients, writes them)
	selectors sync.Map
	// peerFace is the replica's peer face, whose candidate streams
	// RunRollouts counts (JudgeWithPeers).
	peerFace atomic.Pointer[Server]
}

// New returns a Server over store.
func New(store *snapshot.Store, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Identity == "" {
		opts.Identity = "xdshard"
	}
	if opts.PushConcurrency <= 0 {
		opts.PushConcurrency = DefaultPushConcurrency
	}
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = DefaultSendTimeout
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		store: store, opts: opts, log: opts.Logger, limits: opts.Limits.withDefaults(),
		metrics: newMetrics(opts.Registry), ctx: ctx, cancel: cancel, conns: map[*conn]struct{}{},
		pushSem: prio.New(opts.PushConcurrency), slotHold: slotHold,
	}
	name := "sotw_responses"
	if opts.Peers {
		name = "peer_responses"
	}
	s.cache = newResponseCache(s.limits.CacheBytes, cache.NewMetrics(opts.Registry, name))
	if !opts.Peers {
		s.lists = newNameLists(cache.NewMetrics(opts.Registry, "subscriptions"))
	}
	s.budgets = newBudgets()
	go s.watchSends()
	s.refused = newRefusals(opts.Registry, opts.Logger)
	if s.opts.MCP == nil {
		s.opts.MCP = newMCPServer(s)
	}
	return s
}

// Register adds the ADS service to g.
func (s *Server) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, s)
}

// GRPCOptions are the options xdshard's gRPC server needs: the codec that
// sends shared encoded responses, and a keepalive policy that permits
// istiod's 30 s pings (grpc-go's default would close its stream after about
// two minutes with too_many_pings).
func GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(newCodec()),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.MaxConcurrentStreams(Limits{}.withDefaults().StreamsPerConn),
		// A request larger than this is refused by gRPC (ResourceExhausted)
		// before it is decoded: a proxy's requests are a few KiB, and the
		// names and node limits below bound them far lower.
		grpc.MaxRecvMsgSize(MaxRequestBytes),
	}
}

// Metrics returns the server's metrics, for builders to observe stages.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Close ends every stream. The gRPC server itself is the caller's to stop.
func (s *Server) Close() { s.cancel() }

// bind resolves the tenant of a stream's node and registers the stream.
func (s *Server) bind(node *core.Node, delta bool, id *identity.Identity) (c *conn, err error) {
	defer func() {
		if err != nil {
			s.log.Debug("stream refused", "node", node.GetId(), "err", err)
		}
	}()
	if node == nil {
		return nil, s.refused.refuse("no_node", codes.InvalidArgument, "the first request carries no node; send the node (id and metadata) on the first request")
	}
	if err := s.checkNodeSize(node); err != nil {
		return nil, err
	}
	if isPeer := strings.HasPrefix(node.GetId(), PeerNodePrefix); isPeer != s.opts.Peers {
		if isPeer {
			return nil, s.refused.refuse("wrong_port", codes.PermissionDenied, "xdshard peers fetch snapshots on the peer port (--peer-addr), not here")
		}
		return nil, s.refused.refuse("wrong_port", codes.PermissionDenied, "this is xdshard's peer port: proxies connect to --xds-addr")
	}
	if s.opts.Peers {
		if id != nil && !s.opts.Access.Peers.Allows(*id) {
			return nil, s.refused.refuse("peer_not_allowed", codes.PermissionDenied, "%s is not an xdshard replica's identity; only replicas fetch snapshots here", id.SPIFFE())
		}
		tenant := metaString(node, "TENANT")
		if !delta || tenant == "" {
			return nil, s.refused.refuse("bad_peer_request", codes.InvalidArgument, "a peer fetches a tenant's snapshot over delta ADS, naming it in node metadata TENANT")
		}
		c = newConn(s.nextID.Add(1), node, "", tenant, snapshot.ViewPeer, true)
		c.candidate = metaString(node, "CANDIDATE") == "true"
		s.register(c)
		return c, nil
	}
	if err := s.checkClaims(node, id); err != nil {
		return nil, err
	}
	var ns string
	if id != nil {
		ns = id.Namespace
	} else if ns, err = nodeNamespace(node); err != nil {
		return nil, s.refused.refuse("no_namespace", codes.InvalidArgument, "%s", err)
	}
	tenant, ok := s.opts.Resolver.TenantOf(ns)
	if !ok {
		return nil, s.refused.refuse("unknown_namespace", codes.PermissionDenied, "namespace %.64q of node %.256q belongs to no tenant known to xdshard; check the node's NAMESPACE or the config", ns, node.GetId())
	}
	view := snapshot.ViewEnvoy
	if metaString(node, "GENERATOR") == GeneratorGRPC {
		view = snapshot.ViewGRPC
	}
	c = newConn(s.nextID.Add(1), node, ns, tenant, view, delta)
	c.identity = id
	c.labels = nodeLabels(node)
	s.register(c)
	s.log.Debug("stream connected", "node", node.GetId(), "tenant", tenant, "view", view, "delta", delta)
	return c, nil
}

func (s *Server) register(c *conn) {
	c.rate = newBucket(s.limits) // the server's limits, not the defaults
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.metrics.connected(c.view, c.delta, 1)
}

func (s *Server) unbind(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.mu.Lock()
	_ = s.take(c, -c.subBytes-c.heldBytes)
	c.subBytes, c.heldBytes = 0, 0
	c.mu.Unlock()
	s.metrics.connected(c.view, c.delta, -1)
}

// checkNode refuses a later request whose node moves the stream to another
// tenant: a stream is bound to one tenant for its life.
func (s *Server) checkNode(c *conn, node *core.Node) error {
	if node == nil || node.GetId() == c.node.GetId() {
		return nil
	}
	if err := s.checkClaims(node, c.identity); err != nil {
		return err
	}
	ns, err := nodeNamespace(node)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if t, _ := s.opts.Resolver.TenantOf(ns); t != c.tenant {
		return status.Errorf(codes.PermissionDenied, "node %q changed tenant from %q to %q mid-stream; open a new stream", node.GetId(), c.tenant, t)
	}
	return nil
}

// checkRequest refuses a request that moves the stream to another tenant
// or names no type, and returns its type.
func (s *Server) checkRequest(c *conn, node *core.Node, typeURL string) (string, error) {
	if err := s.checkRate(c); err != nil {
		return "", err
	}
	if err := s.checkNodeSize(node); err != nil {
		return "", err
	}
	if err := s.checkNode(c, node); err != nil {
		return "", err
	}
	if typeURL == "" {
		return "", status.Error(codes.InvalidArgument, "request without type_url; ADS requests must name their type")
	}
	return typeURL, nil
}
