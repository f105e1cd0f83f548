#!/usr/bin/env bash
# Per-language hook benchmarks: the `hookbus bench` load of scripts/bench-hooks.sh
# (1→1, 100 B bodies) against a release daemon with
#   - no hooks (the baseline of each round);
#   - the same filter in every language: the `hookbus hooks new` starter (drops
#     messages containing a word; passes all of these), so the language is the only
#     difference;
#   - each language's hook from hooks/ as the only filter (redact, enrich, dedupe,
#     guard), and notify-rules as the only notify hook.
# Prints the bench line and the hook's own counters (calls, p50/p99 µs per call).
# Usage: scripts/bench-languages.sh [extra `hookbus bench` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guests.sh >/dev/null
cargo build --release --quiet
. scripts/guest-tools.sh
guest_tools >/dev/null
bin=$PWD/target/release/hookbus
guests=$PWD/target/guests
work=$(mktemp -d)
export XDG_CACHE_HOME=$work/cache
cleanup() {
    for s in "$work"/*.sock; do "$bin" --socket "$s" daemon stop >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# The starters, built by their own build.sh.
langs="rust c python js assemblyscript"
for lang in $langs; do
    "$bin" hooks new "start-$lang" --lang "$lang" --dir "$work/start-$lang" >/dev/null
    # Rust starters share the guests' cargo target dir, so dependencies build once.
    CARGO_TARGET_DIR=$PWD/target/guest-build "$work/start-$lang/build.sh" 2>/dev/null
    printf 'hooks:\n  - name: start-%s\n    wasm: %s\n' "$lang" "$work/start-$lang/start-$lang.wasm" \
        >"$work/start-$lang.yaml"
done
echo "hooks: []" >"$work/none.yaml"
for hook in redact enrich dedupe guard; do
    printf 'hooks:\n  - name: %s\n    wasm: %s/%s.wasm\n' "$hook" "$guests" "$hook" >"$work/$hook.yaml"
done
# notify-rules with a rule that never matches: the cost of looking at every message.
printf 'hooks:\n  - name: notify-rules\n    wasm: %s/notify-rules.wasm\n    phase: notify\n    config:\n      notify_to: nobody\n      rules: [{match: {body.event: never}, format: x}]\n' \
    "$guests" >"$work/notify-rules.yaml"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
scenarios="none"
for lang in $langs; do scenarios="$scenarios start-$lang"; done
scenarios="$scenarios none redact enrich notify-rules dedupe guard"
for scenario in $scenarios; do
    sock=$work/$scenario.sock
    env -u HOOKBUS_HOOKS -u HERMES_BUS_HOOKS "$bin" --socket "$sock" daemon start \
        --hooks "$work/$scenario.yaml" >/dev/null
    echo "== $scenario: hookbus bench --sizes 100 --fanout 0 --messages 100000 $*"
    "$bin" bench --target "$sock" --sizes 100 --fanout 0 --messages 100000 \
        --latency-samples 5000 "$@" 2>/dev/null | grep '1→1'
    sleep 1 # let a notify hook drain before reading its counters
    "$bin" --socket "$sock" hooks status | tail -n +4
    "$bin" --socket "$sock" daemon stop >/dev/null
done
