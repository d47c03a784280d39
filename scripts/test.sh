#!/usr/bin/env bash
# The test suite, from a clean clone: builds the virtual environment (.venv) if missing,
# installs packetflow with its dev extras, then lint, format, types, benchmarks smoke, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
. .venv/bin/activate
ruff check src tests benchmarks
ruff format --check src tests benchmarks
mypy
python -m benchmarks --smoke
python -m pytest -q -n 2 --dist loadgroup "$@"
