// Package translate turns one tenant's view of the mesh into its snapshot.
// Compose is the entry: it leaves out what istiod would reject (validate),
// generates the tenant's isolation policies (policy), builds the Envoy,
// proxyless gRPC and NDS views (xds) and the MCP view for istiod (mcp), and
// gathers each stage's diagnostics once, in that order.
//
// Compose is a pure function of a model.TenantView: identical config gives
// identical bytes and version. It imports the model and the snapshot,
// never the builder, a source or the server.
package translate
