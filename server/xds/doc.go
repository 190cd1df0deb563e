// Package server serves per-tenant snapshots over gRPC ADS, both
// state-of-the-world and delta, to Envoy sidecars, proxyless gRPC clients
// and istio-agent (NDS), and hands istiod's config-source streams
// (GENERATOR: api) to an MCP handler.
//
// Each stream is bound to one tenant, from its node, and only ever reads
// that tenant's snapshot. A stream has two goroutines: the receive loop
// only records what the client asked for and ACKed, and never waits on a
// send; the send loop pushes what changed, at most one un-ACKed response
// per type, so a newer version simply replaces what was waiting.
// Responses are encoded once per (type set, subscription) and shared by
// every stream of the tenant; only the nonce is added per stream.
//
// This package imports only the root snapshot package: never Istio or
// Kubernetes config types, nor the builders.
package xds
