"""A hermes-bus 0.7.0 BusClient named argv[2] that serves requests the hermes
way: every message with a `reply_to` is answered with a message to that address,
body {"echo": <its body>}. Prints "ready" once connected, then runs until killed.
"""
import sys
import time

from hermes_bus import BusClient

client = BusClient(sys.argv[2], socket_path=sys.argv[1])
assert client.connect(), "could not connect"
print("ready", flush=True)
deadline = time.time() + 60
while time.time() < deadline:
    for msg in client.poll():
        if msg.get("reply_to"):
            client.send(msg["reply_to"], {"echo": msg.get("body")})
    time.sleep(0.005)
