package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/server/xds"
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/source/memory"
)

// TestCanaryRollout runs two rollouts over real streams, half the proxies
// canaries: a new version that every canary accepts is served to the
// canaries alone until it has baked, then promoted to all; a new version
// a canary rejects is taken back from the canaries at once, held out,
// and never reaches a proxy that is not a canary.
func TestCanaryRollout(t *testing.T) {
	const percent, bake = 50, 1500 * time.Millisecond
	src := memory.New(fleet.Generate(fleet.Spec{Tenants: 1, Services: 2, Endpoints: 1, Seed: 14}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := server.Start(ctx, server.Config{Source: src, XDSAddr: "127.0.0.1:0", Debounce: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond,
		Rollout: xds.Rollout{Percent: percent, Bake: bake}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	<-r.Synced()
	tenant := fleet.Tenant(0)
	conn, err := grpc.NewClient(r.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var canaries, others []*proxy.Proxy
	run := func(p *proxy.Proxy) {
		go func() { _ = p.Run(ctx, conn) }()
		<-p.Synced()
	}
	for i := 0; i < 16; i++ {
		p := proxy.New(tenant, fmt.Sprint("p", i), i%2 == 0)
		run(p)
		if xds.IsCanary(p.NodeID(), percent) {
			canaries = append(canaries, p)
		} else {
			others = append(others, p)
		}
	}
	if len(canaries) == 0 || len(others) == 0 {
		t.Fatalf("%d canaries and %d others of 16: the test needs both", len(canaries), len(others))
	}
	eds := func(ps []*proxy.Proxy, v string) bool {
		for _, p := range ps {
			if p.Latest(proxy.EDS).Version != v {
				return false
			}
		}
		return true
	}
	stable := canaries[0].Latest(proxy.EDS).Version

	// A good version: canaries first, everyone once it baked.
	if err := src.Apply(ctx, fleet.ScaleEndpoints(0, 0, 2, 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the candidate on every canary", func() bool {
		v := canaries[0].Latest(proxy.EDS).Version
		return v != stable && eds(canaries, v)
	})
	good := canaries[0].Latest(proxy.EDS).Version
	if !eds(others, stable) {
		t.Fatal("a proxy that is not a canary got the candidate before it was promoted")
	}
	eventually(t, "the candidate promoted to every proxy", func() bool { return eds(others, good) })
	if st := r.Store().Rollout(tenant); st.Candidate != nil {
		t.Fatal("a candidate is left after the promotion")
	}

	// A bad version: a canary rejects it; the canaries are taken back to
	// the stable version, and it never reaches the others.
	var nacker *proxy.Proxy
	for i := 0; nacker == nil; i++ {
		p := proxy.New(tenant, fmt.Sprint("nacker-", i), false)
		if xds.IsCanary(p.NodeID(), percent) {
			p.NACK = true // rejects everything it is sent, as an Envoy that cannot load it
			nacker = p
		}
	}
	go func() { _ = nacker.Run(ctx, conn) }()
	eventually(t, "the rejecting canary connected", func() bool { return nacker.Latest(proxy.EDS).Count > 0 })
	if err := src.Apply(ctx, fleet.ScaleEndpoints(0, 0, 3, 2)); err != nil {
		t.Fatal(err)
	}
	var bad string
	eventually(t, "the bad version taken back and held out", func() bool {
		st := r.Store().Rollout(tenant)
		if st.Held != nil {
			bad = st.Held.Version
		}
		return st.Candidate == nil && st.Held != nil
	})
	eventually(t, "the canaries back on the promoted version", func() bool { return eds(canaries, good) })
	badEDS := r.Store().Rollout(tenant).Held.Set(snapshot.ViewEnvoy, proxy.EDS).Version
	for _, p := range others {
		if p.Saw(proxy.EDS, badEDS) {
			t.Fatalf("proxy %s, not a canary, received the rejected version %s", p.NodeID(), bad)
		}
	}
	if got := counterWith(t, r, "xdshard_rollouts_total", "aborted"); got != 1 {
		t.Fatalf("xdshard_rollouts_total{result=aborted} = %v, want 1", got)
	}
	if got := counterWith(t, r, "xdshard_rollouts_total", "promoted"); got != 1 {
		t.Fatalf("xdshard_rollouts_total{result=promoted} = %v, want 1", got)
	}
	// The same content built again is not tried again.
	if r.Store().Publish(r.Store().Rollout(tenant).Held) {
		t.Fatal("the held-out version was published again")
	}
}
