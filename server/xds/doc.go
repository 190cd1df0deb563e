// Package xds serves per-tenant snapshots over gRPC ADS, both
// state-of-the-world and delta, to Envoy sidecars, proxyless gRPC clients
// and istio-agent (NDS), and istiod's config-source streams (GENERATOR:
// api, MCP) on a port of their own (mcpport.go), refused on the others.
//
// Each stream is bound to one tenant, from its node's namespace, and only
// ever reads that tenant's snapshot; it ends when the namespace leaves the
// tenant, so the client reconnects to its new one. A stream has two
// goroutines: the receive loop only records what the client asked for and
// ACKed, and never waits on a send or an encode; the send loop pushes what
// changed, at most one un-ACKed response per type, so a newer version
// simply replaces what was waiting. SotW, delta and MCP share one push
// shape (stream.go): pick what is due under the stream's lock, encode
// outside it holding a slot of the push semaphore, commit under it, and
// send, giving the slot back once the sends take longer than slotHold
// and closing the client's connection past the send timeout (sendBounded
// in stream.go says why: grpc-go's SendMsg has no deadline), so a client
// that does not read holds up the others for slotHold at most.
// Responses are encoded once per (type set, subscription) and shared by
// every stream of the tenant; only the nonce is added per stream. A SotW
// EDS or RDS response to a client that ACKed the type's last one carries
// only the resources that changed since (partial.go), as istiod sends
// endpoints; LDS and CDS always carry the whole state.
//
// This package imports only the root snapshot package: never Istio or
// Kubernetes config types, nor the builders.
package xds
