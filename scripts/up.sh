#!/usr/bin/env bash
# Install darkroom (CPU build of torch) into .venv (created on first use) and run
# the whole stack locally: Redis (embedded unless REDIS_URL is set), the API, one
# worker on tiny-sd, and a first image generated through the queue. Ctrl-C stops
# everything. Extra arguments go to `darkroom up` (e.g. `bash scripts/up.sh --workers 2`).
# Afterwards the command is .venv/bin/darkroom (or `source .venv/bin/activate`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh '.[api,worker,ui,embedded]'

exec darkroom up "$@"
