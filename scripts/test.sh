#!/usr/bin/env bash
# The whole test suite: installs test dependencies (cached), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
scripts/build-guests.sh
cargo test --all-targets "$@"
