#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component) with cargo for wasm32-wasip2.
#
#   ./build.sh            writes {{name}}.wasm in this folder
#   ./build.sh OUT.wasm   writes OUT.wasm
#
# Installs the wasm32-wasip2 Rust target with rustup when it is missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/{{name}}.wasm}
case $out in /*) ;; *) out=$PWD/$out ;; esac
cd "$here"

command -v cargo >/dev/null || { echo "build.sh: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "build.sh: installing the wasm32-wasip2 Rust target" >&2
    rustup target add wasm32-wasip2 >&2
fi

target_dir=${CARGO_TARGET_DIR:-$here/target}
cargo build --quiet --release --target wasm32-wasip2
cp "$target_dir/wasm32-wasip2/release/{{ident}}.wasm" "$out"
echo "build.sh: wrote $out" >&2
