"""hermes-bus 0.7.0 clients on their default socket ($HERMES_BUS_ROOT), served
by `hookbus --hermes`: BusClient to BusClient, and send_message.

Prints one JSON line with what was observed; the Rust test checks it.
"""
import json

from hermes_bus import BusClient, send_message
from polling import wait_for

a = BusClient("dropin-a")
b = BusClient("dropin-b")
assert a.connect(), "dropin-a could not connect"
assert b.connect(), "dropin-b could not connect"


got = wait_for(b, lambda m: m.get("body", {}).get("k") == "a->b",
               resend=lambda: a.send("dropin-b", {"k": "a->b"}))
shot = wait_for(b, lambda m: m.get("body", {}).get("k") == "one-shot",
                resend=lambda: send_message("dropin-b", {"k": "one-shot"}, from_ep="script"))
print(json.dumps({"a_to_b": got, "one_shot": shot}))
a.disconnect()
b.disconnect()
