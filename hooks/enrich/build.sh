#!/usr/bin/env bash
# Builds the enrich hook: C → core wasm (clang, wasi-libc) → component (wasm-tools).
# Usage: ./build.sh OUT.wasm   (tools: scripts/guest-tools.sh installs them)
set -euo pipefail
out=${1:?usage: ./build.sh OUT.wasm}
for tool in clang wasm-tools; do
    command -v "$tool" >/dev/null ||
        { echo "enrich: $tool not found; run scripts/build-guests.sh (it installs it)" >&2; exit 1; }
done
mkdir -p build
clang --target=wasm32-wasi -mexec-model=reactor -Os -Wall -Wextra -Werror \
    -I ../../wit/bindings/c -o build/enrich.core.wasm \
    enrich.c component_type.c ../../wit/bindings/c/hook.c
wasm-tools component embed ../../wit --world hook build/enrich.core.wasm -o build/enrich.embed.wasm
wasm-tools component new build/enrich.embed.wasm -o "$out"
