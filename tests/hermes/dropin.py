"""hermes-bus 0.7.0 clients on their default socket ($HERMES_BUS_ROOT), served
by `hookbus --hermes`: BusClient to BusClient, and send_message.

Prints one JSON line with what was observed; the Rust test checks it.
"""
import json
import time

from hermes_bus import BusClient, send_message

a = BusClient("dropin-a")
b = BusClient("dropin-b")
assert a.connect(), "dropin-a could not connect"
assert b.connect(), "dropin-b could not connect"


def wait_for(client, pred, resend, timeout=10.0):
    # hermes BusClient treats its 1 s socket timeout as a lost connection and
    # re-registers, so a message can fall into that gap: resend until seen.
    deadline = time.time() + timeout
    next_send = 0.0
    while time.time() < deadline:
        if time.time() >= next_send:
            resend()
            next_send = time.time() + 0.3
        for msg in client.poll():
            if pred(msg):
                return msg
        time.sleep(0.01)
    raise SystemExit("timed out")


got = wait_for(b, lambda m: m.get("body", {}).get("k") == "a->b",
               lambda: a.send("dropin-b", {"k": "a->b"}))
shot = wait_for(b, lambda m: m.get("body", {}).get("k") == "one-shot",
                lambda: send_message("dropin-b", {"k": "one-shot"}, from_ep="script"))
print(json.dumps({"a_to_b": got, "one_shot": shot}))
a.disconnect()
b.disconnect()
