// Package proxy simulates Envoy sidecars for load tests: each Proxy is one
// ADS stream (state-of-the-world or delta) with an Istio node ID, that
// subscribes the way Envoy does (CDS, then EDS for the clusters received;
// LDS, then RDS for the route configurations its listeners name), ACKs
// every response, and records when each type's latest response arrived.
// It decodes only what it needs to subscribe, so thousands share a core
// with the server under test.
package proxy
