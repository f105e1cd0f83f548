#!/usr/bin/env bash
# Installs what the tests need beyond cargo, caching it under target/:
# - target/hermes-venv: Python venv with hermes-bus 0.7.0 from PyPI (compatibility tests)
#   and the hookbus Python client from clients/python.
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

# The Python client (clients/python), installed as a user would install it, into
# the same venv; reinstalled when its sources change.
stamp="$venv/.hookbus-client-$(find clients/python -name '*.py' -o -name '*.toml' | sort | xargs cat | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    echo "setup: pip install ./clients/python into $venv"
    rm -f "$venv"/.hookbus-client-*
    rm -rf clients/python/build
    "$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps ./clients/python
    rm -rf clients/python/build clients/python/*.egg-info
    touch "$stamp"
fi
