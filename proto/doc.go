// Package proto holds xdshard's own protobuf APIs and their generated Go
// code (regenerate with proto/gen.sh): nds/v1, the DNS name table served to
// istio-agent. The admin and replica-exchange APIs will live beside it.
package proto
