#!/usr/bin/env bash
# Lints proto/ with buf and regenerates its Go code (messages and gRPC
# services) with buf generate (buf.gen.yaml). Installs buf, protoc-gen-go
# (at go.mod's protobuf version) and protoc-gen-go-grpc at the versions
# below into ~/.cache/xdshard/bin, once. The generated code is committed,
# so building xdshard needs none of them.
#   proto/gen.sh           lint and regenerate
#   proto/gen.sh --check   lint, and fail if the committed code is not what
#                          the .proto files generate (scripts/test.sh runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
BUF_VERSION=v1.75.0
GRPC_GEN_VERSION=v1.5.1
PB_VERSION="$(go list -m -f '{{.Version}}' google.golang.org/protobuf)"
BIN="${XDSHARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xdshard}/bin"
mkdir -p "$BIN"
install() { # name module version
  local stamp="$BIN/.$1-$3"
  if [ ! -x "$BIN/$1" ] || [ ! -e "$stamp" ]; then
    echo "installing $1 $3 into $BIN" >&2
    GOBIN="$BIN" go install "$2@$3"
    rm -f "$BIN/.$1-"*; touch "$stamp"
  fi
}
install buf github.com/bufbuild/buf/cmd/buf "$BUF_VERSION"
install protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PB_VERSION"
install protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$GRPC_GEN_VERSION"
export PATH="$BIN:$PATH"

buf lint
if [ "${1:-}" != "--check" ]; then
  buf generate
  exit 0
fi
# Generate into a copy and compare with what is committed.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -r buf.yaml buf.gen.yaml proto "$tmp/"
# From the .proto files alone, so code of a removed .proto shows too.
find "$tmp/proto" -name '*.pb.go' -delete
(cd "$tmp" && buf generate)
if ! diff -ru proto "$tmp/proto" >"$tmp/diff"; then
  cat "$tmp/diff" >&2
  echo "the generated code in proto/ is not what its .proto files generate: run proto/gen.sh and commit the result" >&2
  exit 1
fi
