// Package proto holds xdshard's own protobuf APIs and their generated Go
// code (regenerate with proto/gen.sh): nds/v1, the DNS name table served to
// istio-agent; xdshard/admin/v1, the admin gRPC service each replica serves
// on its admin address.
package proto
