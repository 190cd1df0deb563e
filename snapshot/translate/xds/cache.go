package xds

import (
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/xdshard/xdshard/internal/cache"
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// Cache keeps, across builds and tenants, what is translated of one
// service alone: its clusters and endpoints under the DestinationRule that
// applies to it, and its gRPC API listeners, with their encoded resources.
// A resolved model.Service is immutable and keeps its pointer while it
// does not change (model.Mesh), so a build translates, validates and
// encodes only the services that changed since a build saw them: an
// endpoint change in one service re-translates that service alone, and a
// shared service (istio-system) is translated once for every tenant that
// sees it, its bytes shared. Each service port's routes are kept too
// (vhosts.go), valid while what they refer to resolves the same; the route
// configurations, which aggregate a tenant's services, are assembled from
// their bytes. A tenant's listeners and name table are made whole, but one
// whose inputs or bytes are its last build's is that resource again, and
// so is a set of the same resources.
//
// An entry lives while the last successful build of some tenant used it:
// the cache holds what the served snapshots hold, and no more. It is safe
// for concurrent use, one build per tenant at a time.
type Cache struct {
	mu      sync.Mutex
	entries map[cacheKey]*cacheEntry
	tenants map[string][]cacheKey // what each tenant's last build used
	// made is each tenant's last build's other resources (listeners,
	// route configurations, name tables) and its sets: the snapshot holds
	// them anyway; a build whose bytes come out the same reuses them.
	made map[string]*lastBuild

	hits, misses atomic.Int64
	metrics      *cache.Metrics
}

// NewCache returns an empty Cache reporting to m (nil: to nobody).
func NewCache(m *cache.Metrics) *Cache {
	if m == nil {
		m = cache.NewMetrics(nil, "")
	}
	return &Cache{entries: map[cacheKey]*cacheEntry{}, tenants: map[string][]cacheKey{}, made: map[string]*lastBuild{}, metrics: m}
}

// Len is the entries kept.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Stats are the services taken from the cache and those translated.
func (c *Cache) Stats() (hits, misses int64) { return c.hits.Load(), c.misses.Load() }

// Forget releases what tenant's last build used (the tenant is gone).
func (c *Cache) Forget(tenant string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.releaseLocked(c.tenants[tenant])
	delete(c.tenants, tenant)
	delete(c.made, tenant)
}

// lastBuild is what of a tenant's last build the entries do not hold:
// the resources made outside them, by madeKey, and the sets, by set key.
// Neither map changes once commit hands it over.
type lastBuild struct {
	res  map[string]*snapshot.Resource
	sets map[string]*snapshot.Set
}

// last is tenant's last build's resources made outside the entries, and
// its sets; empty for a nil Cache or a tenant not built yet.
func (c *Cache) last(tenant string) *lastBuild {
	if c == nil {
		return &lastBuild{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if b := c.made[tenant]; b != nil {
		return b
	}
	return &lastBuild{}
}

func (c *Cache) releaseLocked(keys []cacheKey) {
	for _, k := range keys {
		if e := c.entries[k]; e != nil {
			if e.refs--; e.refs == 0 {
				delete(c.entries, k)
			}
		}
	}
}

// get returns the entry of k, if kept.
func (c *Cache) get(k cacheKey) *cacheEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[k]
}

// commit records what a successful build of tenant used: the entries it
// took (used) and those it made (fresh, kept unless another build made the
// same one first); then releases what its previous build used.
func (c *Cache) commit(tenant string, used []cacheKey, fresh map[cacheKey]*cacheEntry, made *lastBuild) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.made[tenant] = made
	keys := make([]cacheKey, 0, len(used)+len(fresh))
	for k, e := range fresh {
		if c.entries[k] == nil {
			c.entries[k] = e
		}
		keys = append(keys, k)
	}
	for _, k := range used {
		if c.entries[k] != nil { // still there: a concurrent build may not have released it
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		c.entries[k].refs++
	}
	c.releaseLocked(c.tenants[tenant])
	c.tenants[tenant] = keys
	c.metrics.Entries(len(c.entries))
}

// cacheKey is what one service's part of a build is made from.
type cacheKey struct {
	svc   *model.Service
	rule  *model.Object // the DestinationRule applied (clusters); nil for none
	trust string
	port  uint32 // partRoutes: the service port
	part  uint8  // partClusters, partListeners or partRoutes
}

const (
	partClusters  = iota // clusters and endpoints
	partListeners        // gRPC API listeners: the service alone decides them
	partRoutes           // one service port's routes (rule is its VirtualService), valid while its deps hold
)

// cacheEntry is a service's translated part: immutable once in the cache
// (but refs, which the cache's lock guards).
type cacheEntry struct {
	clusters, grpcClusters, endpoints, grpcListen []named    // each with res, without msg
	routes                                        *routePart // partRoutes: encoded, without messages
	deps                                          []hostDep  // partRoutes: the lookups routes depend on
	diags                                         []snapshot.Diagnostic
	refs                                          int
}

// clusters adds the clusters and endpoints of s: from the cache when it
// holds them, else translated and kept for the cache.
func (t *translation) clusters(s *model.Service) {
	dr, drObj := t.rules.forHost(s.Hostname)
	c := t.opts.Cache
	if c == nil {
		t.clustersFor(s, dr, drObj)
		return
	}
	key := cacheKey{svc: s, rule: drObj, trust: t.opts.TrustDomain, part: partClusters}
	if e := t.cached(key, nil); e != nil {
		t.out.clusters = append(t.out.clusters, e.clusters...)
		t.out.grpcClusters = append(t.out.grpcClusters, e.grpcClusters...)
		t.out.endpoints = append(t.out.endpoints, e.endpoints...)
		for _, d := range e.diags {
			t.diags.add(d)
		}
		return
	}
	all := t.diags
	t.diags = newDiagnostics()
	n, g, ep := len(t.out.clusters), len(t.out.grpcClusters), len(t.out.endpoints)
	t.clustersFor(s, dr, drObj)
	e := &cacheEntry{
		clusters:     append([]named(nil), t.out.clusters[n:]...),
		grpcClusters: append([]named(nil), t.out.grpcClusters[g:]...),
		endpoints:    append([]named(nil), t.out.endpoints[ep:]...),
		diags:        t.diags.list(),
	}
	t.diags = all
	for _, d := range e.diags {
		t.diags.add(d)
	}
	t.fresh[key] = e
}

// grpcListenersOf adds the gRPC API listeners of s (build makes them on a
// miss): from the cache when it holds them.
func (t *translation) grpcListenersOf(s *model.Service, build func()) {
	if t.opts.Cache == nil {
		build()
		return
	}
	key := cacheKey{svc: s, part: partListeners}
	if e := t.cached(key, nil); e != nil {
		t.out.grpcListen = append(t.out.grpcListen, e.grpcListen...)
		return
	}
	n := len(t.out.grpcListen)
	build()
	t.fresh[key] = &cacheEntry{grpcListen: append([]named(nil), t.out.grpcListen[n:]...)}
}

// cached is the cache's entry of key (nil on a miss, or where valid,
// when given, says the entry does not hold for this build), noted as used
// by this build.
func (t *translation) cached(key cacheKey, valid func(*cacheEntry) bool) *cacheEntry {
	c := t.opts.Cache
	e := c.get(key)
	if e == nil || valid != nil && !valid(e) {
		c.misses.Add(1)
		c.metrics.Miss()
		return nil
	}
	c.hits.Add(1)
	c.metrics.Hit()
	t.used = append(t.used, key)
	return e
}

// keep gives the cache what this build used and made; what it made keeps
// the resources encode made of it, and drops the messages.
func (t *translation) keep(done map[proto.Message]*snapshot.Resource) {
	for _, e := range t.fresh {
		for _, items := range [][]named{e.clusters, e.grpcClusters, e.endpoints, e.grpcListen} {
			for i := range items {
				if r := done[items[i].msg]; r != nil && r.Name == items[i].name {
					items[i].res, items[i].msg = r, nil
				}
			}
		}
	}
	t.opts.Cache.commit(t.view.Tenant, t.used, t.fresh, &lastBuild{res: t.made, sets: t.sets})
}
