"""Dotted field paths into a message (`body.items.0.name`) and how values print."""

import json

Path = tuple[str, ...]


def parse_path(text: str) -> Path:
    """Splits `body.items.0` into its steps; raises ValueError on an empty step."""
    steps = tuple(text.split("."))
    if not all(steps):
        raise ValueError(f"bad field path {text!r} (empty step)")
    return steps


def lookup(value, path: Path):
    """The value at `path`, or None when a step is absent (null counts as absent).

    A step into a list is an index (`items.0`).
    """
    for step in path:
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and step.isdecimal() and int(step) < len(value):
            value = value[int(step)]
        else:
            return None
    return value


def to_text(value) -> str:
    """A string as it is, any other JSON value as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
