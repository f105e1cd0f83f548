"""A hermes-bus 0.7.0 BusClient named argv[2] that prints, as JSON lines, every
frame its application is handed, until a message with body {"last": true}.

Prints "ready" once it is connected. Under protocol-2 traffic (topics, requests,
monitors) on the same bus it must be handed nothing but the messages sent to it.
"""
import json
import sys
import time

from hermes_bus import BusClient

client = BusClient(sys.argv[2], socket_path=sys.argv[1])
assert client.connect(), "could not connect"
print("ready", flush=True)
deadline = time.time() + 30
while time.time() < deadline:
    for msg in client.poll():
        print(json.dumps(msg), flush=True)
        if msg.get("body") == {"last": True}:
            client.disconnect()
            sys.exit(0)
    time.sleep(0.01)
raise SystemExit("timed out waiting for the last message")
