#!/usr/bin/env bash
# Run the test suite (sets up .venv/ on first use). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
. tools/setup_venv.sh || exit 1
# One worker per core (at most 4), each test file whole on one worker (module fixtures are built once);
# SVMIX_TEST_WORKERS=0 runs everything in this process.
workers="${SVMIX_TEST_WORKERS:-$(n=$(nproc 2>/dev/null || echo 1); echo $(( n < 4 ? n : 4 )))}"
case "$workers" in ''|*[!0-9]*) echo "SVMIX_TEST_WORKERS must be a whole number, got '$workers'" >&2; exit 2 ;; esac
if [ "$workers" -gt 1 ]; then set -- -n "$workers" --dist loadfile "$@"; fi
python -m pytest -q "$@"
status=$?
# pytest exits 5 when it collects no tests: not a failure of the suite.
[ "$status" -eq 5 ] && { echo "no tests collected"; exit 0; }
exit "$status"
