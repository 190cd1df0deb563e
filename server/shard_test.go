package server_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/sharding"
	"github.com/xdshard/xdshard/snapshot/source/memory"
)

func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var ls []net.Listener
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// TestStaticPeersBuildOnceServeEverywhere: three replicas with static
// peers over one mesh build each tenant once in all (its owner), serve
// every tenant from every replica with the owner's very versions, and a
// one-tenant change costs exactly one build in the whole deployment.
func TestStaticPeersBuildOnceServeEverywhere(t *testing.T) {
	objs := fleet.Generate(fleet.Spec{Tenants: 6, Services: 3, Endpoints: 2, Seed: 3})
	addrs := freeAddrs(t, 3)
	var peers []sharding.Member
	for i, a := range addrs {
		peers = append(peers, sharding.Member{ID: fmt.Sprint("r", i), Addr: a})
	}
	var replicas []*server.Replica
	var sources []*memory.Source
	for i := range peers {
		src := memory.New(objs)
		ctx, cancel := context.WithCancel(context.Background())
		r, err := server.Start(ctx, server.Config{Source: src, XDSAddr: "127.0.0.1:0", MCPAddr: "127.0.0.1:0", Debounce: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond,
			ReplicaID: peers[i].ID, PeerAddr: peers[i].Addr, Peers: peers, FetchGrace: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); r.Close() })
		replicas, sources = append(replicas, r), append(sources, src)
	}
	for _, r := range replicas {
		synced(t, r.Synced())
	}
	const tenants = 7 // six and istio-system
	held := 0
	for _, r := range replicas {
		held += len(r.Tenants())
	}
	if held != tenants {
		t.Fatalf("the replicas hold %d snapshots before any client came, want each tenant's on its owner only (%d)", held, tenants)
	}
	if n := totalBuilds(t, replicas); n != tenants {
		t.Fatalf("%d builds in all for %d tenants, want each tenant built once, by its owner", n, tenants)
	}
	owned := 0.0
	for _, r := range replicas {
		owned += gaugeNamed(t, r, "xdshard_owned_tenants")
		if m := gaugeNamed(t, r, "xdshard_members"); m != 3 {
			t.Fatalf("xdshard_members = %v, want 3", m)
		}
	}
	if owned != tenants {
		t.Fatalf("xdshard_owned_tenants sums to %v over the replicas, want %d", owned, tenants)
	}

	// A proxy of each tenant on each replica: all of a tenant's proxies
	// receive the same versions, whichever replica they reach.
	tenant := fleet.Tenant(2)
	var proxies []*proxy.Proxy
	var stops []context.CancelFunc
	for i, r := range replicas {
		conn, err := grpc.NewClient(r.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		p := proxy.New(tenant, fmt.Sprint("p", i), i%2 == 1)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		stops = append(stops, cancel)
		go func() { _ = p.Run(ctx, conn) }()
		select {
		case <-p.Synced():
		case <-time.After(20 * time.Second):
			t.Fatalf("the proxy on replica %d (owner %s) never synced", i, r.Owner(tenant))
		}
		proxies = append(proxies, p)
	}
	sameVersions := func() bool {
		for _, typ := range proxy.Types {
			for _, p := range proxies[1:] {
				if p.Latest(typ).Version != proxies[0].Latest(typ).Version {
					return false
				}
			}
		}
		return true
	}
	eventually(t, "identical versions on every replica", sameVersions)

	before, eds := totalBuilds(t, replicas), proxies[0].Latest(proxy.EDS).Version
	for _, src := range sources {
		if err := src.Apply(context.Background(), fleet.ScaleEndpoints(2, 1, 3, 9)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the change on every replica, with one version", func() bool {
		return proxies[0].Latest(proxy.EDS).Version != eds && sameVersions()
	})
	// Every replica took the change (Apply returns once its builder has
	// it); once every builder is idle, every build it causes is counted.
	eventually(t, "every replica's builder idle", func() bool {
		for _, r := range replicas {
			if !r.Idle() {
				return false
			}
		}
		return true
	})
	if n := totalBuilds(t, replicas) - before; n != 1 {
		t.Fatalf("a one-tenant change cost %d builds in the deployment, want 1 (by the owner)", n)
	}

	remote := 0.0
	for _, r := range replicas {
		remote += gaugeNamed(t, r, "xdshard_remote_snapshots")
	}
	if remote != 2 {
		t.Fatalf("xdshard_remote_snapshots sums to %v, want 2 (the tenant on the two replicas that do not own it)", remote)
	}

	// Once its last local client leaves, a replica drops the snapshot it
	// fetched (after the grace); the owner keeps its own.
	for _, stop := range stops {
		stop()
	}
	for i, r := range replicas {
		owner := r.Owner(tenant) == fmt.Sprint("r", i)
		eventually(t, fmt.Sprintf("replica %d holding %s only if it owns it", i, tenant), func() bool {
			return (r.Store().Current(tenant) != nil) == owner
		})
	}

	// An istiod on a replica that owns only some tenants gets, in its first
	// answer, every tenant's config: the replica fetches the others before
	// it answers, since an MCP response is the full state of its type.
	ist := connectIstiod(t, replicas[0], "")
	namespaces := map[string]bool{}
	for _, o := range ist.state["security.istio.io/v1/PeerAuthentication"] {
		ns, _, _ := strings.Cut(o.Metadata.Name, "/")
		namespaces[ns] = true
	}
	for i := 0; i < 6; i++ {
		if !namespaces[fleet.Tenant(i)] {
			t.Fatalf("istiod's first PeerAuthentications lack tenant %s's (have %v): a partial state would delete it", fleet.Tenant(i), namespaces)
		}
	}
}

func totalBuilds(t *testing.T, rs []*server.Replica) uint64 {
	var n uint64
	for _, r := range rs {
		n += histogramCount(t, r, "xdshard_push_stage_seconds", "build")
	}
	return n
}

// TestLargeTenantCrossesReplicas: a tenant whose snapshot is larger than
// gRPC's default 4 MiB message, and has more resources than a proxy may
// name, is still fetched whole from its owner, with the owner's version.
func TestLargeTenantCrossesReplicas(t *testing.T) {
	objs := fleet.Generate(fleet.Spec{Tenants: 1, Services: 2500, Endpoints: 2, Seed: 4})
	addrs := freeAddrs(t, 2)
	peers := []sharding.Member{{ID: "r0", Addr: addrs[0]}, {ID: "r1", Addr: addrs[1]}}
	var replicas []*server.Replica
	for i := range peers {
		ctx, cancel := context.WithCancel(context.Background())
		r, err := server.Start(ctx, server.Config{Source: memory.New(objs), XDSAddr: "127.0.0.1:0", ReplicaID: peers[i].ID, PeerAddr: peers[i].Addr, Peers: peers})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); r.Close() })
		replicas = append(replicas, r)
		synced(t, r.Synced())
	}
	tenant := fleet.Tenant(0)
	owner := replicas[0]
	other := replicas[1]
	if owner.Owner(tenant) != "r0" {
		owner, other = other, owner
	}
	snap := owner.Store().Current(tenant)
	set, err := snap.PeerSet()
	if err != nil {
		t.Fatal(err)
	}
	size := 0
	for _, r := range set.Items {
		size += len(r.Body.GetValue())
	}
	if size <= 4<<20 || set.Len() <= 20000 {
		t.Fatalf("the tenant's snapshot is %d bytes in %d resources; the test needs more than 4 MiB and 20,000", size, set.Len())
	}
	conn, err := grpc.NewClient(other.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p := proxy.New(tenant, "big", true)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = p.Run(ctx, conn) }()
	select {
	case <-p.Synced():
	case <-time.After(60 * time.Second):
		t.Fatal("a proxy of the large tenant on the replica that does not own it never synced")
	}
	if got := other.Store().Current(tenant); got == nil || got.Version != snap.Version {
		t.Fatalf("the fetched copy's version differs from the owner's")
	}
}

// TestFetchedSnapshotsBoundedByBytes: the fetched snapshots no local
// client reads any more are kept through their grace period only within
// FetchCacheBytes; past it, the least recently left go at once, while a
// tenant a client still reads stays whatever its size.
func TestFetchedSnapshotsBoundedByBytes(t *testing.T) {
	objs := fleet.Generate(fleet.Spec{Tenants: 8, Services: 3, Endpoints: 2, Seed: 6})
	addrs := freeAddrs(t, 2)
	peers := []sharding.Member{{ID: "r0", Addr: addrs[0]}, {ID: "r1", Addr: addrs[1]}}
	var replicas []*server.Replica
	for i := range peers {
		ctx, cancel := context.WithCancel(context.Background())
		r, err := server.Start(ctx, server.Config{Source: memory.New(objs), XDSAddr: "127.0.0.1:0", ReplicaID: peers[i].ID, PeerAddr: peers[i].Addr, Peers: peers,
			FetchGrace: time.Hour, FetchCacheBytes: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); r.Close() })
		replicas = append(replicas, r)
		synced(t, r.Synced())
	}
	r := replicas[0]
	var foreign []string
	for i := 0; i < 8; i++ {
		if r.Owner(fleet.Tenant(i)) == "r1" {
			foreign = append(foreign, fleet.Tenant(i))
		}
	}
	if len(foreign) < 2 {
		t.Fatalf("r1 owns %v; the test needs two tenants it owns", foreign)
	}
	conn, err := grpc.NewClient(r.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	run := func(tenant string) context.CancelFunc {
		p := proxy.New(tenant, "p-"+tenant, false)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		go func() { _ = p.Run(ctx, conn) }()
		select {
		case <-p.Synced():
		case <-time.After(20 * time.Second):
			t.Fatalf("a proxy of %s on the replica that does not own it never synced", tenant)
		}
		return cancel
	}
	stopA := run(foreign[0])
	run(foreign[1])
	if gaugeNamed(t, r, "xdshard_remote_snapshot_bytes") <= 0 {
		t.Fatal("xdshard_remote_snapshot_bytes is 0 with two fetched snapshots")
	}
	stopA()
	eventually(t, "the snapshot nobody reads dropped at once (past the byte bound), not after the hour's grace", func() bool {
		return r.Store().Current(foreign[0]) == nil
	})
	if r.Store().Current(foreign[1]) == nil {
		t.Fatal("the snapshot a client still reads was dropped")
	}
}
