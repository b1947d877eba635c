#!/usr/bin/env bash
# The test command: set up (idempotent), then run the default test suite (slow tests excluded;
# pass `-m slow` to run the long fault-injection tests). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
