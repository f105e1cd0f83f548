#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component) from app.py with componentize-py.
#
#   ./build.sh            writes {{name}}.wasm in this folder
#   ./build.sh OUT.wasm   writes OUT.wasm
#
# Uses componentize-py from PATH; when there is none, installs the pinned version
# into .venv/ in this folder (needs python3 with venv and network access once).
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/{{name}}.wasm}
case $out in /*) ;; *) out=$PWD/$out ;; esac
cd "$here"

if command -v componentize-py >/dev/null; then
    componentize_py=componentize-py
else
    componentize_py=$here/.venv/bin/componentize-py
    if [ ! -x "$componentize_py" ]; then
        command -v python3 >/dev/null ||
            { echo "build.sh: python3 is needed to install componentize-py" >&2; exit 1; }
        echo "build.sh: installing componentize-py $COMPONENTIZE_PY_VERSION into .venv/" >&2
        python3 -m venv .venv
        .venv/bin/pip install -q --disable-pip-version-check \
            "componentize-py==$COMPONENTIZE_PY_VERSION"
    fi
fi

# `-p .` bundles the Python modules of this folder; app.py is the entry point.
"$componentize_py" -q -d wit -w hook componentize app -p . -o "$out"
echo "build.sh: wrote $out" >&2
