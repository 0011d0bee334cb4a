#!/usr/bin/env bash
# Install darkroom (CPU build of torch) and run the whole stack locally:
# Redis (embedded unless REDIS_URL is set), the API, one worker on tiny-sd,
# and a first image generated through the queue. Ctrl-C stops everything.
# Extra arguments go to `darkroom up` (e.g. `bash scripts/up.sh --workers 2`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

"$PYTHON" -m pip install --quiet --disable-pip-version-check torch==2.13.0 -e '.[embedded]'
exec "$PYTHON" -m shared.cli up "$@"
