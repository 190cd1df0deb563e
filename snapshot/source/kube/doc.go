// Package kube reads the mesh from a Kubernetes API server: Namespaces,
// Services, EndpointSlices, Pods, NetworkPolicies and Istio's config kinds,
// through client-go's dynamic informers, into the same model the manifest
// source feeds.
//
// Each object is decoded and checked exactly as a manifest file's document
// is (the manifest package's strict decoder), so an object that fails is
// rejected alone with the same diagnostic, and keeps its last good copy.
// A dynamic informer per kind reads whichever of the kind's accepted
// versions the server serves, without a typed client per version; a kind
// whose CRD is not installed is read as empty, with a warning, and read
// once it is installed. Informers strip what the model does not use
// (managedFields, most of a Pod) before caching.
//
// Which namespaces are the mesh is istiod's meshConfig.discoverySelectors
// (Config.DiscoverySelectors, serve --discovery-selectors; selectors.go
// has the rules): objects elsewhere are held by the informers but not
// read into the model, so they make no tenant and get no generated
// NetworkPolicy. Without selectors every namespace is, but Kubernetes' own
// (kube-system, kube-public, kube-node-lease, local-path-storage);
// istio-system always is. A Namespace relabelled into or out of the mesh
// brings its objects in or takes them out, live, and the NetworkPolicies
// generated in one that left are deleted.
//
// It imports the model and the manifest decoder; never a builder,
// translation or the server.
package kube
