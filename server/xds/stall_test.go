package xds

import (
	"context"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// nonReaders opens n SotW streams of tenant ns on one connection whose
// flow-control windows are fixed at 64 KiB (no BDP growth), each asking
// for CDS wildcard and never reading, and asking again with an empty
// nonce every 20 ms (which makes a server send the whole type again),
// until the test ends.
func nonReaders(t *testing.T, e *env, ns string, n int) {
	t.Helper()
	conn, err := grpc.NewClient(e.conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done; conn.Close() })
	var streams []discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	for i := 0; i < n; i++ {
		st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discovery.DiscoveryRequest{Node: node(ns, nil), TypeUrl: cds}); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	go func() {
		defer close(done)
		for round := 0; round < 3000; round++ { // bounded: a minute at most
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
			for _, st := range streams {
				_ = st.Send(&discovery.DiscoveryRequest{TypeUrl: cds})
			}
		}
	}()
}

// firstMCP is how long a new istiod-shaped MCP client waits for its first
// response.
func firstMCP(t *testing.T, e *env) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(e.mcp).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discovery.DiscoveryRequest{Node: node("istio-system", map[string]any{"GENERATOR": "api"}),
		TypeUrl: "networking.istio.io/v1/VirtualService", ResponseNonce: "2026-12-06T09:00:00Z"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("the MCP client's first response: %v", err)
	}
	return time.Since(start)
}

// firstConfig is how long a new, well-behaved client of tenant ns waits
// for its first CDS response.
func firstConfig(t *testing.T, e *env, ns string) time.Duration {
	t.Helper()
	start := time.Now()
	c := e.sotw(ns, nil)
	c.send(cds, "", "")
	c.recv()
	return time.Since(start)
}

// TestNonReadingStreamsHoldNoSlot: streams whose client does not read
// (150 on one connection, more than the push concurrency) block only
// themselves: a new client of another tenant gets its first config, and
// a change, and an istiod-shaped MCP client its first response, as they
// do without them, while they are still stuck (the send timeout is far
// away). Before, each stuck send held a push slot until the client read,
// and once the slots were taken no other stream of the replica was
// pushed at all; now a stream's sends give their slot back after
// slotHold.
func TestNonReadingStreamsHoldNoSlot(t *testing.T) {
	e := newEnvWith(t, Options{Resolver: ResolverFunc(func(ns string) (string, bool) { return ns, ns == "a" || ns == "b" }),
		PushConcurrency: 4, SendTimeout: time.Minute}, nil)
	t.Cleanup(e.close)
	e.mesh("a", 3000, 0) // a CDS response of several hundred KiB: more than the client's window
	e.mesh("b", 2, 0)
	var base, mcpBase time.Duration
	for i := 0; i < 3; i++ {
		base, mcpBase = max(base, firstConfig(t, e, "b")), max(mcpBase, firstMCP(t, e))
	}

	nonReaders(t, e, "a", 150)
	stuck := func() int {
		n := 0
		for _, cs := range e.srv.Clients() {
			if cs.Tenant == "a" {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(20 * time.Second)
	for stuck() < 150 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 150 non-reading streams bound", stuck())
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.mesh("a", 3000, 1) // every stuck stream has a newer version to send

	with, mcpWith := firstConfig(t, e, "b"), firstMCP(t, e)
	watcher := e.sotw("b", nil)
	watcher.send(cds, "", "")
	watcher.ack(watcher.recv())
	start := time.Now()
	e.mesh("b", 2, 1)
	if r := watcher.recv(); r.TypeUrl != cds {
		t.Fatalf("after tenant b's change: %s", r.TypeUrl)
	}
	change := time.Since(start)
	t.Logf("tenant b's first config: %v alone (worst of 3), %v beside 150 non-reading streams; its change: %v; an MCP client's first response: %v alone, %v beside them", base, with, change, mcpBase, mcpWith)
	// Generous: the point is that b is served at all while they hold
	// their sends, which the timeout (a minute) has not ended.
	if limit := max(50*base, time.Second); with > limit || change > limit {
		t.Fatalf("beside 150 non-reading streams, tenant b waited %v for its first config and %v for a change (alone %v)", with, change, base)
	}
	if limit := max(50*mcpBase, time.Second); mcpWith > limit {
		t.Fatalf("beside 150 non-reading streams, an MCP client waited %v for its first response (alone %v)", mcpWith, mcpBase)
	}
	if n := stuck(); n != 150 {
		t.Fatalf("%d non-reading streams still open, want 150: the comparison must run while they are stuck", n)
	}
}

// TestNonReadingStreamIsEnded: a stream whose client does not take its
// response within the send timeout has its connection closed, is counted
// as send_timeout, and holds nothing of the server's after it.
func TestNonReadingStreamIsEnded(t *testing.T) {
	e := newEnvWith(t, Options{Resolver: ResolverFunc(func(ns string) (string, bool) { return ns, ns == "a" }), SendTimeout: 300 * time.Millisecond}, nil)
	t.Cleanup(e.close)
	e.mesh("a", 3000, 0)
	nonReaders(t, e, "a", 3)
	deadline := time.Now().Add(20 * time.Second)
	// The first timeout closes the connection, which ends all three.
	for refusedCount(e.srv, "send_timeout") < 1 || len(e.srv.Clients()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("send_timeout counted %v times, %d streams still bound; want the connection closed and none bound", refusedCount(e.srv, "send_timeout"), len(e.srv.Clients()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
