#!/usr/bin/env bash
# The test command from the README: formatting, buf lint and the generated
# code, vet, every test with the race detector, and a short run of each fuzz
# target. Needs only Go; everything
# else comes from the Go module proxy and is cached in the module cache. The
# tests against a real Kubernetes API server use kube-apiserver and etcd,
# which scripts/kube-bins.sh builds once (about 7 minutes on 2 cores); the
# system test (systest/) and the istioctl test run the unmodified istiod,
# istio-agent and istioctl, and helm, which scripts/istio-bins.sh builds once
# (about 15 minutes); both cache outside the clone. The operator page's
# test loads the page in Debian's headless Chromium, which
# scripts/chromium.sh installs with apt-get the first time.
#   FUZZTIME=30s scripts/test.sh   fuzz longer
#   LONG=1 scripts/test.sh         also run the long suites (tests that check LONG)
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-5s}"

echo "== gofmt"
unformatted="$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi

echo "== buf lint, and the generated code in proto/ is current"
./proto/gen.sh --check

echo "== kube-apiserver and etcd for the Kubernetes tests"
XDSHARD_KUBE_BIN="$(./scripts/kube-bins.sh)"
export XDSHARD_KUBE_BIN

echo "== istiod, istio-agent, istioctl and helm for the system test"
XDSHARD_ISTIO_BIN="$(./scripts/istio-bins.sh)"
XDSHARD_ISTIOCTL="$XDSHARD_ISTIO_BIN/istioctl"
export XDSHARD_ISTIO_BIN XDSHARD_ISTIOCTL

echo "== headless Chromium for the operator page's test"
XDSHARD_CHROMIUM="$(./scripts/chromium.sh)"
export XDSHARD_CHROMIUM

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

echo "== the adversary suite, without the race detector (it compares latencies beside 50,000 requests a second, which the detector makes cost several times what they cost a replica)"
go test -count=1 -timeout 5m -run '^TestAdversaries$' ./server/

if [ -n "${LONG:-}" ]; then
  echo "== the soak (LONG; about 13 minutes, without the race detector)"
  go test -count=1 -timeout 30m -run '^TestSoak$' -v ./bench/
fi

echo "== fuzz ($FUZZTIME each)"
for target in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
  for fn in $(grep -h '^func Fuzz' "$target"/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
    echo "-- $target $fn"
    # Go's fuzzer can report "context deadline exceeded" when -fuzztime ends
    # while it minimizes a new input; that is no failure of the target (no
    # failing input is written), so such a run is tried once more.
    # Minimizing is kept short so it rarely meets the deadline.
    if ! go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 2s "$target" 2>&1 | tee /tmp/xdshard-fuzz.$$; then
      if grep -q "context deadline exceeded" /tmp/xdshard-fuzz.$$ && ! grep -q "Failing input written" /tmp/xdshard-fuzz.$$; then
        echo "-- $target $fn: the fuzzer's deadline met its minimizer; once more"
        go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 2s "$target"
      else
        rm -f /tmp/xdshard-fuzz.$$
        exit 1
      fi
    fi
    rm -f /tmp/xdshard-fuzz.$$
  done
done
echo "all checks passed"
