"""Query templates: escaping for PromQL string literals, variable substitution, and its errors."""

import ast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shepherd.core.promql import (
    VARIABLES,
    MissingVariable,
    UnknownVariable,
    escape_string_literal,
    render_query,
    template_variables,
)

ALL_VALUES = {name: f"<{name}>" for name in VARIABLES}


def read_back(body: str) -> str:
    """The value a double-quoted literal with this body denotes.

    Python reads the escapes used (\\a \\b \\f \\n \\r \\t \\v \\\\ \\" \\xHH below 0x80, \\uHHHH) as Go does.
    """
    value = ast.literal_eval(f'"{body}"')
    assert isinstance(value, str)
    return value


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("2.4.0", "2.4.0"),
        ("", ""),
        ("\\", "\\\\"),
        ('"', '\\"'),
        ("\n", "\\n"),
        ("\r", "\\r"),
        ("\t", "\\t"),
        ("\a", "\\a"),
        ("\b", "\\b"),
        ("\f", "\\f"),
        ("\v", "\\v"),
        ("\x00", "\\x00"),
        ("\x1b", "\\x1b"),
        ("\x7f", "\\x7f"),
        ("\x85", "\\u0085"),  # a C1 control: `\x85` would be a lone byte in Go, not U+0085
        ("\x9f", "\\u009f"),
        ("'", "'"),  # single quotes need no escape inside double quotes
        ("é ✓ 日本", "é ✓ 日本"),
        ("\u00a0", "\u00a0"),  # printable enough: not a control character
    ],
)
def test_escapes_follow_go_string_literals(value: str, escaped: str) -> None:
    assert escape_string_literal(value) == escaped


@pytest.mark.parametrize(
    "hostile",
    [
        'a"} or vector(1) #',
        '"} or on() vector(1) or {"',
        "\\",
        'ends with a backslash\\"',
        "two\nlines\r\nand a\ttab",
        '\\"} or vector(1) #',  # an escaped quote must not become an unescaped one
    ],
)
def test_hostile_values_stay_inside_their_literal(hostile: str) -> None:
    body = escape_string_literal(hostile)
    assert read_back(body) == hostile
    assert "\n" not in body
    # Every quote in the body is preceded by an odd number of backslashes: none ends the literal.
    for position, character in enumerate(body):
        if character == '"':
            backslashes = len(body[:position]) - len(body[:position].rstrip("\\"))
            assert backslashes % 2 == 1


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_any_text_reads_back_unchanged(value: str) -> None:
    assert read_back(escape_string_literal(value)) == value


def test_render_substitutes_every_variable_escaped() -> None:
    template = 'sum(rate(http_requests_total{namespace="{{namespace}}",version="{{version}}"}[1m]))'
    rendered = render_query(template, {"namespace": "prod", "version": 'a"} or vector(1) #'})
    assert rendered == 'sum(rate(http_requests_total{namespace="prod",version="a\\"} or vector(1) #"}[1m]))'


def test_render_accepts_whitespace_inside_the_braces() -> None:
    template = '{version="{{ version }}",role="{{role}}",release="{{\trelease  }}"}'
    rendered = render_query(template, {"version": "1", "role": "canary", "release": "shop"})
    assert rendered == '{version="1",role="canary",release="shop"}'


def test_render_replaces_repeated_variables_and_knows_all_six() -> None:
    template = " ".join("{{" + name + "}}" for name in (*VARIABLES, *VARIABLES))
    assert render_query(template, ALL_VALUES) == " ".join(f"<{name}>" for name in (*VARIABLES, *VARIABLES))


def test_render_leaves_a_template_without_variables_alone() -> None:
    query = 'sum(ALERTS{alertstate="firing"}) or vector(0)'
    assert render_query(query, {}) == query


def test_render_ignores_values_the_template_does_not_use() -> None:
    assert render_query('{version="{{version}}"}', ALL_VALUES) == '{version="<version>"}'


@pytest.mark.parametrize(
    ("template", "name"),
    [
        ('{pod="{{pod}}"}', "pod"),
        ('{app="{{ app-name }}"}', "app-name"),
        ('{x="{{Version}}"}', "Version"),  # names are case-sensitive
        ('{x="{{}}"}', ""),
    ],
)
def test_render_rejects_unknown_variables(template: str, name: str) -> None:
    with pytest.raises(UnknownVariable) as raised:
        render_query(template, ALL_VALUES)
    assert raised.value.name == name
    assert isinstance(raised.value, ValueError)
    assert "{{" + name + "}}" in str(raised.value)
    assert "namespace, release, component, version, revision, role" in str(raised.value)


def test_render_rejects_a_known_variable_without_value() -> None:
    with pytest.raises(MissingVariable) as raised:
        render_query('{version="{{version}}",role="{{ role }}"}', {"version": "1"})
    assert raised.value.name == "role"
    assert isinstance(raised.value, KeyError)
    assert str(raised.value) == "no value given for {{role}}"


def test_template_variables_lists_every_name_used_known_or_not() -> None:
    template = '{a="{{version}}", b="{{ role }}", c="{{version}}", d="{{ pod }}"} {e="{single}"}'
    assert template_variables(template) == {"version", "role", "pod"}


def test_template_variables_of_plain_promql_is_empty() -> None:
    assert template_variables('rate(x{code=~"5.."}[1m]) > 0 and on() vector(1)') == set()
