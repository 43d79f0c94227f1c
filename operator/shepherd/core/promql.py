"""PromQL query templates: `{{variable}}` substitution with values escaped for string literals.

Queries put variables inside double-quoted label matchers (`version="{{version}}"`), so every value
is escaped as a PromQL string literal body. PromQL reads those literals by Go's rules, which is what
the escaping below follows. A value therefore can never close the literal and inject PromQL.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping

VARIABLES = ("namespace", "release", "component", "version", "revision", "role")

# Anything between double braces is a placeholder, not only identifiers: `{{ app-name }}` must be
# reported as an unknown variable rather than sent to Prometheus as a baffling parse error.
_PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")

_SHORT_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


class UnknownVariable(ValueError):
    """A template names a variable Shepherd does not provide: a spec error."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown variable {{{{{name}}}}}; allowed: {', '.join(VARIABLES)}")
        self.name = name


class MissingVariable(KeyError):
    """A template uses a known variable the caller gave no value for: a programming error."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        # KeyError would print the repr of its argument.
        return f"no value given for {{{{{self.name}}}}}"


def escape_string_literal(value: str) -> str:
    """The body (without quotes) of a double-quoted PromQL string literal that reads back as `value`."""
    return "".join(_escape_character(character) for character in value)


def _escape_character(character: str) -> str:
    short = _SHORT_ESCAPES.get(character)
    if short is not None:
        return short
    if unicodedata.category(character) != "Cc":
        return character
    code = ord(character)
    # In Go, `\xHH` is one byte, not one code point: above ASCII a control character needs `\u`.
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def template_variables(template: str) -> set[str]:
    """Every name the template uses as `{{name}}` (whitespace inside the braces ignored), known or not."""
    return {match.group(1).strip() for match in _PLACEHOLDER.finditer(template)}


def render_query(template: str, values: Mapping[str, str]) -> str:
    """The template with each `{{name}}` replaced by the escaped value of `name`.

    Raises UnknownVariable for a name outside VARIABLES, MissingVariable for one without a value.
    """
    return substitute(template, values, escape_string_literal)


def substitute(template: str, values: Mapping[str, str], escape: Callable[[str], str]) -> str:
    """The template with each `{{name}}` replaced by `escape` of its value (a URL needs other escaping)."""

    def replacement(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name not in VARIABLES:
            raise UnknownVariable(name)
        if name not in values:
            raise MissingVariable(name)
        return escape(values[name])

    return _PLACEHOLDER.sub(replacement, template)
