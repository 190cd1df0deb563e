// Package manifest reads a mesh from multi-document YAML manifests, in the
// real Kubernetes and Istio shapes, and watches a directory of them.
//
// Decoding is strict: an unknown field, a wrong type, a missing name or
// namespace, an unknown kind or apiVersion, and a second object with the same
// kind/namespace/name are each reported with the file, the line, the object
// and how to fix it. A bad document is rejected alone; the rest still load.
// While watching, a document that stops decoding keeps its last good object,
// so a half-saved edit never takes config away from running proxies.
package manifest
