#!/usr/bin/env bash
# Latency of one coding-agent hook call, end to end, as the agent pays it: start
# the hook program, hand it a Claude Code PreToolUse event on stdin, wait for its
# decision. Side by side in one run:
#   hookbus   `hookbus agent-hook --agent claude` against a daemon running the
#             tool-guard WASM hook (process start, connect, request, guard, decision)
#   python    scripts/bench/python-guard.py, the same check in one Python process
#             per call (how agent hooks are usually written)
#   no daemon `hookbus agent-hook` with no daemon running (the cost of a missing bus)
# Each is run N times (default 300) for an allowed command and a denied one, from
# a Python harness (subprocess.run, as an agent would spawn it); prints p50/p99 in ms.
#
# Usage: scripts/bench-agent-hook.sh [N]   (builds hookbus --release and the guest)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-300}
cargo build --release --quiet
scripts/build-guests.sh tool-guard >/dev/null
bin=$(pwd)/target/release/hookbus
dir=$(mktemp -d)
trap 'kill $daemon 2>/dev/null || true; rm -rf "$dir"' EXIT
"$bin" --socket "$dir/bus.sock" serve --no-store --hooks hooks/tool-guard/hooks.yaml >"$dir/log" 2>&1 &
daemon=$!
for _ in $(seq 100); do [ -S "$dir/bus.sock" ] && break; sleep 0.05; done
python3 - "$bin" "$dir" "$n" <<'PY'
import json, subprocess, sys, time
bin, dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def event(command):
    return json.dumps({"session_id": "bench", "cwd": "/home/u/proj", "hook_event_name": "PreToolUse",
                       "tool_name": "Bash", "tool_input": {"command": command}}).encode()
programs = {
    "hookbus": [bin, "--socket", f"{dir}/bus.sock", "agent-hook", "--agent", "claude"],
    "python": [sys.executable, "scripts/bench/python-guard.py"],
    "no daemon": [bin, "--socket", f"{dir}/none.sock", "agent-hook", "--agent", "claude"],
}
cases = {"allowed (ls -la)": event("ls -la"), "denied (rm -rf /)": event("rm -rf /")}
print(f"{'program':<10} {'case':<18} {'p50 ms':>8} {'p99 ms':>8}  decision")
for name, argv in programs.items():
    for case, stdin in cases.items():
        times = []
        for i in range(n + 10):
            t = time.perf_counter()
            out = subprocess.run(argv, input=stdin, capture_output=True)
            if i >= 10:  # warm-up runs are not counted
                times.append((time.perf_counter() - t) * 1000)
        times.sort()
        decision = "deny" if b'"deny"' in out.stdout else "allow"
        print(f"{name:<10} {case:<18} {times[len(times)//2]:8.2f} {times[int(len(times)*0.99)]:8.2f}  {decision}")
PY
