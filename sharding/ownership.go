package sharding

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"

	"github.com/xdshard/xdshard/internal/cache"
	"github.com/xdshard/xdshard/snapshot"
)

// Ownership is one replica's sharding policy: which tenants it builds
// (those the ring gives it, and those it adopted while their owner does
// not answer), which it follows from their owners (while a local client
// reads them), how tenants move when members change (make before break),
// and when a fetched copy nobody here reads goes (a grace period, and a
// byte bound on such copies). The replica wires it: its builder asks Owns,
// its store tells Interest, its peer face asks BuiltSinceOwned.
type Ownership struct {
	cfg     OwnershipConfig
	ctx     context.Context
	fetcher *Fetcher
	log     *slog.Logger

	ring atomic.Pointer[Ring]

	// followMu: following a foreign tenant and dropping it exclude each
	// other, so a client that comes meanwhile never waits on a tenant
	// dropped and not followed.
	followMu sync.Mutex

	dropsMu sync.Mutex
	drops   map[string]Timer          // tenant ("" every tenant) -> when its fetched copy goes
	idle    *cache.LRU[string, int64] // fetched tenants no local client reads, by bytes (under dropsMu)
	evicted []string                  // what idle let go in the call at hand (under dropsMu)

	adoptMu   sync.Mutex
	adopted   map[string]string // tenant -> its unreachable owner, built here meanwhile
	builtHere map[string]bool   // built here since this replica came to own them: what the peer face gives
}

// OwnershipConfig is what an Ownership works with.
type OwnershipConfig struct {
	Self    string // this replica's ID
	Store   *snapshot.Store
	Members []Member // the members at start
	Logger  *slog.Logger
	// Creds dial owners (mTLS between replicas); nil: plaintext.
	Creds credentials.TransportCredentials
	// Fetch observes the fetcher (Unreachable and Reached are the
	// Ownership's own: adoption).
	Fetch FetchObserver
	// Grace is how long a fetched copy stays after its last local client
	// left; default 30 s.
	Grace time.Duration
	// CacheBytes bounds the fetched copies no local client reads; the
	// oldest go first past it. Default cache.DefaultBytes (256 MiB).
	CacheBytes int64
	// Registry, if set, receives that cache's metrics (cache="fetched").
	Registry prometheus.Registerer
	// Tenants lists the mesh's tenants.
	Tenants func() []string
	// Rebuild builds tenants here now: they came to be owned (or adopted)
	// here.
	Rebuild func(tenants []string)
	// Owning, if set, is told of a tenant just before it is built here
	// for the first time since it came to be owned or adopted here.
	Owning func(tenant string)
	// Handover, if set, is told of each tenant whose owner changed.
	Handover func(tenant string)
	// AfterFunc makes timers (tests: a fake clock); time.AfterFunc if nil.
	AfterFunc func(d time.Duration, f func()) Timer
}

// Timer is what Ownership needs of a timer.
type Timer interface {
	Reset(d time.Duration) bool
	Stop() bool
}

// DefaultFetchGrace and DefaultFetchCacheBytes are OwnershipConfig's
// defaults.
const (
	DefaultFetchGrace      = 30 * time.Second
	DefaultFetchCacheBytes = cache.DefaultBytes
)

// NewOwnership starts as one of cfg.Members; ctx bounds its fetches and
// timers.
func NewOwnership(ctx context.Context, cfg OwnershipConfig) *Ownership {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultFetchGrace
	}
	if cfg.CacheBytes <= 0 {
		cfg.CacheBytes = DefaultFetchCacheBytes
	}
	if cfg.AfterFunc == nil {
		cfg.AfterFunc = func(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
	}
	if cfg.Owning == nil {
		cfg.Owning = func(string) {}
	}
	if cfg.Handover == nil {
		cfg.Handover = func(string) {}
	}
	o := &Ownership{cfg: cfg, ctx: ctx, log: cfg.Logger, drops: map[string]Timer{}, adopted: map[string]string{}, builtHere: map[string]bool{}}
	o.idle = cache.New(cache.Options[string, int64]{MaxBytes: cfg.CacheBytes, Strict: true, Size: func(b int64) int64 { return b },
		OnEvict: func(t string, _ int64) { o.evicted = append(o.evicted, t) }, Metrics: cache.NewMetrics(cfg.Registry, "fetched")})
	obs := cfg.Fetch
	obs.Unreachable, obs.Reached = o.Adopt, o.Unadopt
	o.fetcher = NewFetcher(cfg.Self, cfg.Store, cfg.Logger, obs)
	o.fetcher.Creds = cfg.Creds
	o.ring.Store(NewRing(cfg.Members))
	return o
}

// Fetcher is the fetcher following the foreign tenants' owners.
func (o *Ownership) Fetcher() *Fetcher { return o.fetcher }

// Ring is the ring of the members now.
func (o *Ownership) Ring() *Ring { return o.ring.Load() }

// RingOwns says whether the ring gives tenant to this replica.
func (o *Ownership) RingOwns(tenant string) bool {
	m, ok := o.ring.Load().Owner(tenant)
	return !ok || m.ID == o.cfg.Self
}

// Owns says whether this replica builds tenant: the ring gives it to this
// replica, or its owner does not answer (adopted). Two builders for a
// moment publish identical bytes, while none would leave clients waiting.
func (o *Ownership) Owns(tenant string) bool {
	if o.RingOwns(tenant) {
		return true
	}
	o.adoptMu.Lock()
	defer o.adoptMu.Unlock()
	_, ok := o.adopted[tenant]
	return ok
}

// Owner names the replica the ring gives tenant.
func (o *Ownership) Owner(tenant string) string {
	m, _ := o.ring.Load().Owner(tenant)
	return m.ID
}

// Origin says where this replica's copy of tenant comes from, for
// operators: built here, built here while its owner does not answer, or
// fetched from its owner.
func (o *Ownership) Origin(tenant string) (owner, origin string) {
	owner = o.Owner(tenant)
	switch {
	case owner == "":
		return "", ""
	case o.RingOwns(tenant):
		return owner, "built here"
	}
	o.adoptMu.Lock()
	_, adopted := o.adopted[tenant]
	o.adoptMu.Unlock()
	if adopted {
		return owner, "built here while " + owner + " does not answer"
	}
	return owner, "fetched from " + owner
}

// Adopted counts the tenants built here while their owner does not answer.
func (o *Ownership) Adopted() int {
	o.adoptMu.Lock()
	defer o.adoptMu.Unlock()
	return len(o.adopted)
}

// Adopt builds tenant here while its owner does not answer: a proxy that
// failed over from a dead owner gets its config at once, not after the
// owner's Lease expired. The fetcher keeps trying the owner meanwhile.
func (o *Ownership) Adopt(tenant string) {
	if o.RingOwns(tenant) {
		return
	}
	owner := o.Owner(tenant)
	o.adoptMu.Lock()
	_, was := o.adopted[tenant]
	o.adopted[tenant] = owner
	o.adoptMu.Unlock()
	if !was {
		o.log.Warn("a tenant's owner does not answer; building the tenant here until it does", "tenant", tenant, "owner", owner)
		o.cfg.Owning(tenant)
		o.cfg.Rebuild([]string{tenant})
	}
}

// Unadopt leaves tenant to its owner again: it answered, or membership
// named another.
func (o *Ownership) Unadopt(tenant string) {
	o.adoptMu.Lock()
	_, was := o.adopted[tenant]
	delete(o.adopted, tenant)
	o.adoptMu.Unlock()
	if was {
		if !o.RingOwns(tenant) {
			o.forgetBuilt(tenant)
		}
		o.log.Info("a tenant's owner answers again; serving its copy", "tenant", tenant, "owner", o.Owner(tenant))
	}
}

// Built records that tenant was built here, and says whether it was the
// first time since this replica came to own it (the peer face may give it
// to the others from now on).
func (o *Ownership) Built(tenant string) (first bool) {
	o.adoptMu.Lock()
	defer o.adoptMu.Unlock()
	first = !o.builtHere[tenant]
	o.builtHere[tenant] = true
	return first
}

// BuiltSinceOwned says whether tenant was built here since this replica
// came to own it: only then does the peer face give it to the others.
func (o *Ownership) BuiltSinceOwned(tenant string) bool {
	o.adoptMu.Lock()
	defer o.adoptMu.Unlock()
	return o.builtHere[tenant]
}

func (o *Ownership) forgetBuilt(tenant string) {
	o.adoptMu.Lock()
	delete(o.builtHere, tenant)
	o.adoptMu.Unlock()
}

// FollowMembers applies every change of members until ctx ends.
func (o *Ownership) FollowMembers(ctx context.Context, members Membership) {
	changes := members.Changes()
	if changes == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-changes:
		}
		o.MembersChanged(members.Members())
	}
}

// MembersChanged swaps the ring and moves the tenants whose owner
// changed: one this replica now owns is built (what it served keeps
// serving meanwhile); one it no longer owns follows its new owner while a
// local client reads it (its last copy serves until the owner's
// arrives), and is dropped otherwise.
func (o *Ownership) MembersChanged(members []Member) {
	old := o.ring.Swap(NewRing(members))
	var mine []string
	for _, t := range o.cfg.Tenants() {
		was, _ := old.Owner(t)
		now, _ := o.ring.Load().Owner(t)
		if was == now {
			continue
		}
		o.cfg.Handover(t)
		o.Unadopt(t)     // the new owner is followed afresh (and adopted again if it does not answer)
		o.forgetBuilt(t) // owned here now or not, peers get it only once built here again
		switch {
		case o.Owns(t):
			o.fetcher.Stop(t)
			o.cfg.Owning(t)
			mine = append(mine, t)
		case o.cfg.Store.Watched(t) || o.cfg.Store.Watched(""):
			o.FollowIfWatched(t) // what it serves now keeps serving until the owner's copy arrives
		default:
			o.fetcher.Stop(t)
			o.cfg.Store.Remove(t) // built here before, owned elsewhere now, and nobody here reads it
		}
	}
	o.log.Info("members changed; tenants moved", "members", len(members), "now built here", len(mine))
	o.cfg.Rebuild(mine)
}

// Foreign is told by the builder of a tenant it does not build: gone (it
// left the mesh), or one to follow from its owner.
func (o *Ownership) Foreign(tenant string, gone bool) {
	if gone {
		o.fetcher.Stop(tenant)
		return
	}
	o.FollowIfWatched(tenant)
}

// FollowIfWatched follows a tenant this replica does not own from its
// owner while a local client watches it: a proxy of the tenant, or an
// istiod (MCP reads every tenant). Nobody watching, nothing is fetched.
func (o *Ownership) FollowIfWatched(tenant string) {
	o.followMu.Lock()
	defer o.followMu.Unlock()
	if o.Owns(tenant) || !(o.cfg.Store.Watched(tenant) || o.cfg.Store.Watched("")) {
		return
	}
	owner, _ := o.ring.Load().Owner(tenant)
	if err := o.fetcher.Follow(o.ctx, tenant, owner); err != nil {
		o.log.Warn("cannot follow a tenant's owner", "tenant", tenant, "owner", owner.ID, "err", err)
	}
}

// Interest is the store's: a foreign tenant is followed when its first
// local client comes, and its fetched copy dropped Grace after its last
// one left, or sooner when the fetched copies nobody here reads pass
// CacheBytes. Tenant "" stands for every tenant (an istiod's MCP stream).
func (o *Ownership) Interest(tenant string, watched bool) {
	tenants := []string{tenant}
	if tenant == "" {
		tenants = o.cfg.Tenants()
	}
	if watched {
		o.dropsMu.Lock()
		for _, t := range tenants {
			o.idle.Remove(t)
		}
		o.dropsMu.Unlock()
		for _, t := range tenants {
			o.FollowIfWatched(t)
		}
		return
	}
	// One timer per tenant (or for "", every tenant), reset by each
	// departure: clients coming and going quickly cost no more timers.
	o.dropsMu.Lock()
	defer o.dropsMu.Unlock()
	if o.ctx.Err() != nil {
		return
	}
	for _, t := range tenants {
		if o.RingOwns(t) || o.cfg.Store.Watched(t) || o.cfg.Store.Watched("") {
			continue
		}
		o.idle.Put(t, o.fetcher.Bytes(t))
	}
	evict := o.evicted
	o.evicted = nil
	if len(evict) > 0 {
		go o.drop(evict, "the fetched snapshots no local client reads passed the cache bound")
	}
	if t := o.drops[tenant]; t != nil {
		t.Reset(o.cfg.Grace)
		return
	}
	o.drops[tenant] = o.cfg.AfterFunc(o.cfg.Grace, func() {
		o.dropsMu.Lock()
		delete(o.drops, tenant)
		for _, t := range tenants {
			o.idle.Remove(t)
		}
		o.dropsMu.Unlock()
		o.drop(tenants, "no local client left")
	})
}

// drop forgets the fetched (or adopted) copies of the tenants no local
// client reads.
func (o *Ownership) drop(tenants []string, why string) {
	if o.ctx.Err() != nil {
		return
	}
	for _, t := range tenants {
		o.dropUnwatched(t, why)
	}
}

// dropUnwatched forgets tenant's fetched copy and stops following it, if
// no local client watches it: the check and the removal are one step in
// the store, and following and dropping exclude each other (followMu),
// so a client that comes meanwhile either keeps the copy or has the
// tenant followed again once it is dropped.
func (o *Ownership) dropUnwatched(t, why string) {
	o.followMu.Lock()
	defer o.followMu.Unlock()
	if o.RingOwns(t) || !o.cfg.Store.RemoveUnwatched(t) {
		return
	}
	o.Unadopt(t)
	o.fetcher.Stop(t)
	o.log.Debug("dropped a fetched snapshot", "tenant", t, "why", why)
}

// HoldsEveryTenant says whether the store has a copy of every tenant of
// the mesh: built here, or fetched from its owner.
func (o *Ownership) HoldsEveryTenant() bool {
	for _, t := range o.cfg.Tenants() {
		if o.cfg.Store.Current(t) == nil {
			return false
		}
	}
	return true
}

// Close stops the drop timers and every fetch.
func (o *Ownership) Close() {
	o.dropsMu.Lock()
	for t, timer := range o.drops {
		timer.Stop()
		delete(o.drops, t)
	}
	o.dropsMu.Unlock()
	o.fetcher.Close()
}
