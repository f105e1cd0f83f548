#!/usr/bin/env bash
# Builds the notify-rules component: ./build.sh OUT.wasm
# Run by scripts/build-guests.sh, which puts componentize-py on PATH.
set -euo pipefail
out=${1:?usage: ./build.sh OUT.wasm}
case $out in /*) ;; *) out=$PWD/$out ;; esac

if ! command -v componentize-py >/dev/null; then
    echo "build.sh: componentize-py is not on PATH; build with scripts/build-guests.sh notify-rules (it installs the toolchain)" >&2
    exit 1
fi

# componentize-py writes __pycache__ next to the modules it imports, so build from a
# copy under build/ and keep src/ (whose hash decides rebuilds) untouched.
rm -rf build/src
mkdir -p build/src
cp src/*.py build/src/
componentize-py -q -d ../../wit -w hook componentize app -p build/src -o "$out"
