#!/usr/bin/env bash
# Install rlhfv with its test tools, start the services the tests need, run the suite.
# Safe to run twice. Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/data`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
source scripts/services.sh
exec .venv/bin/python -m pytest -n 2 "$@"
