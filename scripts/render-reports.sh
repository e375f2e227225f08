#!/usr/bin/env bash
# Renders real reports to PNG with headless Chromium, for the README's pictures in docs/img/:
# seed-demo's alice, a 45-row patron and a library-wide report of about a thousand requests,
# built by the real report code in a throwaway database. Usage: scripts/render-reports.sh [DIR]
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
out="$(realpath -m "${1:-$ROOT/docs/img}")"
mkdir -p "$out"

if ! command -v chromium >/dev/null 2>&1; then
  say "Chromium is missing: installing Debian's chromium to take the pictures"
  apt_install chromium
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
say "Building the reports in a throwaway database"
INSTANCE_PATH="$work/instance" DATABASE_URL="" APP_ENV=development \
  python scripts/render_reports.py "$work"

for name in report-alice report-dora-45-rows report-library; do
  # tall enough for the charts and the first rows of each table
  chromium --headless --no-sandbox --disable-gpu --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/profile" --hide-scrollbars --window-size=1100,1500 \
    --screenshot="$out/$name.png" "file://$work/$name.html" >"$work/chromium.log" 2>&1
  # the print stylesheet, on A4
  chromium --headless --no-sandbox --disable-gpu --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/profile" --no-pdf-header-footer \
    --print-to-pdf="$work/$name.pdf" "file://$work/$name.html" >>"$work/chromium.log" 2>&1
  [ -s "$out/$name.png" ] && [ -s "$work/$name.pdf" ] || {
    cat "$work/chromium.log" >&2
    echo "Chromium did not render $name." >&2
    exit 1
  }
  say "$out/$name.png"
done
