#!/usr/bin/env bash
# Lint and format checks of the Python code (the pytest plugin, its example, the bench's fixtures),
# in the virtual environment the setup command prepares (Debian's black and mypy).
# `lint-python.sh format` rewrites the files instead of checking them.
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv-pytest/bin/python
[ -x "$python" ] || {
  echo "lint:py: $python is missing: run npm run setup" >&2
  exit 1
}
paths=(runner-plugins/pytest examples/pytest-postgres bench/pytest-suite)
black=("$python" -m black --config runner-plugins/pytest/pyproject.toml --quiet)
if [ "${1:-}" = format ]; then
  "${black[@]}" "${paths[@]}"
  exit
fi
"${black[@]}" --check "${paths[@]}"
(cd runner-plugins/pytest && "../../$python" -m mypy src tests live)
# the example is written as a user writes tests: type-checked, not held to --strict
"$python" -m mypy examples/pytest-postgres
"$python" -m mypy --strict --config-file runner-plugins/pytest/pyproject.toml bench/pytest-suite
