package builder

import (
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/mcp"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/policy"
	"github.com/xdshard/xdshard/snapshot/translate"
)

// Compose is the BuildFunc xdshard serves with: the tenant's Envoy, gRPC
// and NDS views (translate), its generated isolation policies (policy),
// and its MCP view for istiod (mcp), with the namespaces' revisions.
func Compose(v *model.TenantView) (*snapshot.Snapshot, error) {
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
