#!/usr/bin/env bash
# Compiles requirements.in and requirements-dev.in into the fully pinned requirements.txt
# and requirements-dev.txt. Run it after editing an .in file, then commit all four.
# Pins stay where they are; pass --upgrade (or --upgrade-package NAME) to move them.
# --allow-unsafe pins pip and setuptools too, so every package in .venv has a pin.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
# the header of each compiled file names this script as the way to remake it
export CUSTOM_COMPILE_COMMAND="scripts/compile-requirements.sh"
for name in requirements requirements-dev; do
  say "Compiling $name.in into $name.txt"
  pip-compile --quiet --allow-unsafe --no-strip-extras --no-emit-index-url --no-emit-find-links \
    --output-file="$name.txt" "$@" "$name.in"
done
