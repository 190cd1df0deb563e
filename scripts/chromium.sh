#!/usr/bin/env bash
# Prints the path of a headless Chromium for the operator page's test
# (server/operator_page_test.go): Debian's chromium-headless-shell package,
# installed with apt-get the first time when run as root (about 100 MB),
# or an already installed chromium. Outside Debian, install one and set
# XDSHARD_CHROMIUM to its path.
set -euo pipefail
for bin in "${XDSHARD_CHROMIUM:-}" chromium-headless-shell chromium; do
  if [ -n "$bin" ] && command -v "$bin" >/dev/null 2>&1; then
    command -v "$bin"
    exit 0
  fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium-headless-shell (Debian's package) for the operator page's test" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends chromium-headless-shell >&2 ||
    { apt-get update >&2 && apt-get install -y --no-install-recommends chromium-headless-shell >&2; }
  command -v chromium-headless-shell
  exit 0
fi
echo "no headless Chromium: install Debian's chromium-headless-shell (or a chromium) and set XDSHARD_CHROMIUM to it" >&2
exit 1
