package xds

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/xdshard/xdshard/snapshot"
)

// tenancy is a resolver whose namespaces can move between tenants, as a
// relabelled Namespace moves them in the mesh.
type tenancy struct {
	mu sync.Mutex
	of map[string]string
}

func (r *tenancy) TenantOf(ns string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.of[ns]
	return t, ok
}

func (r *tenancy) move(ns, tenant string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.of[ns] = tenant
}

// TestRelabelledNamespaceLeavesItsTenant: a proxy of namespace a2 is bound
// to tenant a; when a2 moves to tenant b, its stream ends with a status
// that says so, and the reconnecting proxy receives b's config. Before,
// the stream stayed bound to a and kept receiving a's config.
func TestRelabelledNamespaceLeavesItsTenant(t *testing.T) {
	res := &tenancy{of: map[string]string{"a1": "a", "a2": "a", "b1": "b"}}
	e := newEnvWith(t, Options{Resolver: res}, nil)
	t.Cleanup(e.close)
	e.store.Publish(e.snapshot("a", 2, 0).WithNamespaces([]string{"a1", "a2"}))
	e.store.Publish(e.snapshot("b", 3, 0).WithNamespaces([]string{"b1"}))

	c := e.sotw("a2", nil)
	c.send(cds, "", "")
	r := c.recv()
	if got := names(r.Resources); len(got) != 2 || !strings.HasPrefix(got[0], "a-") {
		t.Fatalf("a2 bound to tenant a got %v", got)
	}
	c.ack(r)

	res.move("a2", "b")
	// The builder publishes both tenants after the move: a without a2 (its
	// clusters unchanged), b with it.
	e.store.Publish(e.snapshot("a", 2, 0).WithNamespaces([]string{"a1"}))
	e.store.Publish(e.snapshot("b", 3, 0).WithNamespaces([]string{"a2", "b1"}))

	select {
	case r, ok := <-c.resps:
		if ok {
			t.Fatalf("the moved stream got another response (%d resources) instead of ending", len(r.Resources))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream of a namespace that moved to another tenant was not ended")
	}
	_, err := c.stream.Recv()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), `moved from tenant "a" to "b"`) {
		t.Fatalf("stream ended with %v, want Unavailable saying the namespace moved", err)
	}

	again := e.sotw("a2", nil)
	again.send(cds, "", "")
	if got := names(again.recv().Resources); len(got) != 3 || !strings.HasPrefix(got[0], "b-") {
		t.Fatalf("after reconnecting, a2 got %v, want tenant b's three clusters", got)
	}
}

// TestNamespaceNotYetBuiltKeepsItsStream: a namespace the mesh already puts
// in a tenant whose snapshot predates it is served that snapshot, and its
// stream is not ended for being missing from it.
func TestNamespaceNotYetBuiltKeepsItsStream(t *testing.T) {
	res := &tenancy{of: map[string]string{"a1": "a", "a3": "a"}}
	e := newEnvWith(t, Options{Resolver: res}, nil)
	t.Cleanup(e.close)
	e.store.Publish(e.snapshot("a", 2, 0).WithNamespaces([]string{"a1"}))
	c := e.sotw("a3", nil)
	c.send(cds, "", "")
	c.ack(c.recv())
	e.store.Publish(e.snapshot("a", 2, 1).WithNamespaces([]string{"a1"}))
	if r := c.recv(); len(r.Resources) != 2 {
		t.Fatalf("got %d clusters after an update", len(r.Resources))
	}
}

// TestReceiveNeverWaitsOnEncode: while a stream's response is being
// encoded (held here by a hook), its receive loop still records requests
// and its status can be read. Before, encoding ran under the stream's lock.
func TestReceiveNeverWaitsOnEncode(t *testing.T) {
	unblock, entered := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e := newEnvWith(t, Options{Resolver: ResolverFunc(func(ns string) (string, bool) { return ns, ns == "a" })}, func(s *Server) {
		s.testEncodeHook = func() {
			once.Do(func() { close(entered); <-unblock })
		}
	})
	t.Cleanup(e.close)
	defer once.Do(func() {}) // never leave the hook armed
	e.mesh("a", 3, 0)
	c := e.sotw("a", nil)
	c.send(cds, "", "")
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first push never reached its encode")
	}
	c.send(lds, "", "")
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := make(chan []ClientStatus, 1)
		go func() { got <- e.srv.Clients() }()
		select {
		case cs := <-got:
			if len(cs) == 1 {
				if _, ok := cs[0].Types[lds]; ok {
					close(unblock)
					goto recorded
				}
			}
		case <-time.After(5 * time.Second):
			close(unblock)
			t.Fatal("reading the stream's status waited on an encode: the stream's lock is held while encoding")
		}
		if time.Now().After(deadline) {
			close(unblock)
			t.Fatal("the LDS request sent during an encode was never recorded")
		}
		time.Sleep(5 * time.Millisecond)
	}
recorded:
	seen := map[string]bool{}
	for len(seen) < 2 {
		seen[c.recv().TypeUrl] = true
	}
	if !seen[cds] || !seen[lds] {
		t.Fatalf("got %v, want CDS and LDS", seen)
	}
}

// TestPushConcurrencyIsBounded: a change that wakes every stream encodes
// on at most PushConcurrency of them at a time, and the in-flight gauge
// shows it; every stream is still served. (A slow send gives its slot
// back: TestNonReadingStreamsHoldNoSlot.)
func TestPushConcurrencyIsBounded(t *testing.T) {
	const limit, streams = 2, 8
	var cur, peak atomic.Int32
	var gaugePeak atomic.Int64
	var srv *Server
	e := newEnvWith(t, Options{Resolver: ResolverFunc(func(ns string) (string, bool) { return ns, ns == "a" }), PushConcurrency: limit}, func(s *Server) {
		srv = s
		s.testEncodeHook = func() {
			n := cur.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			if g := int64(testutil.ToFloat64(srv.metrics.inflight)); g > gaugePeak.Load() {
				gaugePeak.Store(g)
			}
			time.Sleep(20 * time.Millisecond)
			cur.Add(-1)
		}
	})
	t.Cleanup(e.close)
	e.mesh("a", 2, 0)
	var clients []*sotw
	for i := 0; i < streams; i++ {
		c := e.sotw("a", nil)
		c.send(cds, "", "")
		clients = append(clients, c)
	}
	for _, c := range clients {
		c.ack(c.recv())
	}
	peak.Store(0)
	e.mesh("a", 2, 1) // wakes all eight at once
	for _, c := range clients {
		c.recv()
	}
	if p := peak.Load(); p != limit {
		t.Fatalf("at most %d streams encoded at once, want exactly the limit %d", p, limit)
	}
	if g := gaugePeak.Load(); g < 1 || g > limit {
		t.Fatalf("xdshard_pushes_in_flight peaked at %d, want 1..%d", g, limit)
	}
}

// nopStream is a SotW stream whose sends go nowhere and are counted.
type nopStream struct {
	discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer
	sent int
}

func (n *nopStream) SendMsg(any) error { n.sent++; return nil }

// syncedConn is a SotW stream of tenant a, subscribed as Envoy does (CDS
// and LDS wildcard, EDS and RDS by name) and holding every response.
func syncedConn(tb testing.TB, e *env) (*conn, *nopStream, *sotwFace) {
	c := newConn(1, node("a", nil), "a", "a", snapshot.ViewEnvoy, false)
	var edsNames []string
	for _, r := range e.store.Current("a").Set(snapshot.ViewEnvoy, eds).Items {
		edsNames = append(edsNames, r.Name)
	}
	for _, r := range []*discovery.DiscoveryRequest{
		{TypeUrl: cds}, {TypeUrl: eds, ResourceNames: edsNames}, {TypeUrl: lds}, {TypeUrl: rds, ResourceNames: []string{"80"}},
	} {
		if err := e.srv.recordSotW(c, r); err != nil {
			tb.Fatal(err)
		}
	}
	stream := &nopStream{}
	f := &sotwFace{s: e.srv, stream: stream}
	for i := 0; i < 2; i++ { // the second round sends what the first forced (EDS after CDS, RDS after LDS)
		if err := e.srv.push(context.Background(), c, f, nil); err != nil {
			tb.Fatal(err)
		}
		for _, e := range c.types {
			st := e.st
			st.awaiting = false
		}
	}
	return c, stream, f
}

// TestPushSotWSendsOnlyChanges is the path BenchmarkPushSotW measures: a
// synced stream woken with nothing new sends nothing; a new snapshot sends
// each changed type once, and RDS again after LDS.
func TestPushSotWSendsOnlyChanges(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 70, 0)
	c, stream, f := syncedConn(t, e)
	if stream.sent != 4 {
		t.Fatalf("synced with %d responses, want 4", stream.sent)
	}
	stream.sent = 0
	if err := e.srv.push(context.Background(), c, f, nil); err != nil || stream.sent != 0 {
		t.Fatalf("a wake with nothing new sent %d responses (%v)", stream.sent, err)
	}
	e.mesh("a", 70, 1) // changes clusters, endpoints and listeners; routes stay
	if err := e.srv.push(context.Background(), c, f, nil); err != nil || stream.sent != 3 {
		t.Fatalf("a new snapshot sent %d responses (%v), want CDS, EDS and LDS", stream.sent, err)
	}
	for _, e := range c.types {
		st := e.st
		st.awaiting = false
	}
	// RDS is sent again after LDS, so listeners warming on it complete.
	if err := e.srv.push(context.Background(), c, f, nil); err != nil || stream.sent != 4 {
		t.Fatalf("the round after LDS sent %d responses in all (%v), want RDS too", stream.sent, err)
	}
}

// BenchmarkPushSotW is one wake of a synced SotW stream whose snapshot did
// not change, as its own ACK wakes it: 70 clusters, EDS by name. Compare
// allocs/op across changes to the push path.
func BenchmarkPushSotW(b *testing.B) {
	e := newEnvNoCleanup(&testing.T{})
	defer e.close()
	e.mesh("a", 70, 0)
	c, _, f := syncedConn(b, e)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := e.srv.push(ctx, c, f, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAckSotW is a synced SotW stream's ACK of its EDS response, as
// Envoy sends it: the nonce, the version and the whole subscription again
// (70 names). Compare allocs/op and ns/op across changes to the receive
// path, which a mesh-wide change runs once per stream.
func BenchmarkAckSotW(b *testing.B) {
	e := newEnvNoCleanup(&testing.T{})
	defer e.close()
	e.mesh("a", 70, 0)
	c, _, _ := syncedConn(b, e)
	c.rate = newBucket(Limits{Rate: 1e12, Burst: 1 << 40}) // the receive path, not the rate limit
	st := c.types.get(eds)
	raw, err := proto.Marshal(&discovery.DiscoveryRequest{TypeUrl: eds, ResponseNonce: st.nonce, VersionInfo: st.sentVersion, ResourceNames: slices.Clone(st.sorted)})
	if err != nil {
		b.Fatal(err)
	}
	data := mem.BufferSlice{mem.SliceBuffer(raw)}
	slow := encoding.GetCodecV2(grpcproto.Name)
	// protobuf's decoder, as every request was decoded before
	b.Run("decoded", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req := &discovery.DiscoveryRequest{}
			if err := slow.Unmarshal(data, req); err != nil {
				b.Fatal(err)
			}
			if err := e.srv.recordSotW(c, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	// the stream's decoder, which takes the names last applied
	b.Run("reused", func(b *testing.B) {
		reqs := &sotwRequests{}
		b.ReportAllocs()
		for b.Loop() {
			if err := reqs.unmarshal(data, slow); err != nil {
				b.Fatal(err)
			}
			if err := e.srv.recordSotWFrom(c, reqs.req, reqs); err != nil {
				b.Fatal(err)
			}
		}
		if !reqs.reused {
			b.Fatal("the names were not reused")
		}
	})
}
