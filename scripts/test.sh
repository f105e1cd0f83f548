#!/usr/bin/env bash
# The whole test suite: installs test dependencies and guest toolchains (cached),
# builds every guest hook from source, runs the guests' own unit tests, then every
# Rust test (unit, and integration against a live daemon).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
scripts/build-guests.sh
for t in hooks/*/test.mjs; do node "$t"; done
for t in hooks/*/tests/test_*.py; do python3 "$t"; done
# Rust guests with unit tests, run natively (their own target dir, cached).
for m in hooks/*/Cargo.toml; do
    if grep -q 'cfg(test)' "$(dirname "$m")"/src/*.rs; then
        CARGO_TARGET_DIR=target/guest-native cargo test --quiet --release --manifest-path "$m"
    fi
done
cargo test --all-targets "$@"
