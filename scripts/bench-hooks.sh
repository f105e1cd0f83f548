#!/usr/bin/env bash
# Hook benchmarks: the same `hookbus bench` load (1→1, 100 B bodies) against a
# daemon with no hooks; 1 and 5 WASM filters (hooks/pass: passes without parsing;
# tests/guests/probe: parses the message JSON); 1 core-module filter
# (tests/fixtures/size_guard.wat); 1 WASM notify hook; 1 worker subprocess filter
# (tests/fixtures/worker.py); 1 spawn notify hook (`true`); then the hermes-bus
# 0.7.0 server with one hook script; then a 2,000-message burst in one write
# through one hermes-style spawn hook (runs seen, time to drain) and the time
# `daemon stop` takes with a hung worker holding a sender. Prints each run's table
# and hooks status.
# Usage: scripts/bench-hooks.sh [extra `hookbus bench` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
scripts/build-guests.sh >/dev/null
cargo build --release --quiet
bin=$PWD/target/release/hookbus
probe=$PWD/target/guests/probe.wasm
pass=$PWD/target/guests/pass.wasm
fixtures=$PWD/tests/fixtures
work=$(mktemp -d)
export XDG_CACHE_HOME=$work/cache
cleanup() {
    for s in "$work"/*.sock; do "$bin" --socket "$s" daemon stop >/dev/null 2>&1 || true; done
    [ -n "${hermes_pid:-}" ] && kill "$hermes_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

filters() { # n module
    echo "hooks:"
    for i in $(seq "$1"); do printf '  - name: filter-%s\n    wasm: %s\n' "$i" "$2"; done
}
echo "hooks: []" > "$work/none.yaml"
filters 1 "$pass" > "$work/pass1.yaml"
filters 5 "$pass" > "$work/pass5.yaml"
filters 1 "$probe" > "$work/probe1.yaml"
filters 5 "$probe" > "$work/probe5.yaml"
filters 1 "$fixtures/size_guard.wat" > "$work/core1.yaml"
printf 'hooks:\n  - name: notify\n    wasm: %s\n    phase: notify\n' "$probe" > "$work/notify1.yaml"
printf 'hooks:\n  - name: worker\n    command: [python3, %s/worker.py]\n    mode: worker\n' "$fixtures" > "$work/worker1.yaml"
printf 'hooks:\n  - name: spawn\n    command: ["true"]\n' > "$work/spawn1.yaml"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for scenario in none pass1 pass5 probe1 probe5 core1 notify1 worker1 spawn1; do
    sock=$work/$scenario.sock
    env -u HOOKBUS_HOOKS -u HERMES_BUS_HOOKS "$bin" --socket "$sock" daemon start --hooks "$work/$scenario.yaml" >/dev/null
    messages=200000
    [ "$scenario" = worker1 ] && messages=100000
    echo "== $scenario: hookbus bench --sizes 100 --fanout 0 --messages $messages $*"
    "$bin" bench --target "$sock" --sizes 100 --fanout 0 --messages "$messages" --latency-samples 5000 "$@" 2>/dev/null | grep '1→1'
    sleep 1 # let notify and spawn hooks drain before reading their counters
    "$bin" --socket "$sock" hooks status | tail -n +4
    "$bin" --socket "$sock" daemon stop >/dev/null
done

echo "== hermes-bus 0.7.0 server with one hook script (HERMES_BUS_HOOKS)"
printf 'import sys\nsys.stdin.read()\n' > "$work/hermes_hook.py"
mkdir -p "$work/hermes"
HERMES_BUS_ROOT="$work/hermes" HERMES_BUS_HOOKS="$work/hermes_hook.py" target/hermes-venv/bin/hermes-bus-server >/dev/null 2>&1 &
hermes_pid=$!
for _ in $(seq 100); do [ -S "$work/hermes/hermes-bus.sock" ] && break; sleep 0.05; done
"$bin" bench --target "$work/hermes/hermes-bus.sock" --sizes 100 --fanout 0 --messages 500 --latency-samples 100 "$@" 2>/dev/null | grep '1→1'

# A burst in one write, sent and timed by Python (no client library: raw frames).
burst() { # socket count
    python3 - "$1" "$2" <<'PY'
import json, socket, struct, sys
path, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX)
s.connect(path)
frames = b"".join(
    struct.pack(">I", len(p)) + p
    for p in (json.dumps({"type": "message", "to": "", "id": str(i), "body": {"i": i}}).encode() for i in range(n))
)
s.sendall(frames)
s.close()
PY
}

echo "== a 2,000-message burst (one write) through one spawn hook: every run seen, time to drain"
sock=$work/burst.sock
printf 'hooks:\n  - name: record\n    command: [%s/record.sh]\n    env: { RECORD_TO: %s/seen }\n' "$fixtures" "$work" > "$work/burst.yaml"
env -u HOOKBUS_HOOKS -u HERMES_BUS_HOOKS "$bin" --socket "$sock" daemon start --hooks "$work/burst.yaml" >/dev/null
start=$(date +%s.%N)
burst "$sock" 2000
until [ "$(cat "$work/seen" 2>/dev/null | wc -l)" -ge 2000 ]; do sleep 0.01; done
end=$(date +%s.%N)
echo "runs seen: $(wc -l < "$work/seen") of 2000; drained in $(awk "BEGIN { printf \"%.2f\", $end - $start }") s"
"$bin" --socket "$sock" hooks status | tail -n +5
"$bin" --socket "$sock" daemon stop >/dev/null

echo "== daemon stop with a hung worker (stopped reading stdin, a 200 KB message in flight; --shutdown-timeout 5)"
sock=$work/hung.sock
printf 'hooks:\n  - name: hung\n    command: [python3, %s/hostile_worker.py]\n    mode: worker\n    config: { mode: stall }\n    limits: { timeout_ms: 60000 }\n' "$fixtures" > "$work/hung.yaml"
env -u HOOKBUS_HOOKS -u HERMES_BUS_HOOKS "$bin" --socket "$sock" daemon start --hooks "$work/hung.yaml" >/dev/null
python3 - "$sock" <<'PY' &
import json, socket, struct, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
p = json.dumps({"type": "message", "to": "", "body": {"pad": "x" * 200000}}).encode()
s.sendall(struct.pack(">I", len(p)) + p)
time.sleep(30)
PY
sender=$!
sleep 0.5
start=$(date +%s.%N)
"$bin" --socket "$sock" daemon stop
end=$(date +%s.%N)
echo "daemon stop took $(awk "BEGIN { printf \"%.2f\", $end - $start }") s"
kill "$sender" 2>/dev/null || true
