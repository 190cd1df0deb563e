package translate

import (
	"fmt"
	"slices"
	"sync"

	"github.com/xdshard/xdshard/internal/cache"
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/translate/mcp"
	"github.com/xdshard/xdshard/snapshot/translate/objcache"
	"github.com/xdshard/xdshard/snapshot/translate/xds"
)

// Incremental builds tenants as Compose does, and keeps, per tenant, what
// of its last build its endpoints cannot change (the generated policies,
// the MCP view, the NetworkPolicies, their diagnostics). When only a
// tenant's endpoints changed since (EndpointSlices, Pods), BuildEndpoints
// translates its xDS views alone and takes the rest from that build:
// byte for byte the snapshot Compose would make (a property test checks
// it). Both keep a translation cache (xds.Cache) of every service's
// clusters, endpoints and gRPC listeners, shared by the tenants, so a
// build translates only the services that changed: on the reference mesh
// a mesh-wide endpoint change costs half the CPU of whole builds
// (BenchmarkMeshWideEndpoints). It is safe for concurrent use, one build per tenant at a time (the
// builder's rule).
type Incremental struct {
	opts Options
	mu   sync.Mutex
	last map[string]*fixed // tenant -> its last whole build's fixed part
}

// NewIncremental returns an Incremental composing with o.
func NewIncremental(o Options) *Incremental {
	o.cache = xds.NewCache(cache.NewMetrics(o.Registry, "translation"))
	o.mcpCache = mcp.NewCache(cache.NewMetrics(o.Registry, "mcp_objects"))
	o.verdicts = objcache.New[error](cache.NewMetrics(o.Registry, "verdicts"))
	return &Incremental{opts: o, last: map[string]*fixed{}}
}

// Build is Compose, remembering what endpoints cannot change. A build
// that had to leave a bad input out, or failed, remembers nothing: the
// next one is whole again.
func (in *Incremental) Build(v *model.TenantView) (*snapshot.Snapshot, error) {
	in.mu.Lock()
	last := in.last[v.Tenant]
	in.mu.Unlock()
	snap, f, err := in.opts.composeFixed(v, last)
	in.mu.Lock()
	defer in.mu.Unlock()
	if err != nil || f == nil {
		delete(in.last, v.Tenant)
	} else {
		in.last[v.Tenant] = f
	}
	return snap, err
}

// BuildEndpoints builds a tenant whose changes since its last build are
// all endpoints. Without a remembered build (or with MCPServices, whose
// ServiceEntries carry endpoints) it is Build.
func (in *Incremental) BuildEndpoints(v *model.TenantView) (*snapshot.Snapshot, error) {
	in.mu.Lock()
	f := in.last[v.Tenant]
	in.mu.Unlock()
	if f == nil || in.opts.MCPServices {
		return in.Build(v)
	}
	snap, err := endpointsOnly(v, f, in.opts)
	if err != nil {
		return in.Build(v) // the whole path isolates what failed
	}
	return snap, nil
}

// CacheStats are the services whose clusters and endpoints builds took
// from the translation cache, and those they translated.
func (in *Incremental) CacheStats() (hits, misses int64) { return in.opts.cache.Stats() }

// Forget drops what is remembered of tenant (it is gone): its next build,
// if it comes back, is whole.
func (in *Incremental) Forget(tenant string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	delete(in.last, tenant)
	in.opts.cache.Forget(tenant)
}

// CacheLen is the services' parts the translation cache keeps.
func (in *Incremental) CacheLen() int { return in.opts.cache.Len() }

func endpointsOnly(v *model.TenantView, f *fixed, o Options) (snap *snapshot.Snapshot, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("translation panicked: %v", r)
		}
	}()
	diags := slices.Clone(v.Diagnostics)
	v, rejected := validated(v, o.verdicts)
	views, xdsDiags, err := xds.BuildViews(v, xds.Options{Cache: o.cache})
	if err != nil {
		return nil, err
	}
	for view, sets := range f.views {
		views[view] = sets
	}
	diags = slices.Concat(diags, rejected, f.policyDiags, xdsDiags)
	snap = snapshot.New(v.Tenant, views, diags).WithNamespaces(v.Namespaces)
	snap.Rollout = f.rollout
	return snap, nil
}
