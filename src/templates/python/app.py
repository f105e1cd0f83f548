"""{{name}}: a hookbus hook written in Python, built into a WebAssembly component.

It drops every message whose JSON text contains the configured string and passes
the rest. Replace `handle` with your own logic; the contract is wit/hook.wit.

Config (`config:` in hooks.yaml, given to `init` as JSON):
  block: the string to look for (default "forbidden")
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports.types import Message, Verdict, Verdict_Drop, Verdict_Pass

# Set by `init`. Each instance of the component serves one hook, so module-level
# state is per hook instance; it lasts while the host keeps the instance warm.
_block = "forbidden"


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        """Reads the config; raising `Err(text)` fails the load with that message."""
        global _block
        settings = json.loads(config)
        if not isinstance(settings, dict):
            raise Err("config: expected a mapping")
        block = settings.get("block", "forbidden")
        if not isinstance(block, str) or not block:
            raise Err("block: expected a non-empty string")
        _block = block

    def handle(self, msg: Message) -> Verdict:
        """Decides on one message: pass, drop (with a reason) or replace.

        `msg.json` is the whole message as JSON text; `msg.envelope` has its routing
        fields (kind, to, from_, id) already parsed.
        """
        if _block in msg.json:
            return Verdict_Drop(f'contains "{_block}"')
        return Verdict_Pass()
