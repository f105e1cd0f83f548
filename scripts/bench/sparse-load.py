#!/usr/bin/env python3
"""The CPU time a daemon spends on sparse traffic: one `ping` every GAP seconds
for SECS seconds from one registered client, and the daemon's user+system CPU
time over that span (from /proc/PID/stat), as a percentage of one core.

    scripts/bench/sparse-load.py SOCKET DAEMON_PID GAP SECS

Used to price `--spin-us` (BENCHMARKS.md, "Latency")."""
import json
import os
import socket
import struct
import sys
import time

sock_path, pid, gap, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
tick = os.sysconf("SC_CLK_TCK")


def cpu():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


s = socket.socket(socket.AF_UNIX)
s.connect(sock_path)


def send(obj):
    b = json.dumps(obj).encode()
    s.sendall(struct.pack(">I", len(b)) + b)


def recv():
    n = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))[0]
    return s.recv(n, socket.MSG_WAITALL)


send({"type": "register", "endpoint": f"sparse-{os.getpid()}"})
recv()
c0, t0, n = cpu(), time.time(), 0
while time.time() - t0 < secs:
    send({"type": "ping"})
    recv()
    n += 1
    time.sleep(gap)
print(f"{n} pings in {secs:g} s ({n / secs:.0f}/s): daemon CPU {100 * (cpu() - c0) / secs:.1f} %")
