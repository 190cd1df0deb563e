#!/usr/bin/env bash
# Regenerates the Go code for proto/. Needs protoc (Debian: protobuf-compiler)
# and protoc-gen-go at the version in go.mod; the generated code is
# committed, so building xdshard does not need either.
set -euo pipefail
cd "$(dirname "$0")"
GOBIN="${GOBIN:-$(go env GOPATH)/bin}"
if ! command -v protoc >/dev/null; then
  echo "protoc not found: apt-get install -y protobuf-compiler" >&2
  exit 1
fi
GOBIN="$GOBIN" go install google.golang.org/protobuf/cmd/protoc-gen-go@"$(go list -m -f '{{.Version}}' google.golang.org/protobuf)"
protoc --plugin=protoc-gen-go="$GOBIN/protoc-gen-go" \
  --go_out=. --go_opt=paths=source_relative \
  $(find . -name '*.proto' | sort)
