// Package snapshot owns the immutable, versioned per-tenant snapshot that
// crosses from translation to serving, and the Store that keeps each
// tenant's current snapshot and its recent history.
//
// A Snapshot holds resources already encoded (an Any with deterministic
// bytes and a content hash), so it can be built here, or arrive encoded from
// another replica, and be written to any number of streams without being
// marshaled again.
//
// This package must never import Istio or Kubernetes config types, the
// model, nor the server: the subpackages (source, model, translate,
// builder) turn mesh config into Snapshots; server/ only serves them.
// layout_test.go at the module root checks it.
package snapshot
