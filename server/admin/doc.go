// Package admin is the replica's HTTP face for operators: health and
// readiness, Prometheus metrics, pprof, every stream's sync state
// (/debug/syncz) and every tenant's served version, history and problems
// (/debug/tenantz).
//
// It reads the snapshot store and what the assembly hands it; it never
// imports Istio or Kubernetes config types, nor the builders.
package admin
