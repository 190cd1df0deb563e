// Package fleet generates synthetic meshes for benchmarks and load tests:
// T tenants x S services x E endpoints in the real Kubernetes and Istio
// shapes (Namespaces, Services, EndpointSlices, Pods, DestinationRules with
// subsets, weighted VirtualServices, Sidecars), deterministic from a seed,
// and the churn events that change them.
package fleet
