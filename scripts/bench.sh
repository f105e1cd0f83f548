#!/usr/bin/env bash
# Side-by-side benchmark: hookbus (release build) against the hermes-bus 0.7.0
# server, with the same load generator (`hookbus bench`) in one run.
# Usage: scripts/bench.sh [extra `hookbus bench` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
cargo build --release --quiet
bin=target/release/hookbus

work=$(mktemp -d)
cleanup() {
    "$bin" --socket "$work/hookbus.sock" daemon stop >/dev/null 2>&1 || true
    [ -n "${hermes_pid:-}" ] && kill "$hermes_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" --socket "$work/hookbus.sock" daemon start >/dev/null
HERMES_BUS_ROOT="$work" HERMES_BUS_HOOKS=none target/hermes-venv/bin/hermes-bus-server >"$work/hermes.log" 2>&1 &
hermes_pid=$!
for _ in $(seq 100); do [ -S "$work/hermes-bus.sock" ] && break; sleep 0.05; done

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "command: $bin bench --target hookbus.sock --target hermes-bus.sock --idle-connections 1000 $*"
"$bin" bench --target "$work/hookbus.sock" --target "$work/hermes-bus.sock" --idle-connections 1000 "$@"
