package xds

import (
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
	"google.golang.org/protobuf/proto"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// Cache keeps, across builds and tenants, the clusters and endpoints
// translated for a service under the DestinationRule that applies to it,
// with their encoded resources. A resolved model.Service is immutable and
// keeps its pointer while it does not change (model.Mesh), so a build
// translates, validates and encodes only the services that changed since
// a build saw them: an endpoint change in one service re-translates that
// service's clusters alone, and a shared service (istio-system) is
// translated once for every tenant that sees it, its bytes shared. The
// listeners, routes and name table, which aggregate a tenant's services,
// are still built whole. It is safe for concurrent use.
type Cache struct {
	lru          *lru.Cache[clusterKey, *clusterEntry]
	listeners    *lru.Cache[*model.Service, *clusterEntry] // gRPC API listeners, which depend on the service alone
	hits, misses atomic.Int64
}

// DefaultCacheEntries bounds a Cache: services (each under one rule) kept.
const DefaultCacheEntries = 1 << 16

// NewCache returns a Cache of at most entries services (at least 1).
func NewCache(entries int) *Cache {
	c, _ := lru.New[clusterKey, *clusterEntry](max(entries, 1))
	l, _ := lru.New[*model.Service, *clusterEntry](max(entries, 1))
	return &Cache{lru: c, listeners: l}
}

// Len is the services kept.
func (c *Cache) Len() int { return c.lru.Len() }

// Stats are the services taken from the cache and those translated.
func (c *Cache) Stats() (hits, misses int64) { return c.hits.Load(), c.misses.Load() }

// clusterKey is what a service's clusters and endpoints are made from.
type clusterKey struct {
	svc   *model.Service
	rule  *model.Object // the DestinationRule applied; nil for none
	trust string
}

// clusterEntry is a service's translation: immutable once in the cache.
type clusterEntry struct {
	clusters, grpcClusters, endpoints, grpcListen []named
	diags                                         []snapshot.Diagnostic
	encoded                                       map[proto.Message]*snapshot.Resource
}

// cachedEntry is a service translated in this build, for the cache once
// the build's encoding succeeded: under key, or (its gRPC listeners)
// under svc.
type cachedEntry struct {
	key   clusterKey
	svc   *model.Service
	entry *clusterEntry
}

// grpcListenersOf adds the gRPC API listeners of s (make builds them on
// a miss): from the cache when it holds them.
func (t *translation) grpcListenersOf(s *model.Service, make func()) {
	c := t.opts.Cache
	if c == nil {
		make()
		return
	}
	if e, ok := c.listeners.Get(s); ok {
		c.hits.Add(1)
		t.out.grpcListen = append(t.out.grpcListen, e.grpcListen...)
		t.reused = append(t.reused, e)
		return
	}
	c.misses.Add(1)
	n := len(t.out.grpcListen)
	make()
	t.fresh = append(t.fresh, cachedEntry{svc: s, entry: &clusterEntry{grpcListen: append([]named(nil), t.out.grpcListen[n:]...)}})
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
	key := clusterKey{svc: s, rule: drObj, trust: t.opts.TrustDomain}
	if e, ok := c.lru.Get(key); ok {
		c.hits.Add(1)
		t.out.clusters = append(t.out.clusters, e.clusters...)
		t.out.grpcClusters = append(t.out.grpcClusters, e.grpcClusters...)
		t.out.endpoints = append(t.out.endpoints, e.endpoints...)
		for _, d := range e.diags {
			t.diags.add(d)
		}
		t.reused = append(t.reused, e)
		return
	}
	c.misses.Add(1)
	all := t.diags
	t.diags = newDiagnostics()
	n, g, ep := len(t.out.clusters), len(t.out.grpcClusters), len(t.out.endpoints)
	t.clustersFor(s, dr, drObj)
	e := &clusterEntry{
		clusters:     append([]named(nil), t.out.clusters[n:]...),
		grpcClusters: append([]named(nil), t.out.grpcClusters[g:]...),
		endpoints:    append([]named(nil), t.out.endpoints[ep:]...),
		diags:        t.diags.list(),
	}
	t.diags = all
	for _, d := range e.diags {
		t.diags.add(d)
	}
	t.fresh = append(t.fresh, cachedEntry{key: key, entry: e})
}

// seed gives encode the resources of the services taken from the cache.
func (t *translation) seed(done map[proto.Message]*snapshot.Resource) {
	for _, e := range t.reused {
		for m, r := range e.encoded {
			done[m] = r
		}
	}
}

// keep puts the services translated in this build into the cache, with
// the resources encode made of them.
func (t *translation) keep(done map[proto.Message]*snapshot.Resource) {
	for _, f := range t.fresh {
		e := f.entry
		e.encoded = map[proto.Message]*snapshot.Resource{}
		for _, items := range [][]named{e.clusters, e.grpcClusters, e.endpoints, e.grpcListen} {
			for _, it := range items {
				if r := done[it.msg]; r != nil {
					e.encoded[it.msg] = r
				}
			}
		}
		if f.svc != nil {
			t.opts.Cache.listeners.Add(f.svc, e)
		} else {
			t.opts.Cache.lru.Add(f.key, e)
		}
	}
}
