#!/usr/bin/env bash
# Builds the guard hook (AssemblyScript, core-module ABI) into OUT.wasm.
# Usage: ./build.sh OUT.wasm   (scripts/build-guests.sh guard runs it with asc on PATH)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: ./build.sh OUT.wasm" >&2; exit 2; }
out=$(realpath -m "$1")
cd "$(dirname "$0")"
if ! command -v asc >/dev/null; then
    echo "build.sh: asc (AssemblyScript) is not on PATH; build with scripts/build-guests.sh guard," >&2
    echo "          which installs it (scripts/guest-tools.sh) and puts it on PATH" >&2
    exit 1
fi
mkdir -p "$(dirname "$out")"
# --runtime stub: a bump allocator that never frees, which suits this hook: it
# allocates only in init and reuses one input buffer for every message.
# --use abort=: no env.abort import (an assertion failure traps instead).
asc hook.ts -o "$out" -O3 --runtime stub --use abort=
