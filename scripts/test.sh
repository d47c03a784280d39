#!/usr/bin/env bash
# The test suite, from a clean clone: builds the virtual environment (.venv) if missing,
# installs packetflow with its dev extras, then lint, format, types, the JS
# reactor's npm packages, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
. .venv/bin/activate
# The dashboard's browser tests (tests/browser) drive Debian's chromium through Playwright.
# Install it when missing and we may; otherwise those tests skip and say why.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
      >/dev/null || echo "chromium could not be installed: browser tests will skip"
  else
    echo "not root: chromium not installed, browser tests (tests/browser) will skip"
  fi
fi
ruff check src tests benchmarks
ruff format --check src tests benchmarks
mypy
# The JavaScript reactor of the mixed-cluster tests (tests/interop): its pinned `ws` from the
# lockfile. `npm ci` rebuilds node_modules from package-lock.json, so reruns are harmless.
if command -v npm >/dev/null 2>&1; then
  npm ci --prefix interop/js-reactor --no-audit --no-fund --loglevel=error
else
  echo "npm not found: skipping npm ci; tests/interop will be skipped" >&2
fi
python -m pytest -q -n 2 --dist loadgroup --durations=15 "$@"
