#!/usr/bin/env bash
# Install the headless Chromium that tests/test_report.py renders the run report with, when missing.
#
#   scripts/install-browser.sh
#
# Idempotent: when a headless Chromium is already on PATH it prints nothing and exits 0. Otherwise it installs
# Debian's chromium-headless-shell with apt-get, which needs root.
set -euo pipefail

PACKAGES=(chromium-headless-shell)
BROWSERS=(chromium-headless-shell chromium chromium-browser google-chrome)
say() { printf 'install-browser: %s\n' "$*" >&2; }

check() {
  local name
  for name in "${BROWSERS[@]}"; do
    command -v "$name" >/dev/null && "$name" --version >/dev/null 2>&1 && return 0
  done
  return 1
}

if check; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  say "no headless Chromium found and installing one needs root; run as root, or:"
  say "  sudo apt-get install -y --no-install-recommends ${PACKAGES[*]}"
  exit 1
fi
command -v apt-get >/dev/null || {
  say "apt-get not found: install a headless Chromium (Debian: ${PACKAGES[*]}) by hand"
  exit 1
}

say "installing ${PACKAGES[*]}"
export DEBIAN_FRONTEND=noninteractive
# A fresh container has no package lists; refresh them once if the install cannot find the packages.
if ! apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi

if ! check; then
  say "installed ${PACKAGES[*]}, but none of ${BROWSERS[*]} runs"
  exit 1
fi
say "ready"
