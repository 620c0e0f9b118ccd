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
# shellcheck source=scripts/lib/apt-install.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt-install.sh"

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

apt_install "a headless Chromium" "${PACKAGES[@]}"

if ! check; then
  say "installed ${PACKAGES[*]}, but none of ${BROWSERS[*]} runs"
  exit 1
fi
say "ready"
