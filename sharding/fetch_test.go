package sharding

import (
	"context"
	"net"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/xdshard/xdshard/snapshot"
)

// fakeOwner is an owner's peer face reduced to what a fetch needs: it
// answers a delta stream's first request with one whole snapshot.
type fakeOwner struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	snap *snapshot.Snapshot
}

func (o *fakeOwner) DeltaAggregatedResources(s discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	set, err := o.snap.PeerSet()
	if err != nil {
		return err
	}
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: snapshot.PeerType, Nonce: "1"}
	for _, r := range set.Items {
		resp.Resources = append(resp.Resources, &discovery.Resource{Name: r.Name, Version: r.Version, Resource: r.Body})
	}
	if err := s.Send(resp); err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err != nil {
			return err
		}
	}
}

func startOwner(t *testing.T, id string, snap *snapshot.Snapshot) Member {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(g, &fakeOwner{snap: snap})
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return Member{ID: id, Addr: lis.Addr().String()}
}

// tenantSnapshot is a one-cluster snapshot of tenant "t"; gen changes it.
func tenantSnapshot(t *testing.T, gen int) *snapshot.Snapshot {
	r, err := snapshot.Encode("c1", &cluster.Cluster{Name: "c1", ConnectTimeout: durationpb.New(time.Duration(gen+1) * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	return snapshot.New("t", map[snapshot.View]map[string]*snapshot.Set{snapshot.ViewEnvoy: {
		snapshot.ClusterType: snapshot.MustSet(snapshot.ClusterType, []*snapshot.Resource{r})}}, nil)
}

// TestLateResponseOfAFormerOwnerIsDropped: the tenant's owner changes from
// A to B while A's response is on its way; B's newer snapshot is
// published, and A's, arriving after, is not: proxies never step back.
// Before, any whole snapshot a stream received was published, the
// replaced stream's included.
func TestLateResponseOfAFormerOwnerIsDropped(t *testing.T) {
	old, cur := tenantSnapshot(t, 0), tenantSnapshot(t, 1)
	a, b := startOwner(t, "a", old), startOwner(t, "b", cur)
	store := snapshot.NewStore(5)
	f := NewFetcher("me", store, nil, FetchObserver{})
	defer f.Close()
	arrived, release := make(chan struct{}), make(chan struct{})
	f.beforePublish = func(_ string, owner Member) {
		if owner.ID == "a" {
			close(arrived)
			<-release // A's snapshot is in, not yet published
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := f.Follow(ctx, "t", a); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	fromA := f.follows["t"]
	f.mu.Unlock()
	<-arrived
	if err := f.Follow(ctx, "t", b); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for store.Current("t") == nil || store.Current("t").Version != cur.Version {
		if time.Now().After(deadline) {
			t.Fatal("B's snapshot was never published")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	<-fromA.done // A's stream has made its attempt and ended
	if v := store.Current("t").Version; v != cur.Version {
		t.Fatalf("the store serves %s after A's late response, want B's %s (A's was %s): a proxy steps back", v, cur.Version, old.Version)
	}
}
