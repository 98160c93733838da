#!/usr/bin/env bash
# Run the test suite (sets up .venv/ on first use). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
. tools/setup_venv.sh || exit 1
python -m pytest -q "$@"
status=$?
# pytest exits 5 when it collects no tests: not a failure of the suite.
[ "$status" -eq 5 ] && { echo "no tests collected"; exit 0; }
exit "$status"
