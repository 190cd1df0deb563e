package server_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/snapshot/source/memory"
)

// TestDrainMovesStreamsGradually holds 1,000 streams through a drain:
// the draining replica turns unready at once (a Service stops sending it
// clients), takes no new stream, and ends its streams at random moments
// over the drain period, so they reconnect to the other replica a few at
// a time; every one reconnects and syncs, and none ever sees an empty or
// another tenant's config.
func TestDrainMovesStreamsGradually(t *testing.T) {
	const streams, period = 1000, 2 * time.Second
	objs := fleet.Generate(fleet.Spec{Tenants: 10, Services: 2, Endpoints: 1, Seed: 13})
	start := func(drain time.Duration) (*server.Replica, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		r, err := server.Start(context.Background(), server.Config{Source: memory.New(objs), XDSAddr: "127.0.0.1:0", Drain: drain})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		synced(t, r.Synced())
		return r, func() { cancel(); _ = r.Wait(ctx) }
	}
	a, stopA := start(period)
	b, _ := start(0)

	var mu sync.Mutex
	conns := map[string]*grpc.ClientConn{}
	dial := func(addr string) (*grpc.ClientConn, error) {
		mu.Lock()
		defer mu.Unlock()
		if c := conns[addr]; c != nil {
			return c, nil
		}
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err == nil {
			conns[addr] = c
		}
		return c, err
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	// The Service: a replica that is ready.
	pick := func() string {
		if ok, _ := a.Ready(); ok {
			return a.XDSAddr()
		}
		return b.XDSAddr()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var proxies []*proxy.Proxy
	for i := 0; i < streams; i++ {
		p := proxy.New(fleet.Tenant(i%10), fmt.Sprint("p", i), i%2 == 0)
		proxies = append(proxies, p)
		go p.Redial(ctx, pick, dial)
	}
	for _, p := range proxies {
		select {
		case <-p.Synced():
		case <-time.After(60 * time.Second):
			t.Fatal("a proxy never synced on the first replica")
		}
	}
	began := time.Now()
	moved := make([]time.Duration, streams)
	done := make(chan struct{})
	go func() { stopA(); close(done) }()
	for left := streams; left > 0; time.Sleep(2 * time.Millisecond) {
		if time.Since(began) > period+10*time.Second {
			t.Fatalf("%d proxies still on the draining replica after %s", left, time.Since(began))
		}
		for i, p := range proxies {
			if moved[i] == 0 && p.Server() == b.XDSAddr() {
				moved[i] = time.Since(began)
				left--
			}
		}
	}
	<-done
	eventually(t, "every proxy synced on the other replica", func() bool {
		for _, p := range proxies {
			if n, _ := p.Streams(); n < 2 || p.Latest(proxy.CDS).Version == "" {
				return false
			}
		}
		return true
	})
	for i, p := range proxies {
		if back, empty, foreign := p.Anomalies(); empty+foreign > 0 || back > 0 {
			t.Fatalf("proxy %d saw %d empty states, %d foreign clusters, %d versions back", i, empty, foreign, back)
		}
	}
	sort.Slice(moved, func(i, j int) bool { return moved[i] < moved[j] })
	early := sort.Search(streams, func(i int) bool { return moved[i] > period/10 })
	if early > streams*3/10 {
		t.Fatalf("%d of %d streams moved in the first tenth of the drain period: a drain must spread them (median %s)", early, streams, moved[streams/2])
	}
	t.Logf("moved: first %s, median %s, last %s; %d in the first tenth of %s", moved[0], moved[streams/2], moved[streams-1], early, period)
}
