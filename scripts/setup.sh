#!/usr/bin/env bash
# One command from a clean clone to a working forkd: host packages, npm dependencies, the guest
# kernel + base image (cached in the state dir), a doctor report, and the main job (forkd demo) on
# the default image. Only the host packages need root (sudo is used when not root); no KVM needed.
set -euo pipefail
cd "$(dirname "$0")/.."

# sudo: the tests build a recipe image through it, as a user the test makes (CI runs as root).
# Python: the pytest plugin's tests, its example and its lint, from Debian's packages (no PyPI).
# chromium: the Playwright tests' browser (Playwright's own download is not reachable everywhere).
bash scripts/host-packages.sh sudo \
  python3 python3-venv python3-setuptools python3-wheel python3-pytest python3-pytest-xdist \
  python3-httpx python3-psycopg python3-psycopg2 python3-jsonschema python3-mypy black chromium

echo "setup: npm dependencies (npm ci builds lib/ through the prepare script)"
npm ci --no-audit --no-fund

echo "setup: the pytest plugin in .venv-pytest (Debian's Python and its packages, PEP 668)"
[ -x .venv-pytest/bin/python ] || /usr/bin/python3 -m venv --system-site-packages .venv-pytest
.venv-pytest/bin/python -m pip install --quiet --no-index --no-build-isolation --no-deps -e runner-plugins/pytest

echo "setup: guest kernel and base image (first time: ~5-7 min on 2 cores; cached after)"
node bin/forkd.js build base
node bin/forkd.js doctor || true

echo "setup: main job: cold boot vs snapshot + fork of 8 children (forkd demo)"
node bin/forkd.js demo
