#!/usr/bin/env bash
# Runs the Postman collection (docs/postman/) with newman against a throwaway copy of the
# service: a private redis-server and ./run.sh (API, worker, beat) on free ports, with a
# temporary SQLite database and a librarian made by `create-admin`. Everything it starts is
# stopped at the end; the exit status is newman's. Extra arguments go to `newman run`.
#   scripts/postman.sh                 # the whole collection
#   scripts/postman.sh --verbose       # with request and response details
#   POSTMAN_BASE_URL=http://127.0.0.1:5000 scripts/postman.sh
#                                      # against a service already running there, whose
#                                      # librarian is seed-demo's (LIBRARIAN_* to change)
# Newman is installed on first use into .newman/ (git-ignored) with npm (apt-installed if missing).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"

COLLECTION="docs/postman/library.postman_collection.json"
ENVIRONMENT="docs/postman/local.postman_environment.json"
NEWMAN_DIR="$ROOT/.newman"
NEWMAN="$NEWMAN_DIR/node_modules/.bin/newman"
LIBRARIAN_USERNAME="${LIBRARIAN_USERNAME:-librarian}"
LIBRARIAN_PASSWORD="${LIBRARIAN_PASSWORD:-librarian-demo}"
START_TIMEOUT="${START_TIMEOUT:-90}"

if [ ! -x "$NEWMAN" ]; then
  if ! command -v npm >/dev/null; then
    say "npm is needed to install newman"
    apt_install npm
  fi
  say "Installing newman into .newman/"
  mkdir -p "$NEWMAN_DIR"
  # the folder ignores itself, so nothing in it is ever committed
  printf '*\n' > "$NEWMAN_DIR/.gitignore"
  npm install --prefix "$NEWMAN_DIR" --no-audit --no-fund --loglevel=error newman@6 >/dev/null
fi

if [ -n "${POSTMAN_BASE_URL:-}" ]; then
  say "Running the collection with newman against $POSTMAN_BASE_URL"
  exec "$NEWMAN" run "$COLLECTION" \
    --environment "$ENVIRONMENT" \
    --env-var "baseUrl=$POSTMAN_BASE_URL" \
    --env-var "librarianUsername=$LIBRARIAN_USERNAME" \
    --env-var "librarianPassword=$LIBRARIAN_PASSWORD" \
    --timeout-request 30000 \
    "$@"
fi

free_port() {
  python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/library-postman.XXXXXX")"
REDIS_PID=""
RUN_PID=""

descendants() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

alive() {
  local pid left=()
  for pid in "$@"; do
    if kill -0 "$pid" 2>/dev/null; then left+=("$pid"); fi
  done
  echo "${left[@]:-}"
}

wait_gone() {  # wait_gone SECONDS PID...: wait until none of the PIDs is alive
  local deadline=$((SECONDS + $1))
  shift
  while [ -n "$(alive "$@")" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  [ -z "$(alive "$@")" ]
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  if [ -n "$RUN_PID" ]; then
    say "Stopping the service"
    # honcho starts each process in a session of its own: note them all before signalling
    local pids
    read -r -a pids <<< "$RUN_PID $(descendants "$RUN_PID" | tr '\n' ' ')"
    kill -TERM -- "-$RUN_PID" 2>/dev/null
    wait "$RUN_PID" 2>/dev/null
    if ! wait_gone 20 "${pids[@]}"; then
      echo "Still running after SIGTERM, killing: $(alive "${pids[@]}")" >&2
      for pid in $(alive "${pids[@]}"); do kill -KILL "$pid" 2>/dev/null; done
      wait_gone 5 "${pids[@]}"
    fi
  fi
  if [ -n "$REDIS_PID" ]; then
    kill -TERM "$REDIS_PID" 2>/dev/null
    wait "$REDIS_PID" 2>/dev/null
  fi
  local left
  left="$(alive ${pids[@]+"${pids[@]}"} ${REDIS_PID:+"$REDIS_PID"})"
  if [ -n "$left" ]; then
    echo "These processes would not stop: $left" >&2
    [ "$status" -eq 0 ] && status=1
  fi
  if [ "$status" -ne 0 ] && [ -s "$WORKDIR/service.log" ] && [ -z "${NEWMAN_RAN:-}" ]; then
    echo "--- last lines of the service log ($WORKDIR/service.log) ---" >&2
    tail -n 40 "$WORKDIR/service.log" >&2
  fi
  if [ -n "${KEEP_LOGS:-}" ] || [ "$status" -ne 0 ]; then
    echo "Logs kept in $WORKDIR (service.log, redis.log)" >&2
  else
    rm -rf "$WORKDIR"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

REDIS_PORT="$(free_port)"
say "Starting a private redis-server on port $REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$WORKDIR" >"$WORKDIR/redis.log" 2>&1 &
REDIS_PID=$!

export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export DATABASE_URL="sqlite:///$WORKDIR/library.db"
export JWT_SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
export MAIL_BACKEND="${MAIL_BACKEND:-console}"
export APP_ENV="${APP_ENV:-development}"
WEB_PORT="$(free_port)"
export BIND="127.0.0.1:$WEB_PORT"
BASE_URL="http://$BIND"

for _ in $(seq 50); do
  if python -c "import redis, sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=0.2).ping()" \
    "$REDIS_URL" 2>/dev/null; then break; fi
  kill -0 "$REDIS_PID" 2>/dev/null || { cat "$WORKDIR/redis.log" >&2; exit 1; }
  sleep 0.1
done

# before the service starts: both would otherwise create the fresh database's schema at once
say "Creating the librarian '$LIBRARIAN_USERNAME'"
printf '%s\n' "$LIBRARIAN_PASSWORD" |
  flask --app app create-admin --username "$LIBRARIAN_USERNAME" \
    --email "$LIBRARIAN_USERNAME@example.org" --password-stdin

say "Starting ./run.sh on $BASE_URL (log: $WORKDIR/service.log)"
# a process group of its own, so the whole tree can be stopped at the end
setsid ./run.sh >"$WORKDIR/service.log" 2>&1 &
RUN_PID=$!

say "Waiting for $BASE_URL/health and the Celery worker"
deadline=$((SECONDS + START_TIMEOUT))
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE_URL/health" 2>/dev/null)" = 200 ] &&
  grep -q "ready\." "$WORKDIR/service.log"; do
  if ! kill -0 "$RUN_PID" 2>/dev/null; then
    echo "./run.sh stopped before the service was up." >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "The service was not up within ${START_TIMEOUT}s." >&2
    exit 1
  fi
  sleep 0.5
done

say "Running the collection with newman"
NEWMAN_RAN=1
set +e
"$NEWMAN" run "$COLLECTION" \
  --environment "$ENVIRONMENT" \
  --env-var "baseUrl=$BASE_URL" \
  --env-var "librarianUsername=$LIBRARIAN_USERNAME" \
  --env-var "librarianPassword=$LIBRARIAN_PASSWORD" \
  --timeout-request 30000 \
  "$@"
newman_status=$?
set -e
exit "$newman_status"
