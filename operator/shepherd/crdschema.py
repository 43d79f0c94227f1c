"""Offline validation of a custom object against its CRD, the way kube-apiserver validates it.

`shepherd lint`, the local API emulator's admission and the tests all use this, so a bad Release is
rejected with the same field path and message everywhere, before anything reaches a cluster.

The steps follow the API server's: pick the schema of the object's version, drop nulls and apply
defaults, check the structural schema (types, formats, bounds, unknown fields rejected as kubectl's
strict field validation does), then evaluate the `x-kubernetes-validations` CEL rules.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import functools
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import celpy
import jsonschema
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError, CELFunction

Schema = Mapping[str, Any]
Path = tuple[str | int, ...]

# The API server stops before CEL when a value has the wrong type or an unsupported enum value: rules
# would see values their author never expected. Same wording as kube-apiserver.
_RULES_NOT_CHECKED = (
    "some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)
_BLOCKING_KEYWORDS = frozenset({"type", "enum"})

_JSON_TYPE_NAMES: Mapping[type, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
    type(None): "null",
}

# OpenAPI v3 keywords that mean the same in JSON Schema and carry over unchanged.
_SHARED_KEYWORDS = (
    "required",
    "enum",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "maxProperties",
)

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_FIELD_PATH_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]")
_TRANSITION_RULE = re.compile(r"\boldSelf\b")


@dataclass(frozen=True)
class Violation:
    """One reason an object is invalid."""

    field: str
    """Kubernetes-style path of the offending field, e.g. "spec.components[1].name"; "" for the object."""
    message: str
    """What is wrong and what is allowed."""

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def load_crd(name: str = "release") -> dict[str, Any]:
    """The CRD shipped in the package as crds/<name>.yaml, e.g. "release"."""
    text = resources.files("shepherd").joinpath("crds", f"{name}.yaml").read_text(encoding="utf-8")
    crd: dict[str, Any] = yaml.safe_load(text)
    return crd


def validate(crd: Mapping[str, Any], obj: Mapping[str, Any]) -> list[Violation]:
    """Every violation kube-apiserver would report when `obj` is created; empty when it is valid."""
    schema, violations = _schema_for(crd, obj)
    if schema is None:
        return violations
    instance = _defaulted(schema, obj)
    violations, blocked = _structural_violations(schema, instance)
    if blocked:
        return [*violations, Violation("", _RULES_NOT_CHECKED)]
    return violations + _rule_violations(schema, instance)


def apply_defaults(crd: Mapping[str, Any], obj: Mapping[str, Any]) -> dict[str, Any]:
    """`obj` as the API server stores it: non-nullable nulls dropped, schema defaults filled in.

    Returns a copy; `obj` itself is left unchanged. An object of an unknown kind or version is copied as is.
    """
    schema, _ = _schema_for(crd, obj)
    return _defaulted(schema, obj) if schema is not None else copy.deepcopy(dict(obj))


# Picking the schema


def _schema_for(crd: Mapping[str, Any], obj: Mapping[str, Any]) -> tuple[Schema | None, list[Violation]]:
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served", True)}
    api_version = obj.get("apiVersion")
    obj_group, _, version = str(api_version).rpartition("/")
    if obj_group != group or version not in served:
        allowed = ", ".join(f'"{group}/{name}"' for name in served)
        message = f"Unsupported value: {_show(api_version)}: supported values: {allowed}"
        return None, [Violation("apiVersion", message)]
    if obj.get("kind") != kind:
        message = f'Unsupported value: {_show(obj.get("kind"))}: supported values: "{kind}"'
        return None, [Violation("kind", message)]
    schema: Schema = served[version]["schema"]["openAPIV3Schema"]
    return schema, []


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


# The structural schema, checked by jsonschema


def _structural_violations(schema: Schema, instance: Mapping[str, Any]) -> tuple[list[Violation], bool]:
    """The violations of the OpenAPI schema, and whether one of them keeps CEL rules from running."""
    validator = jsonschema.Draft202012Validator(_root_json_schema(schema), format_checker=_FORMAT_CHECKER)
    violations: list[Violation] = []
    blocked = False
    for error in validator.iter_errors(instance):
        violations.extend(_violations_of(error, schema))
        blocked = blocked or error.validator in _BLOCKING_KEYWORDS
    return list(dict.fromkeys(violations)), blocked


def _root_json_schema(schema: Schema) -> dict[str, Any]:
    root = _json_schema(schema)
    properties = root.setdefault("properties", {})
    for implicit in ("apiVersion", "kind"):
        properties.setdefault(implicit, {"type": "string"})
    # metadata is an ObjectMeta that the API server validates itself; a CRD may only constrain its
    # name and generateName, so its other fields are not unknown.
    metadata = dict(properties.get("metadata", {"type": "object"}))
    metadata.pop("additionalProperties", None)
    properties["metadata"] = metadata
    return root


def _json_schema(node: Schema) -> dict[str, Any]:
    """The JSON Schema (2020-12) equivalent of one node of a CRD's OpenAPI v3 schema."""
    out = {keyword: node[keyword] for keyword in _SHARED_KEYWORDS if keyword in node}
    nullable = node.get("nullable", False)
    if "type" in node:
        out["type"] = [node["type"], "null"] if nullable else node["type"]
    if nullable and "enum" in node:
        out["enum"] = [*node["enum"], None]
    if "properties" in node:
        out["properties"] = {name: _json_schema(child) for name, child in node["properties"].items()}
    if "items" in node:
        out["items"] = _json_schema(node["items"])
    additional = node.get("additionalProperties")
    if isinstance(additional, Mapping):
        out["additionalProperties"] = _json_schema(additional)
    elif node.get("type") == "object" and not node.get("x-kubernetes-preserve-unknown-fields", False):
        out["additionalProperties"] = False  # strict field validation: whatever is not declared is unknown
    return out


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True  # a wrong type is reported by "type", not twice
    if not _RFC3339.match(value):
        return False
    try:
        datetime.datetime.fromisoformat(value[:19])  # rejects impossible dates such as February 30
    except ValueError:
        return False
    return True


def _is_base64(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:
        return False
    return True


# The API server checks date-time and byte; without a checker registered jsonschema would accept any string.
_FORMAT_CHECKER = jsonschema.FormatChecker(formats=())
_FORMAT_CHECKER.checks("date-time")(_is_rfc3339)
_FORMAT_CHECKER.checks("byte")(_is_base64)


def _violations_of(error: jsonschema.ValidationError, schema: Schema) -> Iterator[Violation]:
    path: Path = tuple(error.absolute_path)
    instance, expected = error.instance, error.validator_value
    if error.validator == "additionalProperties":  # only ever False here: map values have a schema
        declared = error.schema.get("properties", {})
        for key in instance:
            if key not in declared:
                field = _render(schema, (*path, key))
                yield Violation(field, f'unknown field "{field}"')
    elif error.validator == "required":
        for key in expected:
            if key not in instance:
                yield Violation(_render(schema, (*path, key)), "Required value")
    else:
        yield Violation(_render(schema, path), _describe(str(error.validator), instance, expected))


def _describe(keyword: str, value: Any, expected: Any) -> str:
    """Kubernetes-style message for a failed JSON Schema keyword: the value, then what is allowed."""
    shown = _show(value)
    match keyword:
        case "type":
            allowed = expected if isinstance(expected, str) else " or ".join(expected)
            return f"Invalid value: {shown}: must be of type {allowed}, not {_json_type(value)}"
        case "enum":
            return f"Unsupported value: {shown}: supported values: {', '.join(_show(v) for v in expected)}"
        case "pattern":
            return f"Invalid value: {shown}: must match the regular expression '{expected}'"
        case "format" if expected == "byte":
            return f"Invalid value: {shown}: must be base64-encoded bytes (format byte)"
        case "format":
            return f"Invalid value: {shown}: must be an RFC 3339 {expected}, e.g. 2024-05-01T12:00:00Z"
        case "minimum":
            return f"Invalid value: {shown}: must be greater than or equal to {expected}"
        case "maximum":
            return f"Invalid value: {shown}: must be less than or equal to {expected}"
        case "minItems":
            return f"Invalid value: {len(value)} items: must have at least {expected} items"
        case "maxItems" | "maxProperties":
            return f"Too many: {len(value)}: must have at most {expected} items"
        case "minLength":
            return f"Invalid value: {shown}: must be at least {expected} characters long"
        case "maxLength":
            return f"Too long: {len(value)} characters: must be at most {expected} characters long"
    return f"Invalid value: {shown}: fails {keyword} {_show(expected)}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, Mapping | Sequence):
        return _json_type(value)
    return str(value)


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _render(schema: Schema, path: Path) -> str:
    """A path as Kubernetes prints it: fields dotted, list indexes and map keys in brackets."""
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
    message = rule.get("message") or f"failed rule: {rule['rule']}"
    where = _render(schema, (*path, *_parse_field_path(rule.get("fieldPath", ""))))
    try:
        result = _program(rule["rule"]).evaluate({"self": json_to_cel(value)})
    except CELEvalError as error:
        return Violation(where, f"{message} (the rule could not be evaluated: {error.args[0]})")
    passed = isinstance(result, celtypes.BoolType) and bool(result)
    return None if passed else Violation(where, message)


def _parse_field_path(field_path: str) -> Path:
    """The steps of a rule's fieldPath, such as ".metadata.name" or ".steps[0]" or ".labels['a.b/c']"."""
    steps: list[str | int] = []
    for field, index, key in _FIELD_PATH_STEP.findall(field_path):
        steps.append(field or (int(index) if index else key))
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
