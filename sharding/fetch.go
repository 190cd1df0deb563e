package sharding

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/xdshard/xdshard/snapshot"
)

// PeerNodePrefix starts the node ID a replica fetches snapshots with
// (the peer exchange's, defined with its format).
const PeerNodePrefix = snapshot.PeerNodePrefix

// MaxSnapshotBytes bounds one response from an owner, a tenant's whole
// snapshot at most.
const MaxSnapshotBytes = 512 << 20

// Fetcher keeps the snapshots of tenants this replica serves but does not
// own in its store, fetched from their owners over delta ADS: the owner's
// encoded resources and versions, unchanged. One stream per followed
// tenant; a broken stream is opened again with backoff, and until a whole
// snapshot arrives the last one keeps serving.
type Fetcher struct {
	// Creds, when set before the first Follow, dials owners with them
	// (mTLS between replicas); plaintext otherwise.
	Creds credentials.TransportCredentials

	self  string
	store *snapshot.Store
	log   *slog.Logger
	obs   FetchObserver

	// beforePublish, in tests, runs before a fetched snapshot is published.
	beforePublish func(tenant string, owner Member)

	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn // owner address -> connection
	closed  bool                        // Close was called
	follows map[string]*follow          // tenant -> its stream
}

type follow struct {
	owner  Member
	cancel context.CancelFunc
	done   chan struct{}
	bytes  atomic.Int64 // the bodies held of the tenant's snapshot
	cand   candidateFollow
	ctx    context.Context  // ended with the follow
	conn   *grpc.ClientConn // to the owner
}

// FetchObserver is told what a Fetcher does; any field may be nil.
type FetchObserver struct {
	// Received is told the body bytes of each response from an owner.
	Received func(bytes int)
	// Fetched is told how long a follow took to its first whole snapshot.
	Fetched func(d time.Duration)
	// Unreachable is told when a tenant's owner has failed to answer for
	// UnreachableAfter; Reached when a whole snapshot came from it again.
	Unreachable, Reached func(tenant string)
}

// UnreachableAfter is how long an owner's stream fails before the
// observer is told the owner is unreachable.
const UnreachableAfter = 500 * time.Millisecond

// NewFetcher returns a fetcher publishing into store as replica self.
func NewFetcher(self string, store *snapshot.Store, log *slog.Logger, obs FetchObserver) *Fetcher {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if obs.Received == nil {
		obs.Received = func(int) {}
	}
	if obs.Fetched == nil {
		obs.Fetched = func(time.Duration) {}
	}
	if obs.Unreachable == nil {
		obs.Unreachable = func(string) {}
	}
	if obs.Reached == nil {
		obs.Reached = func(string) {}
	}
	return &Fetcher{self: self, store: store, log: log, obs: obs, conns: map[string]*grpc.ClientConn{}, follows: map[string]*follow{}}
}

// Follow makes tenant's snapshot come from owner, replacing the stream of
// a former owner (that one's copy keeps serving until the new owner's
// arrives: make before break). Following the same owner again is a no-op.
func (f *Fetcher) Follow(ctx context.Context, tenant string, owner Member) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil // the replica is stopping: a late interest or members change starts nothing
	}
	if cur := f.follows[tenant]; cur != nil && cur.owner == owner {
		return nil
	}
	conn := f.conns[owner.Addr]
	if conn == nil {
		var err error
		// One response carries a tenant's whole snapshot the first time:
		// more than gRPC's default 4 MiB for a large tenant.
		// Keepalive finds an owner whose machine went away without
		// closing the connection (the peer face permits pings every 10 s).
		creds := f.Creds
		if creds == nil {
			creds = insecure.NewCredentials()
		}
		conn, err = grpc.NewClient(owner.Addr, grpc.WithTransportCredentials(creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxSnapshotBytes)),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}))
		if err != nil {
			return fmt.Errorf("peer %s at %s: %w", owner.ID, owner.Addr, err)
		}
		f.conns[owner.Addr] = conn
	}
	if cur := f.follows[tenant]; cur != nil {
		cur.cancel()
	}
	fctx, cancel := context.WithCancel(ctx)
	fl := &follow{owner: owner, cancel: cancel, done: make(chan struct{}), ctx: fctx, conn: conn,
		cand: candidateFollow{wake: make(chan struct{}, 1)}}
	f.follows[tenant] = fl
	go func() {
		defer close(fl.done)
		f.run(fctx, conn, tenant, fl)
	}()
	return nil
}

// publish serves snap, fetched by follow fl of tenant, unless fl is no
// longer the tenant's follow (its owner changed, or the tenant is owned
// here now): a response an old owner sent late must not replace what the
// new one sent, and proxies must never step back. Follow and Stop swap
// follows under the same lock, so once they return no response of the
// stream they replaced is published.
func (f *Fetcher) publish(ctx context.Context, tenant string, fl *follow, snap *snapshot.Snapshot) bool {
	if f.beforePublish != nil {
		f.beforePublish(tenant, fl.owner)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.follows[tenant] != fl || ctx.Err() != nil {
		f.log.Debug("a fetched snapshot from a replaced stream is dropped", "tenant", tenant, "owner", fl.owner.ID, "version", snap.Version)
		return false
	}
	published := f.store.PublishRolledOut(snap)
	f.announced(ctx, tenant, fl, snap.Candidate)
	return published
}

// Bytes is the body bytes of the snapshots followed now: all of them, or
// one tenant's.
func (f *Fetcher) Bytes(tenant string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if tenant != "" {
		if fl := f.follows[tenant]; fl != nil {
			return fl.bytes.Load()
		}
		return 0
	}
	var n int64
	for _, fl := range f.follows {
		n += fl.bytes.Load()
	}
	return n
}

// Stop stops following tenant (it is owned here now, or gone).
func (f *Fetcher) Stop(tenant string) {
	f.mu.Lock()
	fl := f.follows[tenant]
	delete(f.follows, tenant)
	f.mu.Unlock()
	if fl != nil {
		fl.cancel()
		<-fl.done
		fl.cand.wait()
		f.store.EndFetchedCandidate(tenant) // no owner's rollout is followed here any more
	}
}

// Following counts the tenants followed now.
func (f *Fetcher) Following() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.follows)
}

// Close stops every stream and closes the connections; a Follow after it
// does nothing (it opened a connection nothing closed: goleak found them
// after the sharded tests, under load).
func (f *Fetcher) Close() {
	f.mu.Lock()
	f.closed = true
	tenants := make([]string, 0, len(f.follows))
	for t := range f.follows {
		tenants = append(tenants, t)
	}
	f.mu.Unlock()
	for _, t := range tenants {
		f.Stop(t)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, c := range f.conns {
		_ = c.Close()
		delete(f.conns, addr)
	}
}

// run keeps one tenant's stream, opening it again after a failure. When
// the owner fails to answer for UnreachableAfter the observer is told, so
// the replica can build the tenant itself meanwhile.
func (f *Fetcher) run(ctx context.Context, conn *grpc.ClientConn, tenant string, fl *follow) {
	backoff := 100 * time.Millisecond
	var failingSince time.Time
	told := false
	start := time.Now()
	first := true
	whole := func() {
		if first {
			f.obs.Fetched(time.Since(start))
			first = false
		}
		if told {
			f.obs.Reached(tenant)
			told = false
		}
		failingSince, backoff = time.Time{}, 100*time.Millisecond
	}
	for ctx.Err() == nil {
		err := f.stream(ctx, conn, tenant, fl, whole)
		if ctx.Err() != nil {
			return
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
		}
		if !told && time.Since(failingSince) >= UnreachableAfter {
			told = true
			f.obs.Unreachable(tenant)
		}
		f.log.Warn("fetching a tenant's snapshot from its owner failed; trying again", "tenant", tenant, "owner", fl.owner.ID, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// stream subscribes to tenant's whole snapshot and publishes each whole
// snapshot received, ACKing every response.
func (f *Fetcher) stream(ctx context.Context, conn *grpc.ClientConn, tenant string, fl *follow, whole func()) error {
	s, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	md, _ := structpb.NewStruct(map[string]any{"TENANT": tenant})
	first := &discovery.DeltaDiscoveryRequest{
		Node:    &core.Node{Id: PeerNodePrefix + f.self, Metadata: md},
		TypeUrl: snapshot.PeerType, ResourceNamesSubscribe: []string{"*"},
	}
	// Resources already held (from a former owner or stream) are named, so
	// an owner with the same versions sends nothing again.
	items := map[string]*snapshot.Resource{}
	var held int64 // the bodies' bytes in items, kept as responses change it
	if cur := f.store.Current(tenant); cur != nil {
		if set, err := cur.PeerSet(); err == nil && set != nil {
			first.InitialResourceVersions = map[string]string{}
			for _, r := range set.Items {
				items[r.Name] = r
				held += int64(len(r.Body.GetValue()))
				first.InitialResourceVersions[r.Name] = r.Version
			}
		}
	}
	if err := s.Send(first); err != nil {
		return err
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		received := 0
		for _, r := range resp.Resources {
			if old := items[r.Name]; old != nil {
				held -= int64(len(old.Body.GetValue()))
			}
			items[r.Name] = &snapshot.Resource{Name: r.Name, Version: r.Version, Body: r.Resource}
			received += len(r.GetResource().GetValue())
		}
		held += int64(received)
		for _, n := range resp.RemovedResources {
			if old := items[n]; old != nil {
				held -= int64(len(old.Body.GetValue()))
			}
			delete(items, n)
		}
		f.obs.Received(received)
		fl.bytes.Store(held)
		if snap, err := snapshot.FromPeer(tenant, items, f.store.Current(tenant)); err == nil {
			whole()
			// The owner rolled this version out already (a canary rollout
			// runs on the owner): it is served as it is, never a
			// candidate here.
			if f.publish(ctx, tenant, fl, snap) {
				f.log.Debug("snapshot fetched from its owner", "tenant", tenant, "version", snap.Version)
			}
		} else if len(resp.Resources) > 0 {
			f.log.Debug("peer snapshot not whole yet", "tenant", tenant, "err", err)
		}
		if err := s.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: snapshot.PeerType, ResponseNonce: resp.Nonce}); err != nil {
			return err
		}
	}
}
