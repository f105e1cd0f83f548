"""notify-rules: a hookbus notify hook that sends a notification message when a
routed message matches a rule. The rules and their format are in rules.py and
README.md; this module is the component's entry point (world `hook` of
wit/hook.wit), built with componentize-py.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import Level, Message, Verdict, Verdict_Pass

from rules import ConfigError, Rule, parse_config

# Set by `init`. Each component instance serves one hook, so module-level state is
# per hook instance.
_rules: list = []
# `from` of the messages this hook emits (the host fills in `hook:<name>`); they
# are routed too and come back to notify hooks, and are never notified about.
_own_sender = ""


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        global _rules, _own_sender
        try:
            _rules, warnings = parse_config(json.loads(config))
        except ConfigError as e:
            raise Err(str(e)) from None
        for warning in warnings:
            host.log(Level.WARN, warning)
        _own_sender = f"hook:{host.hook_name()}"
        host.log(Level.DEBUG, f"{len(_rules)} rule(s) loaded")

    def handle(self, msg: Message) -> Verdict:
        # A notify hook's verdict is ignored: the work is the emitted messages.
        if msg.envelope.from_ == _own_sender:
            return Verdict_Pass()
        message = json.loads(msg.json)  # the host hands over one JSON object
        if not message.get("to"):
            message["to"] = ""  # a broadcast, matched as `to: ""` as in hooks.yaml
        for rule in _rules:
            if not rule.matches(message):
                continue
            if rule.template is not None:
                _notify(rule, message)
            if rule.stop:
                break
        return Verdict_Pass()


def _notify(rule: Rule, message: dict) -> None:
    notification = {
        "type": "message",
        "to": rule.to,
        "body": {
            "text": rule.template.render(message),
            "rule": rule.name,
            "source": {"from": message.get("from"), "id": message.get("id")},
        },
    }
    try:
        host.emit(json.dumps(notification, ensure_ascii=False))
    except Err as e:
        host.log(Level.WARN, f"{rule.name}: notification to {rule.to} refused: {e.value}")
