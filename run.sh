#!/usr/bin/env bash
# Runs the whole service in one terminal: Redis (only if none answers), the API under
# gunicorn, a Celery worker and celery beat, with prefixed logs. Ctrl-C stops them all.
# APP_ENV=production puts nginx (nginx.conf) in front of gunicorn, so slow clients cannot
# hold the API's workers; it installs nginx with apt-get when it is missing.
set -euo pipefail
export APP_ENV="${APP_ENV:-development}"
[ "$APP_ENV" = production ] && export NEEDS_NGINX=1
source "$(dirname "$0")/scripts/bootstrap.sh"

export REDIS_URL="${REDIS_URL:-redis://localhost:6379}"
export BIND="${BIND:-127.0.0.1:5000}"
# INSTANCE_PATH moves the instance folder (database, dev secret, beat schedule, this lock)
export INSTANCE_DIR="${INSTANCE_PATH:-instance}"
mkdir -p "$INSTANCE_DIR"

# a second copy would fight the first over ports and the beat schedule
exec 9>"$INSTANCE_DIR/.run.lock"
if ! flock -n 9; then
  echo "The service is already running from this folder (another ./run.sh holds $INSTANCE_DIR/.run.lock)." >&2
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

processes=(web worker beat)
public_bind="$BIND"
if [ "$APP_ENV" = production ]; then
  if [ -z "${JWT_SECRET_KEY:-}" ]; then
    echo 'Production needs JWT_SECRET_KEY: export JWT_SECRET_KEY=$(python3 -c "import secrets; print(secrets.token_urlsafe(48))")' >&2
    exit 1
  fi
  # gunicorn listens on a free loopback port that only nginx talks to
  upstream="127.0.0.1:$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  python scripts/nginx_conf.py "$public_bind" "$upstream" instance/nginx >/dev/null
  export BIND="$upstream" TRUSTED_PROXIES="${TRUSTED_PROXIES:-1}"
  processes+=(proxy)
  say "Production: nginx on $public_bind in front of gunicorn on $upstream"
fi

say "Applying database migrations"
flask --app app db upgrade

if python -c "import redis, sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()" "$REDIS_URL" 2>/dev/null; then
  say "Using the Redis already answering at $REDIS_URL (it keeps running when this stops)"
else
  host_port="${REDIS_URL#*://}"; host_port="${host_port%%/*}"; host_port="${host_port##*@}"
  export REDIS_PORT="${host_port##*:}"
  [ "$REDIS_PORT" = "$host_port" ] && REDIS_PORT=6379
  say "No Redis answers at $REDIS_URL: starting redis-server on port $REDIS_PORT"
  processes=(redis "${processes[@]}")
fi

say "Starting ${processes[*]}: API on http://$public_bind (docs at /docs). Ctrl-C stops everything."
exec honcho start -f Procfile "${processes[@]}"
