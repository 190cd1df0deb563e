package server_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/sharding"
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/memory"
	"github.com/xdshard/xdshard/snapshot/translate"
)

// TestNewcomerOwnsOnlyOnceBuilt adds a replica whose first build cannot
// finish (held by the test) to two replicas sharding by Leases on a real
// API server. While it builds, the others keep its future tenants: a
// proxy of every tenant connecting to them gets its config, and none of
// them names the newcomer as an owner. Once its build finishes, it takes
// its share, and proxies of every tenant still get their config from
// the replicas that were there before it.
func TestNewcomerOwnsOnlyOnceBuilt(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	leaseNS := uniqueNS("join")
	if err := c.Apply(ctx, "apiVersion: v1\nkind: Namespace\nmetadata: {name: "+leaseNS+"}\n"); err != nil {
		t.Fatal(err)
	}
	const tenants = 8
	objs := fleet.Generate(fleet.Spec{Tenants: tenants, Services: 2, Endpoints: 1, Seed: 31})
	addrs := freeAddrs(t, 3)
	var memberships []*sharding.Leases
	start := func(i int, build func(v *model.TenantView) (*snapshot.Snapshot, error)) *server.Replica {
		t.Helper()
		self := sharding.Member{ID: fmt.Sprint("j", i), Addr: addrs[i]}
		leases, err := sharding.NewLeases(sharding.LeaseConfig{REST: c.REST(), Namespace: leaseNS, Self: self, Duration: 3 * time.Second, Renew: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithCancel(ctx)
		ready := make(chan error, 1)
		go leases.Run(rctx, ready)
		if err := <-ready; err != nil {
			t.Fatal(err)
		}
		memberships = append(memberships, leases)
		inc := translate.NewIncremental(translate.Options{})
		if build == nil {
			build = inc.Build
		}
		r, err := server.Start(rctx, server.Config{Source: memory.New(objs), XDSAddr: "127.0.0.1:0", Debounce: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond,
			ReplicaID: self.ID, PeerAddr: self.Addr, Membership: leases, Balance: -1, Build: build, BuildEndpoints: inc.BuildEndpoints, Forget: inc.Forget})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rcancel(); r.Close() })
		return r
	}
	old := []*server.Replica{start(0, nil), start(1, nil)}
	for _, r := range old {
		synced(t, r.Synced())
	}
	eventually(t, "both replicas in each other's ring", func() bool {
		owners := map[string]bool{}
		for i := 0; i < tenants; i++ {
			owners[old[0].Owner(fleet.Tenant(i))], owners[old[1].Owner(fleet.Tenant(i))] = true, true
		}
		return owners["j0"] && owners["j1"] && len(owners) == 2
	})

	// Proxies connect to the old replicas, a proxy of every tenant each,
	// and must get config whatever the newcomer is doing.
	var mu sync.Mutex
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	n := 0
	connectAll := func(what string) {
		t.Helper()
		var ps []*proxy.Proxy
		for _, r := range old {
			conn, err := grpc.NewClient(r.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			for i := 0; i < tenants; i++ {
				n++
				p := proxy.New(fleet.Tenant(i), fmt.Sprint("p", n), n%2 == 0)
				go func() { _ = p.Run(ctx, conn) }()
				ps = append(ps, p)
			}
		}
		limit := time.After(30 * time.Second)
		for _, p := range ps {
			select {
			case <-p.Synced():
			case <-limit:
				t.Fatalf("%s: proxy %s got no config in 30 s", what, p.NodeID())
			}
		}
	}

	// The newcomer's first build waits for the test.
	gate := make(chan struct{})
	inc := translate.NewIncremental(translate.Options{})
	newcomer := start(2, func(v *model.TenantView) (*snapshot.Snapshot, error) {
		<-gate
		return inc.Build(v)
	})
	var opened sync.Once
	open := func() { opened.Do(func() { close(gate) }) }
	t.Cleanup(open) // runs before the newcomer's Close, which waits for its build
	eventually(t, "the old replicas seeing the newcomer's Lease, joining", func() bool {
		return slices.Equal(memberships[0].Joining(), []string{"j2"}) && slices.Equal(memberships[1].Joining(), []string{"j2"})
	})
	for i := 0; i < tenants; i++ {
		if o := old[0].Owner(fleet.Tenant(i)); o == "j2" {
			t.Fatalf("tenant %s moved to the newcomer before it built anything", fleet.Tenant(i))
		}
	}
	connectAll("while the newcomer builds")

	open()
	synced(t, newcomer.Synced())
	eventually(t, "the newcomer owning its share on the old replicas", func() bool {
		for i := 0; i < tenants; i++ {
			if old[0].Owner(fleet.Tenant(i)) == "j2" && old[1].Owner(fleet.Tenant(i)) == "j2" {
				return true
			}
		}
		return false
	})
	connectAll("once the newcomer owns its share")
}
