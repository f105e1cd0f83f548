#!/usr/bin/env bash
# Builds {{name}}.wasm (a core module, hookbus's plain ABI) from hook.ts.
#
#   ./build.sh            writes {{name}}.wasm in this folder
#   ./build.sh OUT.wasm   writes OUT.wasm
#
# Uses asc from PATH, or installs AssemblyScript (pinned in package.json) into
# node_modules/ with npm.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/{{name}}.wasm}
case $out in /*) ;; *) out=$PWD/$out ;; esac
cd "$here"

if command -v asc >/dev/null; then
    asc=asc
else
    asc=$here/node_modules/.bin/asc
    if [ ! -x "$asc" ]; then
        if ! command -v npm >/dev/null; then
            echo "build.sh: needs asc (AssemblyScript) on PATH, or npm to install it (install Node.js)" >&2
            exit 1
        fi
        echo "build.sh: installing AssemblyScript into node_modules/ (npm install)" >&2
        npm install --no-audit --no-fund --loglevel=error >&2
    fi
fi

mkdir -p "$(dirname "$out")"
# The incremental runtime frees garbage by itself, so handle may allocate freely.
# --use abort= leaves out the env.abort import: a failed assertion traps instead.
"$asc" hook.ts -o "$out" -O3 --runtime incremental --use abort=
echo "build.sh: wrote $out" >&2
