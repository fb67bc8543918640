#!/usr/bin/env bash
# Sets up everything the test suite needs and runs it: the README's test command.
#   1. a virtualenv (.venv) with the package and its test extras
#   2. real spire-server and spire-agent v1.15.3, built once into a cache outside the repo
#   3. pytest over tests/ (unit and the `spire` integration suite)
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not spire"`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[test]'

SPIRE_BIN_DIR=$(scripts/build-spire.sh | tail -n 1)
export SPIRE_BIN_DIR
export PATH="$PWD/$VENV/bin:$PATH"

exec "$VENV/bin/python" -m pytest "$@"
