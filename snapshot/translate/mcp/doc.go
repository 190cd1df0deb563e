// Package mcp builds a tenant's MCP view: its own Istio config and the
// isolation policies generated for it, each item an
// istio.mcp.v1alpha1.Resource named "namespace/name" with a stable
// per-object version, keyed by snapshot.MCPKey so istiods asking for v1,
// v1beta1 or v1alpha3 of a kind are all served. Never imports the server.
package mcp
