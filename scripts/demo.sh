#!/usr/bin/env bash
# The main job on a fresh machine: install (cached), then run `streamssl demo`: ingest → trainer → serving on the
# embedded bus, in one process, with a report at the end.
#
#   scripts/demo.sh [DEMO ARGS...]      e.g. scripts/demo.sh --minutes 2 --exit   (--help lists them)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(bash "$ROOT/scripts/bootstrap.sh" tools | tail -n 1)
exec "$VENV/bin/streamssl" demo "$@"
