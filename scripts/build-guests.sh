#!/usr/bin/env bash
# Builds every guest hook from source into target/guests/<name>.wasm.
# Installs the Rust wasm target when missing; cargo's own caching makes a second
# run quick. Guests: each folder under hooks/ and tests/guests/ with a Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/guests
mkdir -p "$out"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "build-guests: installing the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
fi

for manifest in hooks/*/Cargo.toml tests/guests/*/Cargo.toml; do
    [ -e "$manifest" ] || continue
    dir=$(dirname "$manifest")
    name=$(basename "$dir")
    crate=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -1)
    CARGO_TARGET_DIR=target/guest-build cargo build --quiet --release \
        --manifest-path "$manifest" --target wasm32-wasip2
    cp "target/guest-build/wasm32-wasip2/release/${crate//-/_}.wasm" "$out/$name.wasm"
    echo "build-guests: $out/$name.wasm ($(stat -c %s "$out/$name.wasm") bytes)"
done
