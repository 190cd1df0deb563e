#!/usr/bin/env bash
# Regenerates the Go code for proto/ (messages and gRPC services). Needs
# protoc (Debian: protobuf-compiler); installs protoc-gen-go at go.mod's
# protobuf version and protoc-gen-go-grpc at the version below into
# ~/.cache/xdshard/bin. The generated code is committed, so building
# xdshard needs neither.
set -euo pipefail
cd "$(dirname "$0")"
GOBIN="${XDSHARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xdshard}/bin"
if ! command -v protoc >/dev/null; then
  echo "protoc not found: apt-get install -y protobuf-compiler" >&2
  exit 1
fi
GOBIN="$GOBIN" go install google.golang.org/protobuf/cmd/protoc-gen-go@"$(go list -m -f '{{.Version}}' google.golang.org/protobuf)"
GOBIN="$GOBIN" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
protoc --plugin=protoc-gen-go="$GOBIN/protoc-gen-go" --plugin=protoc-gen-go-grpc="$GOBIN/protoc-gen-go-grpc" \
  --go_out=. --go_opt=paths=source_relative \
  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
  $(find . -name '*.proto' | sort)
