package xds

import (
	"fmt"
	"slices"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// Options tune the translation. The zero value is what istiod does by default.
type Options struct {
	// TrustDomain of SPIFFE identities; default "cluster.local".
	TrustDomain string
	// Cache, when set, keeps the services' clusters and endpoints across
	// builds (see Cache); the output is the same with or without.
	Cache *Cache
}

// Build translates one tenant's view into a snapshot of its Envoy, gRPC
// and NDS views alone, with the view's own diagnostics and the
// translation's. Serving builds with translate.Compose, which adds
// validation, policies and the MCP view.
func Build(v *model.TenantView, opts Options) (*snapshot.Snapshot, error) {
	views, diags, err := BuildViews(v, opts)
	if err != nil {
		return nil, err
	}
	return snapshot.New(v.Tenant, views, append(slices.Clone(v.Diagnostics), diags...)), nil
}

// BuildViews returns the Envoy, gRPC and NDS views and the translation's
// diagnostics (not the view's own), so a caller can add views of its own
// before assembling the snapshot.
func BuildViews(v *model.TenantView, opts Options) (map[snapshot.View]map[string]*snapshot.Set, []snapshot.Diagnostic, error) {
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	t := newTranslation(v, opts)
	t.run()
	views, err := t.encode()
	if err != nil {
		return nil, nil, fmt.Errorf("tenant %s: %w", v.Tenant, err)
	}
	return views, t.diags.list(), nil
}

// translation is the state of one Build call; it is never shared.
type translation struct {
	view  *model.TenantView
	opts  Options
	diags *diagnostics

	services []*model.Service          // visible and allowed by Sidecar egress, by hostname
	byHost   map[string]*model.Service // hostname -> service
	rules    *destinationRules
	vs       *virtualServices

	routeCache map[routeKey]*routePart // routes per service port, shared by both views

	out resources
	err error // the first failure of a part encoded while translated (a bug)

	used  []cacheKey                    // services' parts taken from opts.Cache
	fresh map[cacheKey]*cacheEntry      // services' parts translated here, for opts.Cache
	deps  []hostDep                     // while a part for opts.Cache is translated: its lookups
	prev  *lastBuild                    // the tenant's last build's other resources and sets (opts.Cache)
	made  map[string]*snapshot.Resource // the rest encoded here, by madeKey, for opts.Cache
	sets  map[string]*snapshot.Set      // the sets made here, by key, for opts.Cache
}

func newTranslation(v *model.TenantView, opts Options) *translation {
	t := &translation{view: v, opts: opts, diags: newDiagnostics(), byHost: map[string]*model.Service{}, routeCache: map[routeKey]*routePart{},
		fresh: map[cacheKey]*cacheEntry{}, made: map[string]*snapshot.Resource{}, sets: map[string]*snapshot.Set{}, prev: opts.Cache.last(v.Tenant)}
	t.services = egressServices(v, t.diags)
	for _, s := range t.services {
		if _, dup := t.byHost[s.Hostname]; dup {
			t.diags.errorf(nil, s.Origin, fmt.Sprintf("%s %s/%s", s.Kind, s.Namespace, s.Name),
				"host %s is already defined by another visible service; this one is ignored (rename the host or narrow exportTo)", s.Hostname)
			continue
		}
		t.byHost[s.Hostname] = s
	}
	t.rules = newDestinationRules(v.DestinationRules, t.diags)
	t.vs = newVirtualServices(v.VirtualServices, t.byHost, t.diags)
	return t
}

func (t *translation) run() {
	// Sized as the tenant's last build's sets: most builds make about as
	// many resources again.
	for _, x := range []struct {
		key   string
		items *[]named
	}{
		{"cds", &t.out.clusters}, {"gcds", &t.out.grpcClusters}, {"eds", &t.out.endpoints}, {"lds", &t.out.listeners},
		{"rds", &t.out.routes}, {"glds", &t.out.grpcListen}, {"grds", &t.out.grpcRoutes},
	} {
		if s := t.prev.sets[x.key]; s != nil {
			*x.items = make([]named, 0, s.Len())
		}
	}
	for _, s := range t.services {
		if t.byHost[s.Hostname] != s {
			continue
		}
		t.clusters(s)
	}
	t.envoyListeners()
	t.grpcListeners()
	t.nameTable()
}
