#!/usr/bin/env bash
# Builds the unmodified Istio programs the system test runs, and helm, from
# the Go module proxy, and prints the folder that holds them:
#   pilot-discovery (istiod), pilot-agent (istio-agent), istioctl
#     from istio.io/istio at $istio (with Istio's own go.mod: go install
#     pkg@version, never the project's go.mod);
#   helm from helm.sh/helm/v3 at $helm.
# Cached outside the clone, keyed by those versions: the first run takes
# about 15 minutes on 2 cores, later runs return at once. The Istio CRDs the
# test installs come from the same module (manifests/charts/base).
#   XDSHARD_CACHE   where to cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/xdshard)
#   --module        print the module's source folder instead (for its CRDs)
set -euo pipefail
istio=v0.0.0-20260827124520-eed52ebb66ad
helm=v3.22.0
if [ "${1:-}" = "--module" ]; then
  go mod download -json "istio.io/istio@$istio" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'
  exit 0
fi
cache="${XDSHARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xdshard}/istio-$istio-helm-$helm"
if [ -x "$cache/pilot-discovery" ] && [ -x "$cache/pilot-agent" ] && [ -x "$cache/istioctl" ] && [ -x "$cache/helm" ]; then
  echo "$cache"
  exit 0
fi
echo "building istiod, istio-agent, istioctl (istio.io/istio $istio) and helm $helm into $cache (about 15 minutes the first time)" >&2
rm -rf "$cache.tmp"
mkdir -p "$cache.tmp"
(
  cd "$cache.tmp"
  export GOBIN="$cache.tmp" GOFLAGS= CGO_ENABLED=0
  go install -ldflags '-s -w' \
    "istio.io/istio/pilot/cmd/pilot-discovery@$istio" \
    "istio.io/istio/pilot/cmd/pilot-agent@$istio" \
    "istio.io/istio/istioctl/cmd/istioctl@$istio"
  go install -ldflags '-s -w' "helm.sh/helm/v3/cmd/helm@$helm"
) >&2
rm -rf "$cache"
mv "$cache.tmp" "$cache"
echo "$cache"
