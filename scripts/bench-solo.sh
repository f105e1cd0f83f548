#!/usr/bin/env bash
# Compares hookbus binaries with each daemon alone on the machine: for each run,
# each binary in turn starts its daemon (no hooks), `hookbus bench` measures it,
# and it stops. On a 2-core machine two daemons up at once (scripts/bench-ab.sh)
# skew each other's rows; this costs a daemon start per row instead.
# Prints every row, then per binary the mean msg/s of each scenario and, per run,
# publish 1→1 as a share of endpoint 1→1.
# Usage: scripts/bench-solo.sh RUNS BINARY... [-- extra bench flags]
#   default flags: --sizes 100 --burst 0 --no-stalled --no-kv --fanout 0
#                  --latency-samples 2000 --messages 200000
set -euo pipefail
runs=$1
shift
bins=()
while (($#)) && [[ $1 != -- ]]; do
    bins+=("$(realpath "$1")")
    shift
done
[[ ${1:-} == -- ]] && shift
flags=("$@")
((${#flags[@]})) || flags=(--sizes 100 --burst 0 --no-stalled --no-kv --fanout 0
    --latency-samples 2000 --messages 200000)
work=$(mktemp -d)
running=()
cleanup() {
    if ((${#running[@]})); then
        "${running[0]}" --socket "${running[1]}" daemon stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for i in $(seq "$runs"); do
    for n in "${!bins[@]}"; do
        bin=${bins[$n]} dir=$work/$n
        mkdir -p "$dir"
        XDG_STATE_HOME=$dir HOOKBUS_HOOKS=none "$bin" --socket "$dir/bus.sock" daemon start >/dev/null
        running=("$bin" "$dir/bus.sock")
        # A failed scenario is a row saying so; a failed bench leaves no rows.
        "$bin" bench --target "$dir/bus.sock" "${flags[@]}" | { grep '^| /' || true; } |
            sed "s#^| [^|]*|#| $n:$(basename "$bin") (run $i) |#" | tee -a "$work/rows"
        "$bin" --socket "$dir/bus.sock" daemon stop >/dev/null
        running=()
    done
done
echo
echo "| binary | scenario | body | mean msg/s | mean p50 µs | runs |"
echo "|---|---|---|---|---|---|"
awk -F'|' '{ b = $2; sub(/ \(run.*/, "", b); k = b "|" $3 "|" $4
    if ($5 ~ /failed/) next
    n[k]++; r[k] += $5; p[k] += $7 }
    END { for (k in n) printf "| %s | %.0f | %.1f | %d |\n", k, r[k] / n[k], p[k] / n[k], n[k] }' \
    "$work/rows" | sort
echo
echo "publish 1→1 / endpoint 1→1, per run:"
awk -F'|' '{ b = $2; s = $3; gsub(/^ +| +$/, "", s)
    if (s == "1→1") e[b] = $5; if (s == "publish 1→1") p[b] = $5 }
    END { for (b in e) if (p[b]) printf "%s %.0f %%\n", b, 100 * p[b] / e[b] }' "$work/rows" | sort
