#!/usr/bin/env bash
# Install what StreamSSL needs on a bare Debian machine and print the path of the ready virtualenv (last line).
#
#   scripts/bootstrap.sh [EXTRAS]        EXTRAS: comma-separated pyproject extras (default: ingest,serving,dev)
#
# System packages (ffmpeg, Java, Maven; g++ and Python headers for the trainer) come from apt-get when missing. The virtualenv, pip's download cache and
# the Kafka jars live in $STREAMSSL_CACHE (default ~/.cache/streamssl), outside the clone, so reruns are fast.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${STREAMSSL_CACHE:-$HOME/.cache/streamssl}
EXTRAS=${1:-ingest,serving,dev}
say() { printf 'bootstrap: %s\n' "$*" >&2; }

missing=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)

find_python() {
  local candidate
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null &&
      "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}
PYTHON=$(find_python || true)
[ -n "$PYTHON" ] || missing+=(python3 python3-venv)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing system packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}"
    exit 1
  fi
  say "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  PYTHON=$(find_python) || { say "no Python >= 3.11 after installing python3"; exit 1; }
fi

if [[ ",$EXTRAS," == *,trainer,* ]]; then
  # torch.compile (inductor) builds C++ kernels on CPU: it needs a compiler and Python's headers. Best effort:
  # training without --compile needs neither, so a failure here is a warning.
  compile_missing=()
  command -v g++ >/dev/null || compile_missing+=(g++)
  "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
    compile_missing+=("$(basename "$PYTHON")-dev")
  if [ ${#compile_missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${compile_missing[@]}" >&2; then
      say "installed ${compile_missing[*]} for torch.compile"
    else
      say "warning: could not install ${compile_missing[*]}: --compile (torch.compile) will not work on CPU"
    fi
  fi
fi

mkdir -p "$CACHE"
VENV="$CACHE/venv-$("$PYTHON" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
fi
say "installing streamssl[$EXTRAS] (editable) into $VENV"
PIP_CACHE_DIR="$CACHE/pip" "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[$EXTRAS]" >&2
echo "$VENV"
