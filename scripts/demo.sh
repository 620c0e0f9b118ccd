#!/usr/bin/env bash
# The main job on a fresh machine: install (cached), then run `streamssl demo` on the embedded bus.
#
#   scripts/demo.sh [DEMO ARGS...]      e.g. scripts/demo.sh --seconds 30 --codec png
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(bash "$ROOT/scripts/bootstrap.sh" ingest | tail -n 1)
exec "$VENV/bin/streamssl" demo "$@"
