"""Waiting for a hermes-bus 0.7.0 BusClient to receive a message, for the scripts
beside this one (they run with this folder on sys.path).

hermes BusClient treats its 1 s socket timeout as a lost connection and
re-registers, so a message can fall into that gap: `resend` is called every
0.3 s until the message is seen.
"""
import time


def wait_for(client, pred, timeout=10.0, resend=None):
    """The first message `client` polls for which `pred` holds."""
    deadline = time.time() + timeout
    next_send = 0.0
    while time.time() < deadline:
        if resend and time.time() >= next_send:
            resend()
            next_send = time.time() + 0.3
        for msg in client.poll():
            if pred(msg):
                return msg
        time.sleep(0.01)
    raise SystemExit("timed out")
