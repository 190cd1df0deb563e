// Package xds turns one tenant's view of the mesh into its xDS
// resources, named as istiod names them: the Envoy sidecar view (CDS, EDS,
// LDS, RDS), the proxyless gRPC view (the same clusters and endpoints, API
// listeners named HOST:PORT with RDS, as istiod's grpcgen shapes them) and
// the DNS name table (NDS).
//
// Build is a pure function of a model.TenantView: identical config yields
// identical bytes and so an identical snapshot version. Problems with
// objects become diagnostics on the snapshot (the object, its file:line and
// a fix); unsupported fields are warnings, never silently dropped. Only a
// fault in xdshard itself is an error, and then nothing is published.
//
// Semantics that differ from istiod because snapshots are per tenant, not
// per proxy:
//   - Sidecar egress narrows a tenant to the union of what each of its
//     namespaces' Sidecar (or the root Sidecar in istio-system) allows; a
//     namespace with neither allows everything visible. Sidecars with a
//     workloadSelector are per workload and are reported, not applied.
//   - Proxyless gRPC clusters carry no TLS settings: ISTIO_MUTUAL for gRPC
//     needs xDS credentials and a certificate provider in the client's
//     bootstrap, which this view does not assume.
//
// With Options.Cache, what is made of one service alone (its clusters
// and endpoints under its DestinationRule, its gRPC API listeners) is kept
// across builds and tenants, keyed by the immutable resolved service and
// rule: a build translates only the services that changed (cache.go). So
// are each service port's routes, keyed by the service and its
// VirtualService and valid while the hosts they route to resolve the same;
// route configurations are assembled from their bytes (vhosts.go). A
// listener or set that comes out as the tenant's last build's is that
// resource or set again. The output is the same with or without the cache.
//
// This package never imports the server.
package xds
