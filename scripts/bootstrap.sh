#!/usr/bin/env bash
# Shared set-up for run.sh and test.sh: OS packages, .venv, Python requirements.
# Sourced, not run: it leaves $VENV/bin first on PATH.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
say() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "Please install these packages with your system's package manager: $*" >&2
    exit 1
  fi
  say "Installing $* with apt-get (needs sudo when you are not root)"
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name "*Packages*" -mmin -1440 2>/dev/null | head -n 1)" ]; then
    as_root apt-get update -qq
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_os_packages() {
  local missing=()
  command -v python3 >/dev/null || missing+=(python3)
  python3 -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
  command -v redis-server >/dev/null || missing+=(redis-server)
  # the production start (and its tests) put nginx in front of gunicorn
  if [ "${NEEDS_NGINX:-0}" = 1 ]; then
    export PATH="$PATH:/usr/sbin"  # where Debian puts nginx
    command -v nginx >/dev/null || missing+=(nginx)
  fi
  # the README's curl walkthrough (and its test) use both
  command -v curl >/dev/null || missing+=(curl)
  command -v jq >/dev/null || missing+=(jq)
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "Creating the virtual environment in .venv"
    python3 -m venv "$VENV"
  fi
  # reinstall only when a compiled requirements file changed since the last install;
  # requirements-dev.txt pins every package, runtime ones included, pip itself too
  local stamp="$VENV/.requirements.sha" want
  want="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "Installing the pinned Python requirements (requirements-dev.txt) into .venv"
    "$VENV/bin/python" -m pip install -q -r "$ROOT/requirements-dev.txt"
    echo "$want" > "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}

warn_windows_drive() {
  # /mnt/c and friends are the Windows disk seen from WSL: slow, and loose with permissions
  case "$ROOT" in
    /mnt/[a-z]/*) say "Warning: $ROOT is on the Windows drive; clone into ~ (the Linux file system) for speed." ;;
  esac
}

warn_windows_drive
ensure_os_packages
ensure_venv
cd "$ROOT"
