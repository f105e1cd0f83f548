"""hermes-bus 0.7.0 client <-> hermes-bus 0.7.0 client, through the bus at argv[1].

Prints one JSON line with what was observed; the Rust test checks it.
Note: hermes BusClient treats its 1 s socket timeout as a lost connection and
re-registers, so a message can fall into that gap; sends are retried until seen.
"""
import json
import sys

from hermes_bus import BusClient, send_message
from polling import wait_for

sock = sys.argv[1]
a = BusClient("py-a", socket_path=sock)
b = BusClient("py-b", socket_path=sock)
assert a.connect(), "py-a could not connect"
assert b.connect(), "py-b could not connect"


got = wait_for(b, lambda m: m.get("body", {}).get("k") == "a->b",
               resend=lambda: a.send("py-b", {"k": "a->b", "n": [1, 2, 3]}))
one_shot_ok = None


def one_shot():
    global one_shot_ok
    one_shot_ok = send_message("py-b", {"k": "one-shot"}, socket_path=sock, from_ep="script")


shot = wait_for(b, lambda m: m.get("body", {}).get("k") == "one-shot", resend=one_shot)
missing = send_message("ghost", {"k": "x"}, socket_path=sock)
print(json.dumps({
    "a_to_b": got,
    "a_session": a.bus_session_id,
    "one_shot": shot,
    "one_shot_ok": one_shot_ok,
    "ghost_ok": missing,
}))
a.disconnect()
b.disconnect()
