package xds

import (
	"context"
	"fmt"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"runtime"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/xdshard/xdshard/internal/cache"
	"github.com/xdshard/xdshard/snapshot"
)

// Each test here is a client doing what an adversary would, on a real
// stream: it is refused with a clear status, counted, and what it made the
// server hold stays bounded. Before, none of these was bounded: 12,000
// fresh-name subscriptions kept 160 MB after the streams closed, 150 MCP
// type URLs 870 MB, and a 4 MB node was held per stream.

// streamErr sends reqs on a new SotW stream and returns the status the
// stream ends with (nil if it is still open after the last request).
func streamErr(t *testing.T, e *env, reqs ...*discovery.DiscoveryRequest) error {
	t.Helper()
	return streamErrOn(t, e.conn, reqs...)
}

// streamErrOn is streamErr on the port conn dials.
func streamErrOn(t *testing.T, conn *grpc.ClientConn, reqs ...*discovery.DiscoveryRequest) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := st.Recv(); err != nil {
				done <- err
				return
			}
		}
	}()
	for _, r := range reqs {
		if err := st.Send(r); err != nil {
			break // the server ended the stream; its status comes from Recv
		}
	}
	select {
	case err := <-done:
		return err
	case <-time.After(2 * time.Second):
		return nil
	}
}

func refusedCount(s *Server, reason string) float64 {
	return testutil.ToFloat64(s.refused.c.WithLabelValues(reason))
}

func wantRefused(t *testing.T, s *Server, err error, code codes.Code, reason, text string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(err.Error(), text) {
		t.Fatalf("stream ended with %v, want %s saying %q", err, code, text)
	}
	if refusedCount(s, reason) < 1 {
		t.Fatalf("xdshard_refused_requests_total{reason=%q} did not count it", reason)
	}
}

func TestOversizedNodeIsRefused(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	n := node("a", map[string]any{"JUNK": strings.Repeat("x", 100<<10)})
	err := streamErr(t, e, &discovery.DiscoveryRequest{Node: n, TypeUrl: cds})
	wantRefused(t, e.srv, err, codes.InvalidArgument, "node_too_large", "node (id and metadata)")
}

func TestTooManyNamesIsRefused(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	names := make([]string, 20001)
	for i := range names {
		names[i] = fmt.Sprint("n", i)
	}
	err := streamErr(t, e, &discovery.DiscoveryRequest{Node: node("a", nil), TypeUrl: eds, ResourceNames: names})
	wantRefused(t, e.srv, err, codes.ResourceExhausted, "too_many_names", "names 20001 resources")
}

func TestMadeUpTypesAreBounded(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	var reqs []*discovery.DiscoveryRequest
	for i := 0; i < 17; i++ {
		r := &discovery.DiscoveryRequest{TypeUrl: fmt.Sprintf("type.googleapis.com/made.up.T%d", i)}
		if i == 0 {
			r.Node = node("a", nil)
		}
		reqs = append(reqs, r)
	}
	wantRefused(t, e.srv, streamErr(t, e, reqs...), codes.ResourceExhausted, "too_many_types", "more than 16 type URLs")
}

func TestRequestRateIsBounded(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	reqs := []*discovery.DiscoveryRequest{{Node: node("a", nil), TypeUrl: cds}}
	for i := 0; i < 1500; i++ {
		reqs = append(reqs, &discovery.DiscoveryRequest{TypeUrl: cds, ResponseNonce: "not-the-latest"})
	}
	wantRefused(t, e.srv, streamErr(t, e, reqs...), codes.ResourceExhausted, "rate_limited", "requests per second")
}

func TestMCPTypeURLsAreChecked(t *testing.T) {
	e := newEnv(t)
	api := map[string]any{"GENERATOR": "api"}
	err := streamErrOn(t, e.mcp, &discovery.DiscoveryRequest{Node: node("a", api), TypeUrl: "evil.example.com/v1/Payload"})
	wantRefused(t, e.srv, err, codes.InvalidArgument, "bad_type_url", "not group/version/Kind of an Istio API group")
	err = streamErrOn(t, e.mcp, &discovery.DiscoveryRequest{Node: node("a", map[string]any{"GENERATOR": "api", "ISTIO_REVISION": strings.Repeat("R", 100)}), TypeUrl: "networking.istio.io/v1/VirtualService"})
	wantRefused(t, e.srv, err, codes.InvalidArgument, "bad_revision", "is not a revision name")
}

// TestMCPOnlyOnItsPort: istiod's config source is served on the MCP port
// alone: an MCP stream on the proxies' port or the peers' is refused, as are a proxy's stream and a delta stream on the MCP
// port; an istiod-shaped stream there is answered.
func TestMCPOnlyOnItsPort(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	api := map[string]any{"GENERATOR": "api", "ISTIO_REVISION": "default"}
	vs := "networking.istio.io/v1/VirtualService"
	err := streamErr(t, e, &discovery.DiscoveryRequest{Node: node("istio-system", api), TypeUrl: vs})
	wantRefused(t, e.srv, err, codes.PermissionDenied, "mcp_wrong_port", "served on xdshard's MCP port")
	err = streamErrOn(t, e.mcp, &discovery.DiscoveryRequest{Node: node("a", nil), TypeUrl: cds})
	wantRefused(t, e.srv, err, codes.PermissionDenied, "not_mcp", "is a proxy: dial the xDS port")
	peers := newEnvWith(t, Options{Peers: true}, nil)
	t.Cleanup(peers.close)
	err = streamErr(t, peers, &discovery.DiscoveryRequest{Node: node("istio-system", api), TypeUrl: vs})
	wantRefused(t, peers.srv, err, codes.PermissionDenied, "mcp_wrong_port", "served on xdshard's MCP port")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	delta, err := discovery.NewAggregatedDiscoveryServiceClient(e.mcp).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = delta.Send(&discovery.DeltaDiscoveryRequest{Node: node("istio-system", api), TypeUrl: vs})
	if _, err := delta.Recv(); status.Code(err) != codes.Unimplemented {
		t.Fatalf("delta on the MCP port: %v, want Unimplemented", err)
	}
	st, err := discovery.NewAggregatedDiscoveryServiceClient(e.mcp).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discovery.DiscoveryRequest{Node: node("istio-system", api), TypeUrl: vs, ResponseNonce: "2026-12-06T09:00:00Z"}); err != nil {
		t.Fatal(err)
	}
	if resp, err := st.Recv(); err != nil || resp.TypeUrl != vs {
		t.Fatalf("an istiod-shaped stream on the MCP port: %v %v", resp, err)
	}
}

// TestFreshNameSubscriptionsStayBounded: thousands of subscriptions to
// made-up names, from many streams, leave the response cache within its
// bound while they run and the heap where it was once they close.
func TestFreshNameSubscriptionsStayBounded(t *testing.T) {
	const cacheBytes = 512 << 10
	e := newEnvWith(t, Options{Resolver: ResolverFunc(func(ns string) (string, bool) { return ns, ns == "a" }), Limits: Limits{CacheBytes: cacheBytes}}, nil)
	t.Cleanup(e.close)
	e.mesh("a", 5, 0)
	before := heapNow()
	const streams, perStream = 12, 1000
	for s := 0; s < streams; s++ {
		c := e.sotw("a", nil)
		c.send(eds, "", "", "a-c1")
		r := c.recv()
		for i := 0; i < perStream; i++ {
			c.send(eds, r.VersionInfo, r.Nonce, fmt.Sprintf("fresh-%d-%d-%s", s, i, strings.Repeat("z", 200)))
			r = c.recv()
		}
		if b := e.srv.cache.entries.Bytes(); b > cacheBytes {
			t.Fatalf("the response cache holds %d bytes, over its bound of %d", b, cacheBytes)
		}
		c.stream.CloseSend()
	}
	e.conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for len(e.srv.Clients()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if grew := heapNow() - before; grew > 16<<20 {
		t.Fatalf("the heap grew by %d MiB after %d fresh-name subscriptions closed", grew>>20, streams*perStream)
	}
}

// TestPeerAndProxyPortsAreApart: the proxy port refuses a peer (which
// could read any tenant), and the peer port refuses proxies.
func TestPeerAndProxyPortsAreApart(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	peer := node("a", map[string]any{"TENANT": "b"})
	peer.Id = PeerNodePrefix + "r1"
	err := streamErr(t, e, &discovery.DiscoveryRequest{Node: peer, TypeUrl: cds})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "peer port") {
		t.Fatalf("a peer on the proxy port: %v, want PermissionDenied", err)
	}
	p := newEnvWith(t, Options{Resolver: ResolverFunc(func(ns string) (string, bool) { return ns, ns == "a" }), Peers: true}, nil)
	t.Cleanup(p.close)
	p.mesh("a", 1, 0)
	err = streamErr(t, p, &discovery.DiscoveryRequest{Node: node("a", nil), TypeUrl: cds})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "peer port") {
		t.Fatalf("a proxy on the peer port: %v, want PermissionDenied", err)
	}
}

// TestConfiguredRateIsTheOneApplied: a server's own limits, not the
// defaults, bound its streams.
func TestConfiguredRateIsTheOneApplied(t *testing.T) {
	e := newEnvWith(t, Options{Resolver: ResolverFunc(func(ns string) (string, bool) { return ns, ns == "a" }), Limits: Limits{Rate: 1, Burst: 20}}, nil)
	t.Cleanup(e.close)
	e.mesh("a", 1, 0)
	reqs := []*discovery.DiscoveryRequest{{Node: node("a", nil), TypeUrl: cds}}
	for i := 0; i < 30; i++ {
		reqs = append(reqs, &discovery.DiscoveryRequest{TypeUrl: cds, ResponseNonce: "not-the-latest"})
	}
	wantRefused(t, e.srv, streamErr(t, e, reqs...), codes.ResourceExhausted, "rate_limited", "requests per second")
}

// TestPeerMayNameAWholeSnapshot: a peer reconnecting names every resource
// of a large tenant's snapshot (initial versions); the peer face allows
// that many names when configured so, while a proxy port refuses them.
func TestPeerMayNameAWholeSnapshot(t *testing.T) {
	initial := map[string]string{}
	for i := 0; i < 25000; i++ {
		initial[fmt.Sprint("r", i)] = "v"
	}
	ask := func(e *env, n *core.Node) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := discovery.NewAggregatedDiscoveryServiceClient(e.conn).DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discovery.DeltaDiscoveryRequest{Node: n, TypeUrl: snapshot.PeerType, ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: initial}); err != nil {
			t.Fatal(err)
		}
		_, err = st.Recv()
		return err
	}
	peerNode := node("a", map[string]any{"TENANT": "a"})
	peerNode.Id = PeerNodePrefix + "r1"
	p := newEnvWith(t, Options{Resolver: ResolverFunc(func(ns string) (string, bool) { return ns, ns == "a" }), Peers: true, Limits: Limits{Names: 1 << 22}}, nil)
	t.Cleanup(p.close)
	p.mesh("a", 1, 0)
	if err := ask(p, peerNode); err != nil {
		t.Fatalf("the peer face refused a whole snapshot's names: %v", err)
	}
	e := newEnv(t)
	e.mesh("a", 1, 0)
	if err := ask(e, node("a", nil)); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a proxy naming 25,000 resources: %v, want ResourceExhausted", err)
	}
}

// TestClientChosenKeysLeaveNoMemory: istiod-shaped streams asking for
// hundreds of made-up (well-formed) Istio kinds and revisions, and
// streams carrying node metadata near its limit, hold memory only while
// they are open: the MCP cache stays within its entry bound, and the heap
// returns to where it was once they close.
func TestClientChosenKeysLeaveNoMemory(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 3, 0)
	before := heapNow()
	ctx, cancel := context.WithCancel(context.Background())
	client := discovery.NewAggregatedDiscoveryServiceClient(e.conn)
	var streams []discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	for i := 0; i < 150; i++ {
		st, err := discovery.NewAggregatedDiscoveryServiceClient(e.mcp).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := node("istio-system", map[string]any{"GENERATOR": "api", "ISTIO_REVISION": fmt.Sprintf("rev-%d", i)})
		for k := 0; k < 8; k++ {
			req := &discovery.DiscoveryRequest{TypeUrl: fmt.Sprintf("networking.istio.io/v1/Made%03dUp%d", i, k)}
			if k == 0 {
				req.Node = n
			}
			if err := st.Send(req); err != nil {
				t.Fatal(err)
			}
		}
		streams = append(streams, st)
	}
	big := strings.Repeat("m", 60<<10) // under the 64 KiB node limit
	for i := 0; i < 150; i++ {
		st, err := client.StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discovery.DiscoveryRequest{Node: node("a", map[string]any{"PAD": big, "I": fmt.Sprint(i)}), TypeUrl: cds}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(e.srv.Clients()) < 300 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if b := e.srv.opts.MCP.(*mcpServer).cache.Bytes(); b > cache.DefaultBytes {
		t.Fatalf("the MCP cache holds %d bytes, over its bound of %d", b, cache.DefaultBytes)
	}
	cancel()
	for len(e.srv.Clients()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if grew := heapNow() - before; grew > 8<<20 {
		t.Fatalf("the heap grew by %d MiB after 300 streams of client-chosen kinds, revisions and metadata closed", grew>>20)
	}
}

// TestStreamWithoutFirstRequestIsEnded: a stream that never sends its
// first request is ended (no_first_request) rather than holding its
// goroutine for ever.
func TestStreamWithoutFirstRequestIsEnded(t *testing.T) {
	e := newEnvWith(t, Options{Resolver: ResolverFunc(func(ns string) (string, bool) { return ns, ns == "a" }),
		Limits: Limits{FirstRequest: 200 * time.Millisecond}}, nil)
	t.Cleanup(e.close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// On the proxies' port the client's connection is closed; on the MCP
	// port the stream ends with the status.
	for name, conn := range map[string]*grpc.ClientConn{"xDS": e.conn, "MCP": e.mcp} {
		st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = st.Recv()
		if name == "xDS" && status.Code(err) != codes.Unavailable || name == "MCP" && (status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "no request within")) {
			t.Fatalf("%s port: a silent stream ended with %v", name, err)
		}
	}
	if refusedCount(e.srv, "no_first_request") != 2 {
		t.Fatal("the silent streams were not counted as no_first_request")
	}
}

// TestNACKTextIsBounded: a NACK's error text is kept (for syncz and
// proxy-status) and logged cut to NACKBytes, with its length.
func TestNACKTextIsBounded(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	c := e.sotw("a", nil)
	c.send(cds, "", "")
	r := c.recv()
	_ = c.stream.Send(&discovery.DiscoveryRequest{TypeUrl: cds, ResponseNonce: r.Nonce, ErrorDetail: &rpcstatus.Status{Code: 3, Message: strings.Repeat("x", 1<<20)}})
	deadline := time.Now().Add(10 * time.Second)
	for {
		var nack *NACK
		for _, cs := range e.srv.Clients() {
			nack = cs.Types[cds].LastNACK
		}
		if nack != nil {
			if len(nack.Message) > 4<<10+64 || !strings.HasSuffix(nack.Message, "(1048576 bytes in all)") {
				t.Fatalf("the NACK's text is kept as %d bytes ending %q", len(nack.Message), nack.Message[max(0, len(nack.Message)-40):])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the NACK was not recorded")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUnservedTypesKeepNoNames: names subscribed for a type xdshard does
// not serve are not kept (the stream's state for it is its count alone),
// so made-up types cannot make a stream hold memory: a delta stream
// subscribing 18,000 names (within the names limit) of 1,000 bytes to
// each of two made-up types (36 MB were they kept) leaves the heap where
// it was, while it is open.
func TestUnservedTypesKeepNoNames(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	before := heapNow()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(e.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("n", 990)
	for k := 0; k < 2; k++ {
		for r := 0; r < 6; r++ {
			names := make([]string, 3000)
			for i := range names {
				names[i] = fmt.Sprintf("%s-%d-%d-%05d", pad, k, r, i)
			}
			req := &discovery.DeltaDiscoveryRequest{TypeUrl: fmt.Sprintf("type.googleapis.com/made.up.Kind%d", k), ResourceNamesSubscribe: names}
			if k == 0 && r == 0 {
				req.Node = node("a", nil)
			}
			if err := st.Send(req); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A served type's request after them: once it is answered, every
	// earlier request was recorded.
	if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: cds}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	if grew := heapNow() - before; grew > 16<<20 {
		t.Fatalf("the heap grew by %d MiB while the stream subscribing made-up types is open, want it to keep no names", grew>>20)
	}
}

// TestSubscriptionBytesAreBounded: a stream's subscriptions, all types
// together, hold at most SubscriptionBytes of names (8 MiB): the request
// past it is refused (subscription_too_large), over SotW across types and
// over delta request by request.
func TestSubscriptionBytesAreBounded(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	names := func(tag string) []string {
		out := make([]string, 3500)
		for i := range out {
			out[i] = fmt.Sprintf("%s-%s-%05d", strings.Repeat("n", 990), tag, i)
		}
		return out
	}
	var reqs []*discovery.DiscoveryRequest
	for i, typeURL := range []string{eds, rds, cds} {
		r := &discovery.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names(fmt.Sprint(i))}
		if i == 0 {
			r.Node = node("a", nil)
		}
		reqs = append(reqs, r)
	}
	wantRefused(t, e.srv, streamErr(t, e, reqs...), codes.ResourceExhausted, "subscription_too_large", "more than the 8388608 allowed")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(e.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		r := &discovery.DeltaDiscoveryRequest{TypeUrl: eds, ResourceNamesSubscribe: names(fmt.Sprint(i))}
		if i == 0 {
			r.Node = node("a", nil)
		}
		if err := st.Send(r); err != nil {
			break
		}
	}
	for {
		if _, err = st.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "subscription") {
		t.Fatalf("a delta stream subscribing 10 MB of names ended with %v, want ResourceExhausted", err)
	}
}

// TestClientBudgets: the names one connection's streams hold, and one
// client's over all its connections, are bounded apart from each stream's
// own limit (connection_budget, identity_budget), and given back when
// streams end.
func TestClientBudgets(t *testing.T) {
	e := newEnvWith(t, Options{Resolver: ResolverFunc(func(ns string) (string, bool) { return ns, ns == "a" }),
		Limits: Limits{ConnSubscriptionBytes: 2500 << 10, IdentitySubscriptionBytes: 3500 << 10}}, nil)
	t.Cleanup(e.close)
	e.mesh("a", 1, 0)
	other, err := grpc.NewClient(e.conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// subscribe opens a stream on conn holding about 1 MiB of EDS names
	// and returns its first answer's error.
	seq := 0
	subscribe := func(conn *grpc.ClientConn) (context.CancelFunc, error) {
		seq++
		names := make([]string, 1000)
		for i := range names {
			names[i] = fmt.Sprintf("%s-%d-%04d", strings.Repeat("n", 1000), seq, i)
		}
		sctx, scancel := context.WithCancel(ctx)
		st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discovery.DiscoveryRequest{Node: node("a", nil), TypeUrl: eds, ResourceNames: names}); err != nil {
			t.Fatal(err)
		}
		_, err = st.Recv()
		return scancel, err
	}
	var open []context.CancelFunc
	for i := 0; i < 2; i++ {
		end, err := subscribe(e.conn)
		if err != nil {
			t.Fatalf("stream %d on the first connection: %v", i+1, err)
		}
		open = append(open, end)
	}
	_, err = subscribe(e.conn)
	wantRefused(t, e.srv, err, codes.ResourceExhausted, "connection_budget", "allowed per connection")
	end, err := subscribe(other)
	if err != nil {
		t.Fatalf("a stream on another connection of the same client: %v", err)
	}
	open = append(open, end)
	_, err = subscribe(other)
	wantRefused(t, e.srv, err, codes.ResourceExhausted, "identity_budget", "allowed per client")
	open[0]()
	deadline := time.Now().Add(10 * time.Second)
	for {
		end, err := subscribe(other)
		if err == nil {
			end()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the budget was not given back when a stream ended: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// heapNow is the live heap after a collection.
func heapNow() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestNodesAndNACKsCountInBudgets: the nodes (id and metadata) and the
// kept NACK texts of a connection's streams count in its budget beside
// their names, so a thousand streams of near-limit node metadata cannot
// hold more than names could: a stream whose node does not fit is
// refused (connection_budget), and a NACK whose text does not fit is kept
// as a note of its length, without ending the stream.
func TestNodesAndNACKsCountInBudgets(t *testing.T) {
	big := node("a", map[string]any{"PAD": strings.Repeat("m", 60<<10)})
	// Room for three such nodes and one NACK text as kept (4 KiB), not two.
	e := newEnvWith(t, Options{Resolver: ResolverFunc(func(ns string) (string, bool) { return ns, ns == "a" }),
		Limits: Limits{ConnSubscriptionBytes: 3*proto.Size(big) + 6000}}, nil)
	t.Cleanup(e.close)
	e.mesh("a", 1, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func() (discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient, *discovery.DiscoveryResponse, error) {
		st, err := discovery.NewAggregatedDiscoveryServiceClient(e.conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discovery.DiscoveryRequest{Node: big, TypeUrl: cds}); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		return st, r, err
	}
	var streams []discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	var firsts []*discovery.DiscoveryResponse
	for i := 0; i < 3; i++ {
		st, r, err := open()
		if err != nil {
			t.Fatalf("stream %d of 60 KiB node metadata: %v", i+1, err)
		}
		streams, firsts = append(streams, st), append(firsts, r)
	}
	_, _, err := open()
	wantRefused(t, e.srv, err, codes.ResourceExhausted, "connection_budget", "node metadata and NACK texts")

	huge := &rpcstatus.Status{Code: 3, Message: strings.Repeat("x", 64<<10)}
	for i, st := range streams {
		_ = st.Send(&discovery.DiscoveryRequest{TypeUrl: cds, ResponseNonce: firsts[i].Nonce, ErrorDetail: huge})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var kept, notes int
		for _, cs := range e.srv.Clients() {
			if n := cs.Types[cds].LastNACK; n != nil {
				if strings.Contains(n.Message, "not kept: the connection budget is full") {
					notes++
				} else if strings.HasSuffix(n.Message, "(65536 bytes in all)") {
					kept++
				}
			}
		}
		if kept+notes == 3 {
			if kept != 1 {
				t.Fatalf("%d NACK texts kept, %d noted: the connection's budget has room for one", kept, notes)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d NACKs recorded of 3", kept+notes)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(e.srv.Clients()); n != 3 {
		t.Fatalf("%d streams open after the NACKs, want 3: a NACK that does not fit ends nothing", n)
	}
}
