package translate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/translate/mcp"
	"github.com/xdshard/xdshard/snapshot/translate/objcache"
	"github.com/xdshard/xdshard/snapshot/translate/policy"
	"github.com/xdshard/xdshard/snapshot/translate/validate"
	"github.com/xdshard/xdshard/snapshot/translate/xds"
)

// Compose is what xdshard serves a tenant with: its Envoy, gRPC and NDS
// views (xds), its generated isolation policies (policy), and its MCP view
// for istiod (mcp), partitioned by istiod revision.
//
// Objects istiod would reject are left out of every view first, with an
// error diagnostic: istiod never NACKs, so the tenant's status is the only
// place an operator would learn why an object has no effect. Each stage
// returns its own diagnostics; Compose gathers them once, in pipeline
// order: the view's (source and resolution), validation, policy,
// translation.
//
// An input whose config fails a later stage (go-control-plane's Validate,
// the views' consistency check, a panic) is found and left out with an
// error diagnostic naming it, and the rest of the tenant builds: a bad
// object costs only itself (isolate.go).
func Compose(v *model.TenantView) (*snapshot.Snapshot, error) { return Options{}.Compose(v) }

// Options change what Compose serves.
type Options struct {
	// MCPServices also serves istiod the tenant's Kubernetes Services, as
	// generated ServiceEntries with their endpoints: for an istiod whose
	// only config source is xdshard.
	MCPServices bool
	// Registry, if set, receives NewIncremental's caches' metrics
	// (cache="translation", "mcp_objects", "verdicts").
	Registry prometheus.Registerer

	// cache keeps services' clusters and endpoints across builds, and
	// mcpCache and verdicts each input object's MCP resource and istiod's
	// verdict on it while it lives; set by NewIncremental (Compose itself
	// keeps nothing).
	cache    *xds.Cache
	mcpCache *mcp.Cache
	verdicts *objcache.Cache[error]
}

// Compose is Compose with o.
func (o Options) Compose(v *model.TenantView) (*snapshot.Snapshot, error) {
	snap, _, err := o.composeFixed(v, nil)
	return snap, err
}

// composeFixed is Compose, and what of it endpoints cannot change (nil
// when a bad input had to be isolated). last, when set, is that of the
// tenant's last build, whose unchanged parts are reused.
func (o Options) composeFixed(v *model.TenantView, last *fixed) (*snapshot.Snapshot, *fixed, error) {
	diags := slices.Clone(v.Diagnostics)
	v, rejected := validated(v, o.verdicts)
	snap, f, err := o.composeParts(v, diags, rejected, last)
	if err == nil {
		return snap, f, nil
	}
	try := func(v *model.TenantView) error {
		_, err := o.compose(v, nil, nil)
		return err
	}
	if try(keeping(v, nil)) != nil {
		return nil, nil, err // not caused by an input: a fault in xdshard, and nothing is published
	}
	v, left := isolate(v, try)
	snap, err = o.compose(v, diags, append(rejected, left...))
	return snap, nil, err
}

// compose is one attempt at a tenant's snapshot; a panic in a stage is
// returned as an error, for Compose to isolate.
func (o Options) compose(v *model.TenantView, diags, rejected []snapshot.Diagnostic) (*snapshot.Snapshot, error) {
	snap, _, err := o.composeParts(v, diags, rejected, nil)
	return snap, err
}

// fixed is what of a tenant's snapshot only its Istio config, Services
// and Namespaces decide, never its endpoints: the generated policies'
// views (MCP, NetworkPolicies) and diagnostics.
type fixed struct {
	views       map[snapshot.View]map[string]*snapshot.Set
	policyDiags []snapshot.Diagnostic // the generated policies' and the rollout setting's
	rollout     snapshot.RolloutPolicy
	mcp         *mcp.Last // for the next build's MCP view
	// entries are the ServiceEntries made of the tenant's Services
	// (MCPServices), for the next build to keep.
	entries map[*model.Service]*model.Object
}

func (o Options) composeParts(v *model.TenantView, diags, rejected []snapshot.Diagnostic, last *fixed) (snap *snapshot.Snapshot, f *fixed, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("translation panicked: %v", r)
		}
	}()
	generated, policyDiags := policy.Generate(v, policy.Options{})
	views, xdsDiags, err := xds.BuildViews(v, xds.Options{Cache: o.cache})
	if err != nil {
		return nil, nil, err
	}
	var lastMCP *mcp.Last
	var lastKube *snapshot.Set
	var lastEntries map[*model.Service]*model.Object
	if last != nil {
		lastMCP, lastKube, lastEntries = last.mcp, last.views[snapshot.ViewKube][snapshot.NetworkPolicyKey], last.entries
	}
	forMCP := generated
	var entries map[*model.Service]*model.Object
	if o.MCPServices {
		var ses []*model.Object
		ses, entries = mcp.ServiceEntries(v, lastEntries)
		forMCP = append(slices.Clone(generated), ses...)
	}
	var nextMCP *mcp.Last
	views[snapshot.ViewMCP], views[snapshot.ViewMCPByRevision], nextMCP, err = mcp.Build(v, forMCP, o.mcpCache, lastMCP)
	if err != nil {
		return nil, nil, fmt.Errorf("tenant %s: MCP view: %w", v.Tenant, err)
	}
	if views[snapshot.ViewKube], err = kubeView(generated, lastKube); err != nil {
		return nil, nil, fmt.Errorf("tenant %s: generated NetworkPolicies: %w", v.Tenant, err)
	}
	f = &fixed{policyDiags: policyDiags, views: map[snapshot.View]map[string]*snapshot.Set{}, mcp: nextMCP, entries: entries}
	for _, fv := range []snapshot.View{snapshot.ViewMCP, snapshot.ViewMCPByRevision, snapshot.ViewKube} {
		f.views[fv] = views[fv]
	}
	rollout, rolloutDiags := rolloutPolicy(v)
	f.policyDiags = append(f.policyDiags, rolloutDiags...)
	f.rollout = rollout
	diags = slices.Concat(diags, rejected, f.policyDiags, xdsDiags)
	snap = snapshot.New(v.Tenant, views, diags).WithNamespaces(v.Namespaces)
	snap.Rollout = rollout
	return snap, f, nil
}

// validated returns v without the objects istiod would reject, and a
// diagnostic for each. The caller's view is not changed.
func validated(v *model.TenantView, verdicts *objcache.Cache[error]) (*model.TenantView, []snapshot.Diagnostic) {
	var diags []snapshot.Diagnostic
	keep := func(objs []*model.Object) []*model.Object {
		var out []*model.Object
		for _, o := range objs {
			check := validate.Object
			if model.Kinds[o.Kind].Istio {
				// Istio kinds cost istiod's checks; the rest pass at once, cheaper
				// than a lookup.
				check = func(o *model.Object) error { return verdicts.Get(o, validate.Object) }
			}
			if err := check(o); err != nil {
				diags = append(diags, model.Reject(o, "rejected, as istiod would reject it: "+err.Error()))
				continue
			}
			out = append(out, o)
		}
		return out
	}
	cp := *v
	cp.VirtualServices, cp.DestinationRules = keep(v.VirtualServices), keep(v.DestinationRules)
	cp.Own, cp.Root = map[model.Kind][]*model.Object{}, map[model.Kind][]*model.Object{}
	for k, objs := range v.Own {
		cp.Own[k] = keep(objs)
	}
	for k, objs := range v.Root {
		cp.Root[k] = keep(objs)
	}
	if len(diags) == 0 {
		return v, nil
	}
	return &cp, diags
}

// kubeView is what is applied to Kubernetes for the tenant: its generated
// NetworkPolicies as JSON, ready for server-side apply. A policy whose
// bytes are last's (the tenant's last build's set, or nil) is that
// resource, and the same resources are that set.
func kubeView(generated []*model.Object, last *snapshot.Set) (map[string]*snapshot.Set, error) {
	var items []*snapshot.Resource
	same := last != nil
	for _, o := range generated {
		if o.Kind != model.KindNetworkPolicy {
			continue
		}
		b, err := json.Marshal(o.Body)
		if err != nil {
			return nil, err
		}
		name := o.Namespace + "/" + o.Name
		if r := last.Get(name); r != nil && bytes.Equal(r.Body.GetValue(), b) {
			items = append(items, r)
			continue
		}
		same = false
		items = append(items, snapshot.FromBytes(name, snapshot.NetworkPolicyKey, b))
	}
	if same && len(items) == last.Len() {
		return map[string]*snapshot.Set{snapshot.NetworkPolicyKey: last}, nil
	}
	set, err := snapshot.NewSet(snapshot.NetworkPolicyKey, items)
	if err != nil {
		return nil, err
	}
	return map[string]*snapshot.Set{snapshot.NetworkPolicyKey: set}, nil
}
