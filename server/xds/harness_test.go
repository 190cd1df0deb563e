package xds

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/xdshard/xdshard/snapshot"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a real xdshard ADS server on 127.0.0.1 with tenants a and b
// (namespaces of the same names): conn dials its proxies' port, mcp its
// MCP port.
type env struct {
	t             *testing.T
	store         *snapshot.Store
	srv           *Server
	conn, mcp     *grpc.ClientConn
	grpc, mcpGRPC *grpc.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := newEnvNoCleanup(t)
	t.Cleanup(e.close)
	return e
}

func (e *env) close() {
	e.conn.Close()
	e.mcp.Close()
	e.srv.Close()
	e.grpc.Stop()
	e.mcpGRPC.Stop()
}

func newEnvNoCleanup(t *testing.T) *env {
	return newEnvWith(t, Options{Resolver: ResolverFunc(func(ns string) (string, bool) {
		return ns, ns == "a" || ns == "b"
	})}, nil)
}

// newEnvWith is an env with the given options; prepare runs on the server
// before it serves (to set test hooks).
func newEnvWith(t *testing.T, opts Options, prepare func(*Server)) *env {
	store := snapshot.NewStore(0)
	lis := listen(t)
	if opts.EndConn == nil {
		opts.EndConn = lis.end
	}
	srv := New(store, opts)
	if prepare != nil {
		prepare(srv)
	}
	e := &env{t: t, store: store, srv: srv, grpc: grpc.NewServer(GRPCOptions()...), mcpGRPC: grpc.NewServer(GRPCOptions()...)}
	srv.Register(e.grpc)
	srv.RegisterMCP(e.mcpGRPC)
	e.conn, e.mcp = serveOn(t, e.grpc, lis), serveOn(t, e.mcpGRPC, listen(t))
	return e
}

// endable is a loopback listener that can close an accepted connection by
// its client's address, as the replica's connection tracker does.
type endable struct {
	net.Listener
	mu    sync.Mutex
	conns map[string]net.Conn
}

func listen(t *testing.T) *endable {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &endable{Listener: lis, conns: map[string]net.Conn{}}
}

func (l *endable) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns[c.RemoteAddr().String()] = c
		l.mu.Unlock()
	}
	return c, err
}

func (l *endable) end(remote string) {
	l.mu.Lock()
	c := l.conns[remote]
	l.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// serveOn serves g on lis and dials it.
func serveOn(t *testing.T, g *grpc.Server, lis net.Listener) *grpc.ClientConn {
	go func() { _ = g.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func node(ns string, meta map[string]any) *core.Node {
	s, _ := structpb.NewStruct(meta)
	return &core.Node{Id: fmt.Sprintf("sidecar~10.0.0.1~pod-1.%s~%s.svc.cluster.local", ns, ns), Metadata: s}
}

// mesh publishes tenant's snapshot: clusters c1..cN with endpoints, and a
// listener using route configuration "80". gen changes every resource.
func (e *env) mesh(tenant string, clusters int, gen int) *snapshot.Snapshot {
	e.t.Helper()
	s := e.snapshot(tenant, clusters, gen)
	e.store.Publish(s)
	return s
}

// snapshot is the snapshot mesh publishes, without publishing it.
func (e *env) snapshot(tenant string, clusters int, gen int) *snapshot.Snapshot {
	e.t.Helper()
	var cs, eps []*snapshot.Resource
	var vhosts []*route.VirtualHost
	for i := 1; i <= clusters; i++ {
		name := fmt.Sprintf("%s-c%d", tenant, i)
		cs = append(cs, enc(e.t, name, &cluster.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Duration(gen+1) * time.Second),
			ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
			EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{EdsConfig: &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}}}))
		eps = append(eps, enc(e.t, name, cla(name, fmt.Sprintf("10.1.%d.%d", gen, i))))
		vhosts = append(vhosts, &route.VirtualHost{Name: name, Domains: []string{name}, Routes: []*route.Route{{
			Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}, Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: name}}}}}})
	}
	mgr, _ := anypb.New(&hcm.HttpConnectionManager{StatPrefix: fmt.Sprint(gen), RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{RouteConfigName: "80"}}})
	l := enc(e.t, "0.0.0.0_80", &listener.Listener{Name: "0.0.0.0_80", FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{Name: "hcm", ConfigType: &listener.Filter_TypedConfig{TypedConfig: mgr}}}}}})
	r := enc(e.t, "80", &route.RouteConfiguration{Name: "80", VirtualHosts: vhosts})
	views := map[snapshot.View]map[string]*snapshot.Set{snapshot.ViewEnvoy: {
		snapshot.ClusterType:  snapshot.MustSet(snapshot.ClusterType, cs),
		snapshot.EndpointType: snapshot.MustSet(snapshot.EndpointType, eps),
		snapshot.ListenerType: snapshot.MustSet(snapshot.ListenerType, []*snapshot.Resource{l}),
		snapshot.RouteType:    snapshot.MustSet(snapshot.RouteType, []*snapshot.Resource{r}),
	}}
	return snapshot.New(tenant, views, nil)
}

func cla(name, addr string) *endpoint.ClusterLoadAssignment {
	ep := &endpoint.LbEndpoint{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
		Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address: addr, PortSpecifier: &core.SocketAddress_PortValue{PortValue: 80},
		}}},
	}}}
	return &endpoint.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpoint.LocalityLbEndpoints{{LbEndpoints: []*endpoint.LbEndpoint{ep}}}}
}

func enc(t *testing.T, name string, m proto.Message) *snapshot.Resource {
	t.Helper()
	r, err := snapshot.Encode(name, m)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// sotw is a state-of-the-world client stream with helpers that fail the
// test on a deadline instead of hanging.
type sotw struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	resps  chan *discovery.DiscoveryResponse
	node   *core.Node
	nonces map[string]string
	tracked
}

// tracked follows a test client's stream on the server, so a test can
// check that nothing comes without waiting a while for it: the client's
// node carries a tag of its own (node.cluster, which the server does not
// read), and the client counts the requests it sent and the responses
// it read.
type tracked struct {
	srv      *Server
	tag      string
	requests uint64        // sent through the client's helpers
	received atomic.Uint64 // read from the stream
}

var clientTags atomic.Uint64

func newTracked(e *env) tracked {
	return tracked{srv: e.srv, tag: fmt.Sprintf("test-client-%d", clientTags.Add(1))}
}

// tagged is n with the client's tag, a copy.
func (tr *tracked) tagged(n *core.Node) *core.Node {
	n = proto.Clone(n).(*core.Node)
	n.Cluster = tr.tag
	return n
}

// settle waits (failing only on a hang) until the server has done all
// the client's requests make it do, and returns its stream.
func (tr *tracked) settle(t *testing.T) *conn {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var c *conn
		tr.srv.mu.Lock()
		for x := range tr.srv.conns {
			if x.node.GetCluster() == tr.tag {
				c = x
			}
		}
		tr.srv.mu.Unlock()
		if c != nil && c.progress.settled(tr.requests) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not settle the client's %d requests within a minute (hang check)", tr.requests)
		}
		time.Sleep(time.Millisecond)
	}
}

// none asserts that nothing comes to resps: once the server settled
// every request the client sent, it has sent the stream no more than the
// client read, and the test has taken every response read. A sync point,
// not a wait: it fails when a response that must not come comes, and
// passes as soon as the server is done.
func none[R any](t *testing.T, tr *tracked, resps chan R, what func(R) string) {
	t.Helper()
	c := tr.settle(t)
	if sent, read := c.progress.sent.Load(), tr.received.Load(); sent > read {
		select {
		case r := <-resps:
			t.Fatalf("unexpected response: %s", what(r))
		case <-time.After(time.Minute):
			t.Fatalf("the server sent %d responses, the client read %d, and the next did not arrive within a minute (hang check)", sent, read)
		}
	}
	select {
	case r := <-resps:
		t.Fatalf("unexpected response: %s", what(r))
	default:
	}
}

func (e *env) sotw(ns string, meta map[string]any) *sotw {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := discovery.NewAggregatedDiscoveryServiceClient(e.conn).StreamAggregatedResources(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	c := &sotw{t: e.t, stream: st, resps: make(chan *discovery.DiscoveryResponse, 100), node: node(ns, meta), nonces: map[string]string{}, tracked: newTracked(e)}
	c.node = c.tagged(c.node)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			r, err := st.Recv()
			if err != nil {
				close(c.resps)
				return
			}
			c.received.Add(1)
			c.resps <- r
		}
	}()
	e.t.Cleanup(func() { cancel(); <-done })
	return c
}

func (c *sotw) send(typeURL, version, nonce string, names ...string) {
	c.t.Helper()
	c.sendReq(&discovery.DiscoveryRequest{TypeUrl: typeURL, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names})
}

// sendReq sends req as it is (with the node on the first request, as
// Envoy sends it), counted.
func (c *sotw) sendReq(req *discovery.DiscoveryRequest) {
	c.t.Helper()
	if c.node != nil && req.Node == nil {
		req.Node, c.node = c.node, nil // Envoy sends the node on the first request only
	} else if req.Node != nil {
		req.Node, c.node = c.tagged(req.Node), nil
	}
	c.requests++
	if err := c.stream.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

func (c *sotw) recv() *discovery.DiscoveryResponse {
	c.t.Helper()
	select {
	case r, ok := <-c.resps:
		if !ok {
			c.t.Fatal("stream closed")
		}
		c.nonces[r.TypeUrl] = r.Nonce
		validate(c.t, r.Resources)
		return r
	case <-time.After(time.Minute):
		c.t.Fatal("no response within a minute (hang check)")
		return nil
	}
}

// none asserts that the client's requests made the server send nothing
// the test has not read (see none).
func (c *sotw) none() {
	c.t.Helper()
	none(c.t, &c.tracked, c.resps, func(r *discovery.DiscoveryResponse) string {
		return fmt.Sprintf("%s version %s with %d resources", r.TypeUrl, r.VersionInfo, len(r.Resources))
	})
}

// ack ACKs the last response of its type.
func (c *sotw) ack(r *discovery.DiscoveryResponse, names ...string) {
	c.t.Helper()
	c.send(r.TypeUrl, r.VersionInfo, r.Nonce, names...)
}

// validate decodes every resource and runs its go-control-plane Validate.
func validate(t *testing.T, rs []*anypb.Any) {
	t.Helper()
	for _, a := range rs {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatalf("resource %s does not decode: %v", a.TypeUrl, err)
		}
		if v, ok := m.(interface{ Validate() error }); ok {
			if err := v.Validate(); err != nil {
				t.Fatalf("resource %s fails Validate: %v", a.TypeUrl, err)
			}
		}
	}
}

func names(rs []*anypb.Any) []string {
	var out []string
	for _, a := range rs {
		m, _ := a.UnmarshalNew()
		switch v := m.(type) {
		case *cluster.Cluster:
			out = append(out, v.Name)
		case *endpoint.ClusterLoadAssignment:
			out = append(out, v.ClusterName)
		case *listener.Listener:
			out = append(out, v.Name)
		case *route.RouteConfiguration:
			out = append(out, v.Name)
		}
	}
	return out
}

// waitType waits until the first client's status for typeURL satisfies ok.
func (e *env) waitType(typeURL string, ok func(TypeStatus) bool) TypeStatus {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var last TypeStatus
		if cs := e.srv.Clients(); len(cs) > 0 {
			last = cs[0].Types[typeURL]
			if ok(last) {
				return last
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("status of %s never reached the expected state; last %+v", typeURL, last)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
