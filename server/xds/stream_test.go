package xds

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// TestReceiveNeverWaitsOnSend: a client that never reads its responses
// (so the server's sends block on flow control) can still send requests,
// and other clients of the tenant are served meanwhile.
func TestReceiveNeverWaitsOnSend(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 2000, 0) // responses large enough to fill flow-control windows
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stuck, err := discovery.NewAggregatedDiscoveryServiceClient(e.conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < 500; i++ {
			req := &discovery.DiscoveryRequest{TypeUrl: eds, ResourceNames: []string{fmt.Sprintf("a-c%d", i%2000+1)}}
			if i == 0 {
				req.Node = node("a", nil)
			}
			if err := stuck.Send(req); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	select {
	case err := <-sent:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the server stopped receiving from a client that does not read")
	}
	other := e.sotw("a", nil)
	other.send(cds, "", "")
	if r := other.recv(); len(r.Resources) != 2000 {
		t.Fatalf("another client got %d clusters", len(r.Resources))
	}
}

func TestNodeCannotChangeTenant(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	c := e.sotw("a", nil)
	c.send(cds, "", "")
	r := c.recv()
	c.stream.Send(&discovery.DiscoveryRequest{Node: node("b", nil), TypeUrl: cds, ResponseNonce: r.Nonce, VersionInfo: r.VersionInfo})
	select {
	case _, ok := <-c.resps:
		if ok {
			t.Fatal("stream kept serving after its node moved to another tenant")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream not closed after its node moved to another tenant")
	}
}

// BenchmarkIdleStreams measures memory per idle connected stream beyond
// the shared snapshot: 5,000 SotW streams of one tenant, each subscribed
// to CDS and synced.
func BenchmarkIdleStreams(b *testing.B) {
	const streams = 5000
	for i := 0; i < b.N; i++ {
		t := &testing.T{}
		e := newEnvNoCleanup(t)
		e.mesh("a", 20, 0)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		ctx, cancel := context.WithCancel(context.Background())
		var clients []discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
		for j := 0; j < streams; j++ {
			st, err := discovery.NewAggregatedDiscoveryServiceClient(e.conn).StreamAggregatedResources(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := st.Send(&discovery.DiscoveryRequest{Node: node("a", nil), TypeUrl: cds}); err != nil {
				b.Fatal(err)
			}
			r, err := st.Recv()
			if err != nil {
				b.Fatal(err)
			}
			_ = st.Send(&discovery.DiscoveryRequest{TypeUrl: cds, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce})
			clients = append(clients, st)
		}
		time.Sleep(500 * time.Millisecond) // let the last ACKs land
		runtime.GC()
		runtime.ReadMemStats(&after)
		// Client and server share this process: the figure includes both
		// ends of each stream, so the server's own share is below it.
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/streams, "heap-B/stream")
		b.ReportMetric(float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse)/streams, "heap+stack-B/stream")
		b.ReportMetric(float64(runtime.NumGoroutine()-g0)/streams, "goroutines/stream")
		cancel()
		e.close()
		_ = clients
	}
}
