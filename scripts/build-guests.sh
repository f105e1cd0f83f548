#!/usr/bin/env bash
# Builds every guest hook from source into target/guests/<name>.wasm, installing the
# toolchains it needs first (scripts/guest-tools.sh).
#
# A guest is a folder under hooks/ or tests/guests/ with either
#   build.sh OUT   its own build (any language), run in the folder, or
#   Cargo.toml     a Rust component, built with cargo for wasm32-wasip2.
# Results are cached: a build.sh guest is rebuilt only when a file in its folder (or
# wit/) changed since the last build; cargo caches Rust guests itself.
# Prints each guest's build time (cached builds take well under a second).
#
# Usage: scripts/build-guests.sh [NAME...]   (default: every guest)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=$root/target/guests
mkdir -p "$out"
export CARGO_TARGET_DIR=$root/target/guest-build

. scripts/guest-tools.sh
guest_tools

# Hash of a guest's sources: every file in its folder except build outputs, plus wit/.
sources_hash() {
    (cd "$1" && find . -type f \
        -not -path './node_modules/*' -not -path './.venv/*' -not -path './target/*' \
        -not -path './build/*' -not -name '*.wasm' -print0 | sort -z | xargs -0 sha256sum
    cat "$root"/wit/*.wit) | sha256sum | cut -d' ' -f1
}

for dir in hooks/*/ tests/guests/*/; do
    dir=${dir%/}
    name=$(basename "$dir")
    if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
    start=$(date +%s.%N)
    if [ -x "$dir/build.sh" ]; then
        hash=$(sources_hash "$dir")
        if [ -f "$out/$name.wasm" ] && [ "$(cat "$out/$name.hash" 2>/dev/null)" = "$hash" ]; then
            note="cached"
        else
            (cd "$dir" && ./build.sh "$out/$name.wasm")
            echo "$hash" >"$out/$name.hash"
            note="built"
        fi
    elif [ -f "$dir/Cargo.toml" ]; then
        crate=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)
        cargo build --quiet --release --manifest-path "$dir/Cargo.toml" --target wasm32-wasip2
        cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/${crate//-/_}.wasm" "$out/$name.wasm"
        note="cargo"
    else
        continue
    fi
    secs=$(awk "BEGIN { print $(date +%s.%N) - $start }")
    printf 'build-guests: %-28s %9s bytes  %6.2f s (%s)\n' \
        "target/guests/$name.wasm" "$(stat -c %s "$out/$name.wasm")" "$secs" "$note"
done
