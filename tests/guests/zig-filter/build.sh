#!/usr/bin/env bash
# Builds the zig-filter guest (Zig, a freestanding core module) into OUT.wasm.
# Usage: ./build.sh OUT.wasm
# Installs Zig on first use (scripts/guest-tools.sh: pip ziglang, pinned, under
# target/guest-tools/zig) and puts its `zig` on PATH; `python -m ziglang` runs the same
# binary.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: ./build.sh OUT.wasm" >&2; exit 2; }
out=$(realpath -m "$1")
cd "$(dirname "$0")"
. ../../../scripts/guest-tools.sh
guest_tools_zig
mkdir -p "$(dirname "$out")"
# -fno-entry: no _start (a library, not a command); -rdynamic: keep the `export fn`s.
zig build-exe hook.zig -target wasm32-freestanding -fno-entry -rdynamic \
    -O ReleaseSmall -femit-bin="$out"
