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
// An object defined in two files is served from the file first by path
// (byte order of the slash path), always; the other copy is rejected with
// a diagnostic naming both places. Nothing is kept between runs, so a rule
// that depended on which file arrived first would serve one copy live and
// another after a restart (and `xdshard check`, which reads the directory
// as a restart does, would predict the restart): a tenant could stage a
// takeover for the next rolling restart. With this rule a file added that
// sorts first takes the object over at once, visibly. What keeps tenants
// from taking each other's objects is the layout: one directory per tenant,
// and review of what lands in it.
//
// What one file may cost is bounded: its bytes (Limits.FileBytes), each
// document once its YAML aliases are expanded (Limits.DocumentBytes), and
// the file's documents with aliases together, expanded
// (Limits.FileExpandedBytes), both measured before anything is expanded.
// A file over a bound is a diagnostic and keeps its last good objects.
//
// A change costs what it changes: the watcher names the files to read, a
// file's documents whose bytes did not change keep their decodings, each
// file changed is read and decoded on its own goroutine, off the loop that
// follows the watcher (source.go), so a file slow to decode holds up no
// other file's change, and only the keys whose objects changed are resolved
// again. A file renamed into place is read at once; one written in place,
// once it has been left alone for Limits.Settle (2 s), so a writer that
// truncates a file and pauses is not read half-written.
package manifest
