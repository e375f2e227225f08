#!/usr/bin/env bash
# Screenshots /docs in headless Chromium with the network cut off, to show that Swagger UI
# needs nothing from the internet. Usage: scripts/screenshot-docs.sh [out.png]
# The API and the browser run inside a fresh network namespace that has only loopback; the
# API uses a throwaway instance folder (SQLite database, dev secret), never instance/.
# It fails unless Swagger UI rendered the operations; the PNG is left for you to look at.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
out="$(realpath -m "${1:-$ROOT/instance/docs-offline.png}")"
mkdir -p "$(dirname "$out")"

if ! command -v chromium >/dev/null 2>&1; then
  say "Chromium is missing: installing Debian's chromium to take the screenshot"
  apt_install chromium
fi
# root can cut the network directly; anyone else needs an unprivileged user namespace
if unshare -n true 2>/dev/null; then
  offline=(unshare -n)
elif unshare -rn true 2>/dev/null; then
  offline=(unshare -rn)
else
  echo "Cannot create a network namespace here (unshare -n): run as root or allow user namespaces." >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
say "Starting the API and Chromium with no network but loopback"
INSTANCE_PATH="$work/instance" WORK="$work" OUT="$out" "${offline[@]}" bash -euo pipefail -c '
  ip link set lo up 2>/dev/null || python -c "import socket; socket.socket().bind((\"127.0.0.1\", 0))"
  port=$(python -c "import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])")
  flask --app app run --port "$port" >"$WORK/api.log" 2>&1 &
  api=$!
  trap "kill $api 2>/dev/null || true" EXIT
  for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/openapi.json" && break
    sleep 0.2
  done
  browser=(chromium --headless --no-sandbox --disable-gpu --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --user-data-dir="$WORK/profile" --window-size=1280,1600 --virtual-time-budget=15000)
  "${browser[@]}" --dump-dom "http://127.0.0.1:$port/docs" >"$WORK/dom.html" 2>"$WORK/chromium.log"
  "${browser[@]}" --screenshot="$OUT" "http://127.0.0.1:$port/docs" >>"$WORK/chromium.log" 2>&1
'
# Swagger UI renders one block per operation; an empty page has none
for expected in 'opblock-summary-path' '/register' '/requests/{request_id}/approve' 'Authorize'; do
  if ! grep -qF "$expected" "$work/dom.html"; then
    echo "Swagger UI did not render offline: '$expected' is not on the page (see $out)." >&2
    exit 1
  fi
done
say "Swagger UI rendered offline; screenshot in $out"
