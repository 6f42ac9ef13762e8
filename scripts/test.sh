#!/usr/bin/env bash
# Set up (CPU torch from the local wheel, the package with test extras) and run the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pip install -q torch==2.13.0 -e ".[test]"
python -m ruff check src tests benchmarks scripts
python -m pytest "$@"
