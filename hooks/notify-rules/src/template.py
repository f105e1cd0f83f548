"""Format templates: text with `{…}` placeholders filled from a message.

    {path}            the value at a dotted path: a string as it is, other JSON compact
    {path?default}    `default` when the value is absent or null (otherwise empty)
    {path:FORMAT}     a number of seconds since the epoch, as UTC time in strftime
                      FORMAT (`{ts:%H:%M:%S}`); any other value prints as usual
    {{ and }}         literal braces

Templates are parsed once, in `init`, so a mistake is reported before any message.
"""

import re
import time

from fields import Path, lookup, parse_path, to_text

# A literal brace pair, a placeholder, or a stray brace (an error).
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class TemplateError(ValueError):
    """A template that cannot be parsed; the text says where."""


class Field:
    """One placeholder."""

    __slots__ = ("path", "time_format", "default")

    def __init__(self, path: Path, time_format: str | None, default: str | None):
        self.path = path
        self.time_format = time_format
        self.default = default

    def render(self, message: dict) -> str:
        value = lookup(message, self.path)
        if value is None:
            return self.default or ""
        if self.time_format and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return time.strftime(self.time_format, time.gmtime(value))
            except (OverflowError, OSError, ValueError):
                pass  # out of the platform's time range: print the number
        return to_text(value)


class Template:
    """A parsed template: literal strings and `Field`s, in order."""

    def __init__(self, parts: list):
        self.parts = parts

    @classmethod
    def parse(cls, text: str) -> "Template":
        parts: list = []
        literal = ""
        end = 0
        for token in _TOKEN.finditer(text):
            literal += text[end : token.start()]
            end = token.end()
            if token.group() in ("{{", "}}"):
                literal += token.group()[0]
            elif token.group(1) is None:
                raise TemplateError(f"unmatched {token.group()!r} at offset {token.start()}")
            else:
                if literal:
                    parts.append(literal)
                    literal = ""
                parts.append(_field(token.group(1)))
        literal += text[end:]
        if literal:
            parts.append(literal)
        return cls(parts)

    def render(self, message: dict) -> str:
        return "".join(p if isinstance(p, str) else p.render(message) for p in self.parts)


def _field(spec: str) -> Field:
    """Parses what is between the braces: `path[:FORMAT][?default]`."""
    spec, has_default, default = spec.partition("?")
    path_text, has_format, time_format = spec.partition(":")
    try:
        path = parse_path(path_text)
    except ValueError as e:
        raise TemplateError(f"{{{spec}}}: {e}") from None
    if has_format:
        if not time_format:
            raise TemplateError(f"{{{spec}}}: empty time format after ':'")
        try:
            time.strftime(time_format, time.gmtime(0))
        except ValueError as e:
            raise TemplateError(f"{{{spec}}}: bad time format ({e})") from None
    return Field(path, time_format or None, default if has_default else None)


# hermes-bus-plugin's placeholders that differ from plain field paths.
_HERMES_FIELDS = {("text",): ("body", "text"), ("type",): ("body", "type")}
# hermes-bus-plugin's terminal styling; a notification is plain text, so they go.
_HERMES_STYLES = {("color",), ("bold",), ("reset",)}


def parse_hermes(text: str) -> Template:
    """Parses a hermes-bus-plugin `print_format`/`context_format` template.

    Its `{text}` and `{type}` are the body's, and `{color:…}`, `{bold}` and
    `{reset}` (ANSI styling) are dropped.
    """
    parts = []
    for part in Template.parse(text).parts:
        if isinstance(part, Field):
            if part.path in _HERMES_STYLES:
                continue
            if part.path in _HERMES_FIELDS:
                part.path = _HERMES_FIELDS[part.path]
        parts.append(part)
    return Template(parts)
