#!/usr/bin/env bash
# Runs the test suite: sets up what it needs, then pytest (extra arguments go to pytest).
# The suite starts its own redis-server on a free port; it never touches your Redis.
# Set TEST_DATABASE_URL=postgresql://... to run every test on PostgreSQL as well as SQLite.
set -euo pipefail
# tests/test_production.py runs the production start, nginx included
export NEEDS_NGINX=1
source "$(dirname "$0")/scripts/bootstrap.sh"
say "Running ruff"
ruff check .
ruff format --check .
# three processes, each test file in one of them: the suite mostly waits on the servers it
# starts, so three share two cores well. TEST_PROCESSES=0 runs everything in this process.
processes="${TEST_PROCESSES:-3}"
say "Running the tests in $processes processes (TEST_PROCESSES)"
exec python -m pytest -n "$processes" --dist loadfile "$@"
