// Package manifest reads a mesh from multi-document YAML manifests, in the
// real Kubernetes and Istio shapes, and watches a directory of them.
//
// Decoding is strict: an unknown field, a wrong type, a missing name or
// namespace, an unknown kind or apiVersion, and a second object with the same
// kind/namespace/name are each reported with the file, the line, the object
// and how to fix it. A bad document is rejected alone; the rest still load.
// While watching, a document that stops decoding keeps its last good object,
// so a half-saved edit never takes config away from running proxies.
//
// A change costs what it changes: the watcher names the files to read, a
// file's documents whose bytes did not change keep their decodings, the
// files read are decoded side by side (read.go), and only the keys whose
// objects changed are resolved again.
package manifest
