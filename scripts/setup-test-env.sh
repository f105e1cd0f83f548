#!/usr/bin/env bash
# Installs what the tests need beyond cargo, caching it under target/:
# - target/hermes-venv: Python venv with hermes-bus 0.7.0 from PyPI (compatibility tests).
# Safe to run repeatedly; a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/hermes-venv
if ! "$venv/bin/python" -c 'import hermes_bus' 2>/dev/null; then
    echo "setup: creating $venv with hermes-bus==0.7.0"
    mkdir -p target
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check hermes-bus==0.7.0
fi
