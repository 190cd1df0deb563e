package builder

import (
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/mcp"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/policy"
	"github.com/xdshard/xdshard/snapshot/translate"
	"github.com/xdshard/xdshard/snapshot/validate"
)

// Compose is the BuildFunc xdshard serves with: the tenant's Envoy, gRPC
// and NDS views (translate), its generated isolation policies (policy),
// and its MCP view for istiod (mcp), with the namespaces' revisions.
//
// Objects istiod would reject are left out of every view first, with an
// error diagnostic: istiod never NACKs, so the tenant's status is the only
// place an operator would learn why an object has no effect.
func Compose(v *model.TenantView) (*snapshot.Snapshot, error) {
	v = validated(v)
	generated, policyDiags := policy.Generate(v, policy.Options{})
	v = withDiagnostics(v, policyDiags)
	views, diags, err := translate.BuildViews(v, translate.Options{})
	if err != nil {
		return nil, err
	}
	mcpSets, err := mcp.Build(v, generated)
	if err != nil {
		return nil, err
	}
	views[snapshot.ViewMCP] = mcpSets
	return snapshot.New(v.Tenant, views, diags).WithRevisions(v.Revisions), nil
}

// withDiagnostics adds diagnostics to a view without changing the caller's.
func withDiagnostics(v *model.TenantView, d []model.Diagnostic) *model.TenantView {
	if len(d) == 0 {
		return v
	}
	cp := *v
	cp.Diagnostics = append(append([]model.Diagnostic(nil), v.Diagnostics...), d...)
	return &cp
}

// validated returns v without the objects istiod would reject, each
// reported. The caller's view is not changed.
func validated(v *model.TenantView) *model.TenantView {
	cp := *v
	var diags []model.Diagnostic
	keep := func(objs []*model.Object) []*model.Object {
		var out []*model.Object
		for _, o := range objs {
			if err := validate.Object(o); err != nil {
				diags = append(diags, model.Diagnostic{Namespace: o.Namespace, Object: o.Ref(), Origin: o.Origin,
					Message: "rejected, as istiod would reject it: " + err.Error()})
				continue
			}
			out = append(out, o)
		}
		return out
	}
	cp.VirtualServices, cp.DestinationRules = keep(v.VirtualServices), keep(v.DestinationRules)
	cp.Own, cp.Root = map[model.Kind][]*model.Object{}, map[model.Kind][]*model.Object{}
	for k, objs := range v.Own {
		cp.Own[k] = keep(objs)
	}
	for k, objs := range v.Root {
		cp.Root[k] = keep(objs)
	}
	if len(diags) == 0 {
		return v
	}
	cp.Diagnostics = append(append([]model.Diagnostic(nil), v.Diagnostics...), diags...)
	return &cp
}
