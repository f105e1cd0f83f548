#!/usr/bin/env bash
# Compares two hookbus binaries on the core bus, in one run: both daemons up at
# once (no hooks), `hookbus bench` aimed at both, the target order alternated
# between runs (the second target measures a few % faster on this VM), and the
# mean msg/s of each binary per scenario printed at the end.
# Usage: scripts/bench-ab.sh OLD_BINARY NEW_BINARY [RUNS (even, default 6)] [extra bench flags,
# e.g. --sizes 100 --no-topics; the bench defaults are --sizes 100,10240 --fanout 4]
set -euo pipefail
old=$(realpath "$1") new=$(realpath "$2")
runs=${3:-6}
shift $(($# < 3 ? $# : 3))
work=$(mktemp -d)
cleanup() {
    for b in old new; do
        "${!b}" --socket "$work/$b.sock" daemon stop >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
for b in old new; do
    XDG_STATE_HOME="$work/$b" HOOKBUS_HOOKS=none "${!b}" --socket "$work/$b.sock" daemon start >/dev/null
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "old: $old"
echo "new: $new"
for i in $(seq "$runs"); do
    if ((i % 2)); then order="old new"; else order="new old"; fi
    args=()
    for b in $order; do args+=(--target "$work/$b.sock"); done
    echo "run $i: $order"
    "$new" bench "${args[@]}" --messages 200000 \
        --latency-samples 2000 --burst 20000 "$@" | grep '^| /' | tee -a "$work/rows"
done
echo
echo "| scenario | body | old mean msg/s | new mean msg/s | change | old p99 µs (mean) | new p99 µs (mean) | runs failed (old / new) |"
echo "|---|---|---|---|---|---|---|---|"
awk -F'|' -v w="$work" '
    { t = $2; gsub(/ /, "", t); b = (index(t, w "/old") ? "old" : "new")
      k = $3 "|" $4; keys[k] = 1
      if ($5 ~ /failed/) { f[k, b]++; next }
      n[k, b]++; r[k, b] += $5; p[k, b] += $8 }
    function mean(x, k, b) { return n[k, b] ? x[k, b] / n[k, b] : 0 }
    END { for (k in keys) {
            o = mean(r, k, "old"); m = mean(r, k, "new")
            printf "|%s| %.0f | %.0f | %s | %.1f | %.1f | %d / %d |\n", k, o, m,
                   (o && m) ? sprintf("%+.1f %%", (m / o - 1) * 100) : "n/a",
                   mean(p, k, "old"), mean(p, k, "new"), f[k, "old"], f[k, "new"] } }' "$work/rows" | sort
