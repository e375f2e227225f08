#!/usr/bin/env bash
# Runs the whole service in one terminal: Redis (only if none answers), the API under
# gunicorn, a Celery worker and celery beat, with prefixed logs. Ctrl-C stops them all.
set -euo pipefail
source "$(dirname "$0")/scripts/bootstrap.sh"

export APP_ENV="${APP_ENV:-development}"
export REDIS_URL="${REDIS_URL:-redis://localhost:6379}"
export BIND="${BIND:-127.0.0.1:5000}"
mkdir -p instance

# a second copy would fight the first over ports and the beat schedule
exec 9>instance/.run.lock
if ! flock -n 9; then
  echo "The service is already running from this folder (another ./run.sh holds instance/.run.lock)." >&2
  exit 1
fi
port="${BIND##*:}"
if python - "$port" <<'PY'
import socket, sys
with socket.socket() as s:
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
then
  echo "Port $port is already in use: stop whatever listens there, or run with BIND=127.0.0.1:5001." >&2
  exit 1
fi

say "Applying database migrations"
flask --app app db upgrade

processes=(web worker beat)
if python -c "import redis, sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()" "$REDIS_URL" 2>/dev/null; then
  say "Using the Redis already answering at $REDIS_URL (it keeps running when this stops)"
else
  host_port="${REDIS_URL#*://}"; host_port="${host_port%%/*}"; host_port="${host_port##*@}"
  export REDIS_PORT="${host_port##*:}"
  [ "$REDIS_PORT" = "$host_port" ] && REDIS_PORT=6379
  say "No Redis answers at $REDIS_URL: starting redis-server on port $REDIS_PORT"
  processes=(redis "${processes[@]}")
fi

say "Starting ${processes[*]}: API on http://$BIND (docs at /docs). Ctrl-C stops everything."
exec honcho start -f Procfile "${processes[@]}"
