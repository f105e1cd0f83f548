#!/usr/bin/env python3
"""Floods a bus with publishes on one subject, as fast as one connection can
write them, then waits for a pong: what a stream keeping that subject does under
a publisher faster than its store (see BENCHMARKS.md, "Stream appends under a
flood").

Usage: stream-flood.py SOCKET COUNT [SUBJECT]   (COUNT a multiple of 1000)
"""
import json
import socket
import struct
import sys
import time


def frame(obj):
    data = json.dumps(obj, separators=(",", ":")).encode()
    return struct.pack(">I", len(data)) + data


def read_frame(sock):
    header = b""
    while len(header) < 4:
        part = sock.recv(4 - len(header))
        if not part:
            raise SystemExit("the bus closed the connection")
        header += part
    size = struct.unpack(">I", header)[0]
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return json.loads(data)


def main():
    path, count = sys.argv[1], int(sys.argv[2])
    subject = sys.argv[3] if len(sys.argv) > 3 else "bench.x"
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    sock.sendall(frame({"type": "hello", "protocol": 2, "features": ["topics"]}))
    read_frame(sock)
    pad = "x" * 200
    chunk = b"".join(
        frame({"type": "publish", "subject": subject, "body": {"n": i, "pad": pad}})
        for i in range(1000)
    )
    started = time.time()
    for _ in range(count // 1000):
        sock.sendall(chunk)
    sock.sendall(frame({"type": "ping"}))
    while read_frame(sock).get("type") != "pong":
        pass
    print(f"{count} publishes handled in {time.time() - started:.2f} s")


if __name__ == "__main__":
    main()
