"""A hermes-bus 0.7.0 BusClient named argv[2] talking to the Rust client `rust`.

Sends {"hello": "from python"} to `rust` (retried, see pair.py), prints each
message it receives from `rust` as a JSON line, and exits after the first.
"""
import json
import sys
import time

from hermes_bus import BusClient

client = BusClient(sys.argv[2], socket_path=sys.argv[1])
assert client.connect(), "could not connect"
deadline = time.time() + 10
next_send = 0.0
while time.time() < deadline:
    if time.time() >= next_send:
        client.send("rust", {"hello": "from python"})
        next_send = time.time() + 0.3
    for msg in client.poll():
        if msg.get("from") == "rust":
            print(json.dumps(msg), flush=True)
            client.disconnect()
            sys.exit(0)
    time.sleep(0.01)
raise SystemExit("timed out waiting for rust")
