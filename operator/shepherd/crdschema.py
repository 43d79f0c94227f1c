"""Offline validation of a custom object against its CRD, the way kube-apiserver validates it.

`shepherd lint`, the local API emulator's admission and the tests all use this, so a bad Release is
rejected with the same field path and message everywhere, before anything reaches a cluster.

The steps and the words follow the API server's (k8s.io/apiextensions-apiserver, kube-openapi's validator):
apiVersion and kind first; then unknown fields, rejected as kubectl's strict field validation has the server
do, before anything else is looked at; then nulls dropped and defaults applied; the structural schema (types,
formats, bounds, enums, required fields); the x-kubernetes-list-type invariants; and last the
`x-kubernetes-validations` CEL rules, unless an error of type, enum, required field, length or count keeps
them from running. A message is the body of the server's `field.Error` ("Invalid value: ...: ..."), its field
the path the server names: kube-openapi's dotted path for schema errors (a map key is `.key` there), the
field.Path of list-type and CEL errors (a map key is `[key]` there), and "<nil>" for the errors that have no
field.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import decimal
import functools
import itertools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import celpy
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError, CELFunction

Schema = Mapping[str, Any]
Path = tuple[str | int, ...]

NO_FIELD = "<nil>"
"""The field the API server names for an error without a path (Go's nil *field.Path)."""


# Fields of the root object that the schema's pruning leaves alone (ObjectMeta is checked apart).
_META_FIELDS = frozenset({"apiVersion", "kind", "metadata"})
_OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)

_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
_FIELD_PATH_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]")
_TRANSITION_RULE = re.compile(r"\boldSelf\b")


@dataclass(frozen=True)
class Violation:
    """One reason an object is invalid, as one cause of the API server's 422."""

    field: str
    """The path the API server names, e.g. "spec.components[1].name"; "<nil>" for an error without one."""
    message: str
    """The API server's message for it, e.g. "Required value" or 'Invalid value: "": ... chars long'."""

    def __str__(self) -> str:
        """As kube-apiserver prints a field error: "<field>: <message>"."""
        return f"{self.field}: {self.message}" if self.field else self.message


RULES_NOT_CHECKED = Violation(
    NO_FIELD,
    "Invalid value: null: some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation",
)
"""The API server's last cause when an error of type, enum, required field, length or count kept the CEL
rules from running: they would see values their author never expected."""


def load_crd(name: str = "release") -> dict[str, Any]:
    """The CRD shipped in the package as crds/<name>.yaml, e.g. "release"."""
    text = resources.files("shepherd").joinpath("crds", f"{name}.yaml").read_text(encoding="utf-8")
    crd: dict[str, Any] = yaml.safe_load(text)
    return crd


def validate(crd: Mapping[str, Any], obj: Mapping[str, Any]) -> list[Violation]:
    """Every violation kube-apiserver would report when `obj` is created; empty when it is valid.

    With unknown fields the server (asked for strict field validation, as kubectl does) answers 400 naming
    only those, before any other check: so does this, with one violation per unknown field.
    """
    schema, violations = _schema_for(crd, obj)
    if schema is None:
        return violations
    unknown = _unknown_fields(schema, obj)
    if unknown:
        return [Violation(path, f'unknown field "{path}"') for path in unknown]
    instance = _defaulted(schema, obj)
    errors = _Errors()
    _check(schema, instance, (), errors)
    errors.found.extend(_list_type_violations(schema, instance, ()))
    if errors.blocking:
        return [*errors.found, RULES_NOT_CHECKED]
    return errors.found + _rule_violations(schema, instance)


def apply_defaults(crd: Mapping[str, Any], obj: Mapping[str, Any]) -> dict[str, Any]:
    """`obj` as the API server stores it: non-nullable nulls dropped, schema defaults filled in.

    Returns a copy; `obj` itself is left unchanged. An object of an unknown kind or version is copied as is.
    """
    schema, _ = _schema_for(crd, obj)
    return _defaulted(schema, obj) if schema is not None else copy.deepcopy(dict(obj))


# Picking the schema: the server decodes the body for the version of the URL and checks its kind.


def _schema_for(crd: Mapping[str, Any], obj: Mapping[str, Any]) -> tuple[Schema | None, list[Violation]]:
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served", True)}
    api_version = obj.get("apiVersion")
    obj_group, _, version = str(api_version or "").rpartition("/")
    if obj_group != group or version not in served:
        expected = f"{group}/{next(iter(served), '')}"
        mismatch = (
            f"the API version in the data ({api_version or ''}) does not match the expected API version"
        )
        message = f"{mismatch} ({expected})"
        if obj_group == group and version:
            # A version of the group that is not served: the server cannot decode the body as a Release.
            message = f'{kind} in version "{version}" cannot be handled as a {kind}: {message}'
        return None, [Violation("apiVersion", message)]
    obj_kind = obj.get("kind")
    if obj_kind != kind:
        shown = _go_quote(obj_kind if isinstance(obj_kind, str) else "")
        return None, [Violation("kind", f"Invalid value: {shown}: must be {kind}")]
    schema: Schema = served[version]["schema"]["openAPIV3Schema"]
    return schema, []


# Unknown fields: what the server's pruning would drop, which strict field validation turns into a 400.


def _unknown_fields(schema: Schema, obj: Mapping[str, Any]) -> list[str]:
    """The paths of the fields the schema does not declare, sorted as the server lists them."""
    found: list[str] = []
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping):
        found.extend(f"metadata.{key}" for key in metadata if key not in _OBJECT_META_FIELDS)
    _prune(obj, schema, "", found, embedded=True)
    return sorted(found)


def _prune(value: Any, schema: Schema | None, path: str, found: list[str], *, embedded: bool = False) -> None:
    if schema is not None and schema.get("x-kubernetes-preserve-unknown-fields", False):
        _prune_known(value, schema, path, found)
        return
    if isinstance(value, Mapping):
        embedded = embedded or bool(schema and schema.get("x-kubernetes-embedded-resource", False))
        for key, child in value.items():
            if embedded and key in _META_FIELDS:
                continue
            child_schema = _child_schema(schema, key) if schema is not None else None
            if child_schema is not None:
                _prune(child, child_schema, _join(path, key), found)
            elif key not in _META_FIELDS or path:
                found.append(_join(path, key))
    elif isinstance(value, list):
        items = schema.get("items") if schema is not None else None
        for index, item in enumerate(value):
            _prune(item, items, f"{path}[{index}]", found)


def _prune_known(value: Any, schema: Schema, path: str, found: list[str]) -> None:
    """x-kubernetes-preserve-unknown-fields: undeclared fields stay, declared ones are pruned within."""
    if isinstance(value, Mapping):
        embedded = schema.get("x-kubernetes-embedded-resource", False)
        for key, child in value.items():
            child_schema = None if embedded and key in _META_FIELDS else _child_schema(schema, key)
            if child_schema is not None:
                _prune(child, child_schema, _join(path, key), found)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            _prune_known(item, schema["items"], f"{path}[{index}]", found)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# Pruning nulls and defaulting


def _defaulted(schema: Schema, obj: Mapping[str, Any]) -> dict[str, Any]:
    instance = copy.deepcopy(dict(obj))
    _fill_defaults(schema, instance)
    return instance


def _fill_defaults(schema: Schema, value: Any) -> None:
    if isinstance(value, dict):
        for key in list(value):
            child_schema = _child_schema(schema, key)
            if child_schema is None:
                continue
            if value[key] is None and not child_schema.get("nullable", False):
                del value[key]  # the API server prunes nulls the schema does not allow
            else:
                _fill_defaults(child_schema, value[key])
        for key, child_schema in schema.get("properties", {}).items():
            if key not in value and "default" in child_schema:
                value[key] = copy.deepcopy(child_schema["default"])
                _fill_defaults(child_schema, value[key])  # a default of {} gets its own fields' defaults
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _fill_defaults(schema["items"], item)


def _child_schema(schema: Schema, key: str | int) -> Schema | None:
    """The schema of one field, map value or list item; None where the schema says nothing."""
    if isinstance(key, int):
        items: Schema | None = schema.get("items")
        return items
    properties: Mapping[str, Schema] = schema.get("properties", {})
    if key in properties:
        return properties[key]
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, Mapping) else None


# The structural schema, checked in the order and with the words of kube-openapi's validator


@dataclass
class _Errors:
    found: list[Violation] = field(default_factory=list)
    blocking: bool = False
    """Whether one error is of a type (TypeInvalid, NotSupported, Required, TooLong, TooMany) that keeps
    the CEL rules from running."""

    def add(self, where: str, message: str, *, blocking: bool = False) -> None:
        self.found.append(Violation(where, message))
        self.blocking = self.blocking or blocking


def _field(path: Path) -> str:
    """The field of a schema error: kube-openapi's dotted path, map keys included (".labels.app")."""
    return _dotted(path) or NO_FIELD


def _name(path: Path) -> str:
    """The path kube-openapi prints "in body": status is validated on its own, from its root."""
    return _dotted(path[1:]) if path[:1] == ("status",) else _dotted(path)


def _root_field(path: Path) -> str:
    """The field of an error kube-openapi reports without a path: "status" for status, else none."""
    return "status" if path[:1] == ("status",) else NO_FIELD


def _dotted(path: Path) -> str:
    rendered = ""
    for step in path:
        if isinstance(step, int):
            rendered += f"[{step}]"
        else:
            rendered += f".{step}" if rendered else step
    return rendered


def _check(schema: Schema, value: Any, path: Path, errors: _Errors) -> None:
    if value is None:
        types = [schema["type"]] if "type" in schema else []
        if types and not schema.get("nullable", False):
            _type_invalid(path, ",".join(types), "null", errors)
        _check_enum(schema, value, path, errors)
        return
    _check_type(schema, value, path, errors)
    if isinstance(value, str):
        _check_string(schema, value, path, errors)
        _check_format(schema, value, path, errors)
    if isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(schema, value, path, errors)
    if isinstance(value, list):
        _check_array(schema, value, path, errors)
    _check_enum(schema, value, path, errors)
    if isinstance(value, dict):
        _check_object(schema, value, path, errors)


def _openapi_type(value: Any) -> tuple[str, str]:
    """The JSON type and format kube-openapi infers from a decoded value."""
    if isinstance(value, bool):
        return "boolean", ""
    if isinstance(value, int):
        return "integer", "int64"
    if isinstance(value, float):
        return "number", "float64"
    if isinstance(value, str):
        return "string", ""
    return ("array", "") if isinstance(value, list) else ("object", "")


def _check_type(schema: Schema, value: Any, path: Path, errors: _Errors) -> None:
    types = [schema["type"]] if "type" in schema else []
    fmt = schema.get("format", "")
    if not types and not fmt:
        return
    actual, actual_format = _openapi_type(value)
    float_int = actual == "number" and float(value).is_integer() and "integer" in types
    int_float = actual == "integer" and "number" in types
    textual = isinstance(value, str | list)
    if not textual and fmt and not (actual in types or actual_format == fmt or float_int or int_float):
        _type_invalid(path, fmt, actual_format, errors)
    elif fmt and textual and not ("number" in types or "integer" in types):
        return  # a string format is checked by the format validator
    elif not (actual in types or float_int or int_float):
        _type_invalid(path, ",".join(types), actual, errors)


def _type_invalid(path: Path, expected: str, actual: str, errors: _Errors) -> None:
    shown = _go_quote(actual)
    message = f"Invalid value: {shown}: {_name(path)} in body must be of type {expected}: {shown}"
    errors.add(_field(path), message, blocking=True)


def _check_string(schema: Schema, value: str, path: Path, errors: _Errors) -> None:
    # One error at most: the first of maxLength, minLength and pattern that fails.
    shown, name = _go_quote(value), _name(path)
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        limit = schema["maxLength"]
        errors.add(
            _field(path),
            f"Too long: may not be more than {limit} byte{'' if limit == 1 else 's'}",
            blocking=True,
        )
    elif "minLength" in schema and len(value) < schema["minLength"]:
        message = (
            f"Invalid value: {shown}: {name} in body should be at least {schema['minLength']} chars long"
        )
        errors.add(_field(path), message)
    elif "pattern" in schema and not _regex(schema["pattern"]).search(value):
        errors.add(_field(path), f"Invalid value: {shown}: {name} in body should match '{schema['pattern']}'")


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _check_format(schema: Schema, value: str, path: Path, errors: _Errors) -> None:
    fmt = schema.get("format", "")
    check = _FORMATS.get(fmt)
    if check is not None and not check(value):
        shown = _go_quote(value)
        message = f"Invalid value: {shown}: {_name(path)} in body must be of type {fmt}: {shown}"
        errors.add(_field(path), message, blocking=True)


def _check_number(schema: Schema, value: float, path: Path, errors: _Errors) -> None:
    name = _name(path)
    if schema.get("type") == "integer" and not _fits_integer(value, schema.get("format", "")):
        fmt = schema.get("format", "")
        fmt = fmt if fmt in ("int32", "int64") else ""
        kind = f"with format {fmt}" if fmt else "(default format)"
        message = f'Invalid value: "": Checked value must be of type integer {kind} in {name}'
        errors.add(_root_field(path), message)
    for keyword, words in (("minimum", "greater than"), ("maximum", "less than")):
        if keyword not in schema:
            continue
        exclusive = schema.get(f"exclusive{keyword.capitalize()}", False)
        bound = int(schema[keyword]) if isinstance(value, int) else schema[keyword]
        beyond = value < bound if keyword == "minimum" else value > bound
        if beyond or (exclusive and value == bound):
            relation = words if exclusive else f"{words} or equal to"
            shown_bound = _go_number(bound, integer=isinstance(value, int))
            message = f"Invalid value: {_go_value(value)}: {name} in body should be {relation} {shown_bound}"
            errors.add(_field(path), message)


def _fits_integer(value: float, fmt: str) -> bool:
    bits = 32 if fmt == "int32" else 64
    if isinstance(value, float) and not value.is_integer():
        return False
    limit = 1 << (bits - 1)
    return -limit <= value < limit


def _check_array(schema: Schema, value: list[Any], path: Path, errors: _Errors) -> None:
    if isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            _check(schema["items"], item, (*path, index), errors)
    _check_count(schema, "Items", len(value), path, errors)


def _check_count(schema: Schema, of: str, count: int, path: Path, errors: _Errors) -> None:
    """minItems and maxItems of a list (`of` "Items"), minProperties and maxProperties of an object."""
    least, most = schema.get(f"min{of}"), schema.get(f"max{of}")
    if least is not None and count < least:
        noun = of.lower()
        message = f"Invalid value: {count}: {_name(path)} in body should have at least {least} {noun}"
        errors.add(_field(path), message)
    if most is not None and count > most:
        # Too many items, whether of a list or of an object (field.TooMany).
        message = f"Too many: {count}: must have at most {most} item{'' if most == 1 else 's'}"
        errors.add(_field(path), message, blocking=True)


def _check_enum(schema: Schema, value: Any, path: Path, errors: _Errors) -> None:
    allowed = schema.get("enum")
    if not allowed or any(_same_value(value, choice) for choice in allowed):
        return
    supported = ", ".join(_go_quote(c if isinstance(c, str) else _go_json(c)) for c in allowed)
    errors.add(
        _field(path), f"Unsupported value: {_go_value(value)}: supported values: {supported}", blocking=True
    )


def _same_value(value: Any, choice: Any) -> bool:
    return isinstance(value, bool) == isinstance(choice, bool) and value == choice


def _check_object(schema: Schema, value: dict[str, Any], path: Path, errors: _Errors) -> None:
    _check_count(schema, "Properties", len(value), path, errors)
    properties: Mapping[str, Schema] = schema.get("properties", {})
    additional = schema.get("additionalProperties")
    if isinstance(additional, Mapping):
        for key, child in value.items():
            if key not in properties:
                _check(additional, child, (*path, key), errors)
    for key, child in value.items():
        if key in properties:
            _check(properties[key], child, (*path, key), errors)
    for key in schema.get("required", ()):
        if key not in value:
            errors.add(_field((*path, key)), "Required value", blocking=True)


_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_TIME = re.compile(r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")
_BASE64 = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$")


def _is_date_time(value: str) -> bool:
    """kube-openapi's date-time: a full date, "T", a time with an offset (strfmt.IsDateTime)."""
    if len(value) < 4:
        return False
    parts = value.lower().split("t")
    date = _DATE.match(parts[0])
    if len(parts) < 2 or date is None:
        return False
    try:
        datetime.date(*map(int, date.groups()))  # rejects impossible dates such as February 30
    except ValueError:
        return False
    time = _TIME.match(parts[1])
    return time is not None and time[1] <= "23" and time[2] <= "59" and time[3] <= "59"


def _is_base64(value: str) -> bool:
    if not _BASE64.match(value):
        return False
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:
        return False
    return True


# The formats the CRDs use that the API server checks; others are not checked here.
_FORMATS = {"date-time": _is_date_time, "byte": _is_base64}


# Values as Go prints them in a field.Error


def _go_value(value: Any) -> str:
    """A bad value as field.Error prints it: numbers and booleans bare, strings quoted, the rest as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _go_number(value, integer=isinstance(value, int))
    if isinstance(value, str):
        return _go_quote(value)
    return _go_json(value)


def _go_quote(text: str) -> str:
    """Go's %q of a string (strconv.Quote)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


def _go_number(value: float, *, integer: bool) -> str:
    """Go's %v of an int64 or a float64: 1, 0.5, 1e-07, 1e+06."""
    if integer:
        return str(int(value))
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        return {True: "NaN", False: "+Inf" if number > 0 else "-Inf"}[number != number]
    if number == 0:
        return "-0" if str(number).startswith("-") else "0"
    sign, digits, exponent = decimal.Decimal(repr(number)).normalize().as_tuple()
    shown = "".join(map(str, digits))
    point = len(shown) + int(exponent)  # where the decimal point falls in the digits
    precision = len(shown) if 6 > len(shown) >= point else 6
    minus = "-" if sign else ""
    if point - 1 < -4 or point - 1 >= precision:
        mantissa = shown[0] + (f".{shown[1:]}" if len(shown) > 1 else "")
        return f"{minus}{mantissa}e{'-' if point - 1 < 0 else '+'}{abs(point - 1):02d}"
    if point <= 0:
        return f"{minus}0.{'0' * -point}{shown}"
    if point >= len(shown):
        return f"{minus}{shown}{'0' * (point - len(shown))}"
    return f"{minus}{shown[:point]}.{shown[point:]}"


def _go_json(value: Any) -> str:
    """Go's json.Marshal: compact, keys sorted, <, > and & escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


# x-kubernetes-list-type: the items of a set, the keys of a map, are unique


def _list_type_violations(schema: Schema, value: Any, path: Path) -> Iterator[Violation]:
    if isinstance(value, dict):
        properties: Mapping[str, Schema] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key, child in value.items():
            child_schema = properties.get(key, additional if isinstance(additional, Mapping) else None)
            if child_schema is not None:
                yield from _list_type_violations(child_schema, child, (*path, key))
    elif isinstance(value, list):
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "set":
            for index in _repeated(value):
                yield Violation(
                    _render(schema, (*path, index)), f"Duplicate value: {_go_value(value[index])}"
                )
        elif list_type == "map":
            yield from _map_list_violations(schema, value, path)
        if isinstance(schema.get("items"), Mapping):
            for index, item in enumerate(value):
                yield from _list_type_violations(schema["items"], item, (*path, index))


def _map_list_violations(schema: Schema, value: list[Any], path: Path) -> Iterator[Violation]:
    for index, item in enumerate(value):
        if item is not None and not isinstance(item, dict):
            where = _render(schema, (*path, index))
            yield Violation(
                where, f"Invalid value: {_go_value(item)}: must be an object for an array of list-type map"
            )
            return
    key_fields: list[str] = schema.get("x-kubernetes-list-map-keys", [])
    keys = [{k: item[k] for k in key_fields if k in item} for item in (i or {} for i in value)]
    for index in _repeated(keys):
        yield Violation(_render(schema, (*path, index)), f"Duplicate value: {_go_json(keys[index])}")


def _repeated(values: list[Any]) -> list[int]:
    """The index of the second occurrence of every value that occurs more than once."""
    seen: dict[tuple[str, Any], int] = {}
    repeated = []
    for index, item in enumerate(values):
        if isinstance(item, dict | list):
            identity: tuple[str, Any] = ("json", _go_json(item))
        else:
            identity = (type(item).__name__, item)
        seen[identity] = seen.get(identity, 0) + 1
        if seen[identity] == 2:
            repeated.append(index)
    return repeated


def _render(schema: Schema, path: Path) -> str:
    """A path as a field.Path prints it: fields dotted, list indexes and map keys in brackets."""
    rendered = ""
    node: Schema | None = schema
    for step in path:
        if isinstance(step, int) or (node is not None and _is_map_key(node, step)):
            rendered += f"[{step}]"
        else:
            rendered += f".{step}" if rendered else step
        node = _child_schema(node, step) if node is not None else None
    return rendered


def _is_map_key(schema: Schema, key: str) -> bool:
    return key not in schema.get("properties", {}) and isinstance(schema.get("additionalProperties"), Mapping)


# x-kubernetes-validations, evaluated with cel-python


def _rule_violations(schema: Schema, instance: Mapping[str, Any]) -> list[Violation]:
    violations: list[Violation] = []
    for node_schema, value, path in _nodes(schema, instance, ()):
        for rule in node_schema.get("x-kubernetes-validations", ()):
            violation = _check_rule(rule, value, schema, path)
            if violation is not None:
                violations.append(violation)
    return violations


def _nodes(schema: Schema, value: Any, path: Path) -> Iterator[tuple[Schema, Any, Path]]:
    """Every present, non-null value of the object with its schema and path, parents first."""
    if value is None:
        return
    yield schema, value, path
    children: Iterator[tuple[str | int, Any]]
    if isinstance(value, Mapping):
        children = iter(value.items())
    elif isinstance(value, list):
        children = enumerate(value)
    else:
        return
    for key, child in children:
        child_schema = _child_schema(schema, key)
        if child_schema is not None:
            yield from _nodes(child_schema, child, (*path, key))


def _check_rule(rule: Mapping[str, Any], value: Any, schema: Schema, path: Path) -> Violation | None:
    # Transition rules compare with the previous object: there is none when an object is created.
    if _TRANSITION_RULE.search(rule["rule"]):
        return None
    node_schema = _schema_at(schema, path)
    node_type = node_schema.get("type", "") if node_schema is not None else ""
    explained = str(rule.get("message") or "").strip()
    try:
        result = _program(rule["rule"]).evaluate({"self": json_to_cel(value)})
    except CELEvalError as error:
        # The server names the rule's own node, not its fieldPath, when a rule cannot be evaluated.
        detail = f"{error.args[0]} evaluating rule: {explained or rule['rule'].strip()}"
        return Violation(_render(schema, path), f"Invalid value: {_go_quote(node_type)}: {detail}")
    if isinstance(result, celtypes.BoolType) and bool(result):
        return None
    where = _render(schema, (*path, *_parse_field_path(rule.get("fieldPath", ""))))
    detail = explained or f"failed rule: {rule['rule'].strip()}"
    match rule.get("reason"):
        case "FieldValueForbidden":
            return Violation(where, f"Forbidden: {detail}")
        case "FieldValueRequired":
            return Violation(where, f"Required value: {detail}")
        case "FieldValueDuplicate":
            return Violation(
                where, "Duplicate value" + ("" if node_type in _COMPOUND else f": {_go_value(value)}")
            )
    # The value of an object or a list is left out of the message; a scalar's is shown.
    shown = "" if node_type in _COMPOUND else f"{_go_value(value)}: "
    return Violation(where, f"Invalid value: {shown}{detail}")


_COMPOUND = frozenset({"object", "array"})


def _schema_at(schema: Schema, path: Path) -> Schema | None:
    node: Schema | None = schema
    for step in path:
        node = _child_schema(node, step) if node is not None else None
    return node


def _parse_field_path(field_path: str) -> Path:
    """The steps of a rule's fieldPath, such as ".metadata.name" or ".steps[0]" or ".labels['a.b/c']"."""
    steps: list[str | int] = []
    for name, index, key in _FIELD_PATH_STEP.findall(field_path):
        steps.append(name or (int(index) if index else key))
    return tuple(steps)


def _is_sorted(values: celtypes.ListType) -> celtypes.BoolType:
    """Kubernetes' list library `<list>.isSorted()`: true when every element is <= the next one."""
    # The API server type-checks the rule, so the elements are of one comparable type.
    elements: list[Any] = list(values)
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(elements)))


# Kubernetes CEL library functions that the CRDs use and cel-python does not have.
_KUBERNETES_FUNCTIONS: dict[str, CELFunction] = {"isSorted": _is_sorted}
_ENVIRONMENT = celpy.Environment()


@functools.cache
def _program(rule: str) -> celpy.Runner:
    """A rule compiled once and reused for every object and every list item it applies to."""
    return _ENVIRONMENT.program(_ENVIRONMENT.compile(rule), functions=_KUBERNETES_FUNCTIONS)
