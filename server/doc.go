// Package server assembles one running xdshard replica, once, for every
// caller: `xdshard serve`, `xdshard bench` and the end-to-end tests all
// start exactly this pipeline:
//
//	source -> model -> builder -> snapshot store -> faces (xds, admin)
//
// It owns the policy between the stages: the source's first full state is
// built at once, not debounced; readiness follows that first build; the xDS
// port opens only then (a proxy connecting earlier would be bound to a mesh
// of no tenants); shutdown stops the source, the builder and both servers.
//
// The faces live beneath it: server/xds (ADS SotW and delta, MCP) and
// server/admin (HTTP). They never import Istio or Kubernetes config types
// nor the builders; this package is the only one that sees both sides.
package server
