"""The hook's config: checked once in `init`, then rules matched against messages.

Two shapes are accepted (see README.md):
- `rules:`     this hook's own rules (match on any field path, `to`, `format`, `stop`);
- `callbacks:` hermes-bus-plugin's bus-rules.yaml list (`match_type`, `print`,
               `print_format`, `context`, `context_format`, `command`), translated
               into rules.
"""

import re

from fields import Path, lookup, parse_path, to_text
from template import Template, TemplateError, parse_hermes

RULE_KEYS = ("name", "match", "to", "format", "stop")
CALLBACK_KEYS = ("match_type", "print", "print_format", "context", "context_format", "command")
# bus-rules.yaml settings for hermes-bus-plugin itself: accepted and ignored, so a
# whole bus-rules.yaml can be pasted under `config:`.
HERMES_IGNORED_KEYS = ("session_aliases", "default_sender", "bus")
CONFIG_KEYS = ("notify_to", "rules", "callbacks") + HERMES_IGNORED_KEYS


class ConfigError(ValueError):
    """A config mistake; the text starts with the key at fault (`rules[1].format: …`)."""


class Condition:
    """One `match` entry: the value at `path` must be one of the accepted values."""

    def __init__(self, path: Path, accepts: list):
        self.path = path
        self.accepts = accepts  # predicates on the field's value (None when absent)

    def holds(self, message: dict) -> bool:
        value = lookup(message, self.path)
        return any(accept(value) for accept in self.accepts)


class Rule:
    """A checked rule. `template` None means it matches but sends nothing (a
    hermes callback with neither `print` nor `context`)."""

    def __init__(self, name: str, conditions: list, to: str, template, stop: bool):
        self.name = name
        self.conditions = conditions
        self.to = to
        self.template = template
        self.stop = stop

    def matches(self, message: dict) -> bool:
        return all(c.holds(message) for c in self.conditions)


def parse_config(config) -> tuple[list, list]:
    """Checks the config and builds its rules.

    Returns (rules, warnings): warnings name settings that are accepted but have no
    effect here. Raises ConfigError on any mistake.
    """
    if not isinstance(config, dict):
        raise ConfigError("config: expected a mapping with `rules` (or `callbacks`)")
    _no_unknown_keys(config, CONFIG_KEYS, "config")
    notify_to = config.get("notify_to")
    if notify_to is not None:
        _check_endpoint(notify_to, "notify_to")
    if ("rules" in config) == ("callbacks" in config):
        raise ConfigError("config: give either `rules` or `callbacks` (a bus-rules.yaml list)")
    key = "rules" if "rules" in config else "callbacks"
    entries = config[key]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{key}: expected a non-empty list")
    warnings: list = []
    rules = []
    for index, entry in enumerate(entries):
        where = f"{key}[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping")
        if key == "rules":
            rules.append(_rule(entry, where, notify_to))
        else:
            rules.append(_callback(entry, where, notify_to, warnings))
    return rules, warnings


def _rule(entry: dict, where: str, notify_to) -> Rule:
    _no_unknown_keys(entry, RULE_KEYS, where)
    name = entry.get("name", where)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: expected a non-empty string")
    conditions = _conditions(entry.get("match", {}), f"{where}.match")
    to = entry.get("to", notify_to)
    if to is None:
        raise ConfigError(f"{where}.to: missing, and there is no `notify_to` default")
    _check_endpoint(to, f"{where}.to")
    if "format" not in entry:
        raise ConfigError(f"{where}.format: missing")
    template = _template(entry["format"], f"{where}.format", Template.parse)
    stop = entry.get("stop", False)
    if not isinstance(stop, bool):
        raise ConfigError(f"{where}.stop: expected true or false")
    return Rule(name, conditions, to, template, stop)


def _callback(entry: dict, where: str, notify_to, warnings: list) -> Rule:
    """Translates a hermes-bus-plugin callback: it matches `body.type` against
    `match_type`, and the first matching callback wins (so `stop` is implied).
    `context: true` sends `context_format`, else `print` (default true) sends
    `print_format`; both formats default to "{text}"."""
    _no_unknown_keys(entry, CALLBACK_KEYS, where)
    match_type = entry.get("match_type")
    if not isinstance(match_type, str) or not match_type:
        raise ConfigError(f"{where}.match_type: expected a non-empty string")
    if notify_to is None:
        raise ConfigError("notify_to: missing (callbacks need an endpoint to notify)")
    for flag in ("print", "context"):
        if not isinstance(entry.get(flag, False), bool):
            raise ConfigError(f"{where}.{flag}: expected true or false")
    if "command" in entry:
        warnings.append(
            f"{where}.command: ignored (a WASM hook cannot run programs; "
            "use a `command:` hook in hooks.yaml for that)"
        )
    if entry.get("context", False):
        format_key = "context_format"
    elif entry.get("print", True):
        format_key = "print_format"
    else:
        format_key = None
    template = None
    if format_key:
        text = entry.get(format_key, "{text}")
        if isinstance(text, str) and text.startswith(("~", "/")):
            raise ConfigError(
                f"{where}.{format_key}: format scripts are not supported here "
                "(a WASM hook cannot run programs); use a template"
            )
        template = _template(text, f"{where}.{format_key}", parse_hermes)
    condition = Condition(("body", "type"), [_accept(match_type, f"{where}.match_type")])
    return Rule(where, [condition], notify_to, template, stop=True)


def _conditions(match, where: str) -> list:
    if not isinstance(match, dict):
        raise ConfigError(f"{where}: expected a mapping of field paths to values")
    conditions = []
    for key, want in match.items():
        at = f"{where}.{key}"
        try:
            path = parse_path(key)
        except ValueError as e:
            raise ConfigError(f"{at}: {e}") from None
        alternatives = want if isinstance(want, list) else [want]
        if not alternatives:
            raise ConfigError(f"{at}: an empty list matches nothing")
        conditions.append(Condition(path, [_accept(v, at) for v in alternatives]))
    return conditions


def _accept(want, where: str):
    """A predicate for one accepted value (see README.md, "Matching")."""
    if want is None:
        return lambda value: value is None
    if isinstance(want, bool):
        return lambda value: value is want
    if isinstance(want, (int, float)):
        return lambda value: _is_number(value) and value == want
    if isinstance(want, str):
        pattern = _glob(want)
        return lambda value: value is not None and pattern.fullmatch(to_text(value)) is not None
    raise ConfigError(
        f"{where}: expected a string (glob), number, boolean, null or a list of them; "
        "for a nested field write a dotted key (e.g. body.status)"
    )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _glob(pattern: str) -> re.Pattern:
    """`*` matches any run of characters, `?` any one; the rest is literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.DOTALL)


def _template(text, where: str, parse) -> Template:
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected a string")
    try:
        return parse(text)
    except TemplateError as e:
        raise ConfigError(f"{where}: {e}") from None


def _check_endpoint(value, where: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected an endpoint name (a non-empty string)")


def _no_unknown_keys(mapping: dict, known: tuple, where: str) -> None:
    for key in mapping:
        if key not in known:
            raise ConfigError(f"{where}: unknown key `{key}` (expected one of {', '.join(known)})")
