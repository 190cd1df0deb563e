package translate

import (
	"fmt"
	"slices"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/translate/mcp"
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
func Compose(v *model.TenantView) (*snapshot.Snapshot, error) {
	diags := slices.Clone(v.Diagnostics)
	v, rejected := validated(v)
	generated, policyDiags := policy.Generate(v, policy.Options{})
	views, xdsDiags, err := xds.BuildViews(v, xds.Options{})
	if err != nil {
		return nil, err
	}
	views[snapshot.ViewMCP], views[snapshot.ViewMCPByRevision], err = mcp.Build(v, generated)
	if err != nil {
		return nil, fmt.Errorf("tenant %s: MCP view: %w", v.Tenant, err)
	}
	diags = slices.Concat(diags, rejected, policyDiags, xdsDiags)
	return snapshot.New(v.Tenant, views, diags).WithNamespaces(v.Namespaces), nil
}

// validated returns v without the objects istiod would reject, and a
// diagnostic for each. The caller's view is not changed.
func validated(v *model.TenantView) (*model.TenantView, []snapshot.Diagnostic) {
	var diags []snapshot.Diagnostic
	keep := func(objs []*model.Object) []*model.Object {
		var out []*model.Object
		for _, o := range objs {
			if err := validate.Object(o); err != nil {
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
