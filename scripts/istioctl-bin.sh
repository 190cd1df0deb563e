#!/usr/bin/env bash
# Builds istioctl from the Go module proxy (istio.io/istio at the version
# below, in a module of its own, never the project's go.mod) and prints its
# path. Cached outside the clone: the first run takes about 10 minutes on 2
# cores, later runs return at once. scripts/test.sh runs it with LONG=1, for
# the test that runs the real istioctl against xdshard (server/istioctl_test.go).
#   XDSHARD_CACHE   where to cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/xdshard)
set -euo pipefail
version=v0.0.0-20260827124520-eed52ebb66ad
cache="${XDSHARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xdshard}/istioctl-$version"
if [ -x "$cache/istioctl" ]; then
  echo "$cache/istioctl"
  exit 0
fi
echo "building istioctl (istio.io/istio $version) into $cache (about 10 minutes the first time)" >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(
  cd "$work"
  go mod init istioctl-build
  go get "istio.io/istio/istioctl/cmd/istioctl@$version"
  mkdir -p "$cache.tmp"
  go build -o "$cache.tmp/istioctl" istio.io/istio/istioctl/cmd/istioctl
) >&2
rm -rf "$cache"
mv "$cache.tmp" "$cache"
echo "$cache/istioctl"
