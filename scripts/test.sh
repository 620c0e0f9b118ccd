#!/usr/bin/env bash
# The whole test suite on a fresh machine: install (cached), lint, type-check, then pytest (incl. a real Kafka).
#
#   scripts/test.sh [PYTEST ARGS...]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=$(bash scripts/bootstrap.sh ingest,trainer,serving,tools,dev | tail -n 1)
export PATH="$VENV/bin:$PATH"

echo "== fetching the Kafka broker (cached) and installing the RTSP test camera"
bash scripts/kafka.sh fetch
bash scripts/install-rtsp.sh
bash scripts/install-browser.sh
bash scripts/install-deploy-tools.sh
echo "== ruff"
ruff check .
echo "== mypy"
mypy
echo "== pytest"
status=0
pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: the suite is broken, failing" >&2
  exit 1
fi
exit "$status"
