#!/usr/bin/env bash
# Soak: the crash-safety test with many more SIGKILLs (default 500) against a real daemon.
#   bench/soak_kill.sh [KILLS]
set -euo pipefail
cd "$(dirname "$0")/.."
AGGREGATOR_KILLS="${1:-500}" .venv/bin/python -m pytest -q -s tests/test_crash.py -p no:cacheprovider --timeout 0
