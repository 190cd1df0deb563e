#!/usr/bin/env bash
# Builds kube-apiserver and etcd from the Go module proxy, in the module of
# scripts/kube (not the project's go.mod), and prints the folder that holds
# them. The binaries are cached outside the clone, keyed by that module's
# go.mod and go.sum: the first run takes about 12 minutes on 2 cores, later
# runs return at once.
#   XDSHARD_CACHE   where to cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/xdshard)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mod="$here/kube"
key="$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-16)"
cache="${XDSHARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xdshard}/kube-$key"
if [ -x "$cache/kube-apiserver" ] && [ -x "$cache/etcd" ]; then
  echo "$cache"
  exit 0
fi
mkdir -p "$cache.tmp"
version="$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$mod/go.mod")"
minor="$(echo "$version" | cut -d. -f2)"
echo "building kube-apiserver $version and etcd into $cache (about 12 minutes the first time)" >&2
(
  cd "$mod"
  GOFLAGS=-mod=mod go build -o "$cache.tmp/kube-apiserver" \
    -ldflags "-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
    k8s.io/kubernetes/cmd/kube-apiserver
  GOFLAGS=-mod=mod go build -o "$cache.tmp/etcd" go.etcd.io/etcd/server/v3
) >&2
rm -rf "$cache"
mv "$cache.tmp" "$cache"
echo "$cache"
