"""The local Kubernetes API that the integration tests and `shepherd demo` run against.

kmock's KubernetesEmulator keeps objects in memory and serves them over HTTP, but kmock 0.8 lacks several
behaviours of kube-apiserver that Kopf, the official client and kubectl depend on. `LocalKubernetes` keeps
kmock's object store, HTTP plumbing, error rendering and discovery, and replaces its write and read paths
for resource URLs. Every gap it fills is marked with a comment starting "Gap:" that says what a real API
server does.

Run it with `serve()` inside an event loop, or with `LocalAPIThread` from synchronous code (tests, kubectl).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import copy
import dataclasses
import datetime
import json
import os
import pathlib
import random
import re
import ssl
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
import trustme
import yaml

Json = dict[str, Any]
ObjectKey = tuple[kmock.resource, str | None, str]
T = TypeVar("T")


class FieldViolation(Protocol):
    """Anything with the offending field path and a message, e.g. `shepherd.crdschema.Violation`."""

    @property
    def field(self) -> str: ...

    @property
    def message(self) -> str: ...


Violation = tuple[str, str] | FieldViolation
CustomObjectValidator = Callable[[Mapping[str, Any], Mapping[str, Any]], Iterable[Violation]]

CONTEXT_NAME = "shepherd-local"
# The user of the default context, and of requests without a token, as kind names its cluster admin.
ADMIN_USER = "kubernetes-admin"
ADMIN_TOKEN = "shepherd-local-token"
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NAMESPACES = kmock.resource("", "v1", "namespaces")
SECRETS = kmock.resource("", "v1", "secrets")
SELF_SUBJECT_REVIEWS = kmock.resource("authentication.k8s.io", "v1", "selfsubjectreviews")
# What `immutable: true` freezes, besides that field itself.
IMMUTABLE_FIELDS = {
    kmock.resource("", "v1", "configmaps"): ("data", "binaryData"),
    SECRETS: ("data",),
}
# What a client cannot change in an update: the identity, the versions and the deletion mark.
SERVER_OWNED_METADATA = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "resourceVersion",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
# The patchMergeKey of the lists in the built-in kinds served here (struct tags of k8s.io/api): a strategic
# merge patch merges their items by it. Ports are containerPort in a pod template and port in a Service.
MERGE_KEYS = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "hostAliases": ("ip",),
    "ports": ("containerPort", "port"),
    "ownerReferences": ("uid",),
    "conditions": ("type",),
}
AGE_COLUMN: Json = {
    "name": "Age",
    "type": "date",
    "jsonPath": ".metadata.creationTimestamp",
    "description": "Time since the object was created.",
}
# kube-apiserver's error types, as they start a field error's message, and the cause reason of each.
FIELD_ERROR_REASONS = {
    "Invalid value": "FieldValueInvalid",
    "Required value": "FieldValueRequired",
    "Unsupported value": "FieldValueNotSupported",
    "Duplicate value": "FieldValueDuplicate",
    "Too many": "FieldValueTooMany",
    "Too long": "FieldValueTooLong",
    "Forbidden": "FieldValueForbidden",
    "Not found": "FieldValueNotFound",
}


@dataclasses.dataclass(frozen=True)
class BuiltinResource:
    api_version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False


BUILTIN_RESOURCES = (
    BuiltinResource("v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",)),
    BuiltinResource("v1", "configmaps", "ConfigMap", short_names=("cm",)),
    BuiltinResource("v1", "secrets", "Secret"),
    BuiltinResource("v1", "services", "Service", short_names=("svc",), categories=("all",)),
    BuiltinResource("v1", "pods", "Pod", short_names=("po",), categories=("all",)),
    BuiltinResource("v1", "events", "Event", short_names=("ev",)),
    BuiltinResource("v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    BuiltinResource(
        "apps/v1",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        categories=("all",),
        status_subresource=True,
    ),
    BuiltinResource("apps/v1", "controllerrevisions", "ControllerRevision"),
    BuiltinResource(
        "apps/v1",
        "statefulsets",
        "StatefulSet",
        short_names=("sts",),
        categories=("all",),
        status_subresource=True,
    ),
    BuiltinResource("batch/v1", "jobs", "Job", categories=("all",), status_subresource=True),
    BuiltinResource("coordination.k8s.io/v1", "leases", "Lease"),
    BuiltinResource("events.k8s.io/v1", "events", "Event", short_names=("ev",)),
    BuiltinResource(
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        status_subresource=True,
    ),
)


@dataclasses.dataclass(frozen=True)
class Target:
    """What a resource URL addresses: a collection, or one object and maybe a subresource of it."""

    resource: kmock.resource
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclasses.dataclass(frozen=True)
class Change:
    """One committed write, as the watch streams and the replay log see it."""

    revision: int
    resource: kmock.resource
    type: str
    object: Json
    old: Json | None

    def event_for(self, selects: Callable[[Json], bool]) -> Json | None:
        # Gap: a filtered watch reports an object entering its selection as ADDED and leaving it as DELETED.
        now, before = selects(self.object), self.old is not None and selects(self.old)
        if self.type == "MODIFIED" and now != before:
            return {"type": "ADDED" if now else "DELETED", "object": self.object}
        return {"type": self.type, "object": self.object} if now else None


def parse_target(path: str) -> Target | None:
    """The resource target of a URL path, or None for discovery and other non-resource paths."""
    parts = [part for part in path.split("/") if part]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    # As kube-apiserver does: "namespaces/NAME/status" is the namespace's own subresource, not a collection.
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    name = rest[1] if len(rest) > 1 else None
    return Target(kmock.resource(group, version, rest[0]), namespace, name, "/".join(rest[2:]) or None)


def api_version(resource: kmock.Selectable) -> str:
    return f"{resource.group}/{resource.version}" if resource.group else f"{resource.version}"


def openapi_path(resource: kmock.Selectable) -> str:
    return f"apis/{resource.group}/{resource.version}" if resource.group else f"api/{resource.version}"


def group_resource(resource: kmock.resource) -> str:
    return f"{resource.plural}.{resource.group}" if resource.group else f"{resource.plural}"


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def illegal_base64_position(value: str) -> int | None:
    """Where Go's standard base64 decoder gives up on value, or None when it decodes."""
    try:
        base64.b64decode(value, validate=True)
    except ValueError:
        for index, char in enumerate(value):
            if not (char.isascii() and (char.isalnum() or char in "+/=")):
                return index
        return len(value) - len(value) % 4
    return None


def api_error(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details or None)


def not_found(resource: kmock.resource, name: str) -> kmock.KubernetesError:
    message = f'{group_resource(resource)} "{name}" not found'
    return api_error(404, "NotFound", message, name=name, group=resource.group, kind=resource.plural)


def bad_request(message: str) -> kmock.KubernetesError:
    return api_error(400, "BadRequest", message)


def status_body(code: int, reason: str | None, message: str | None, details: Any) -> Json:
    body: Json = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": code}
    body |= {"reason": reason, "message": message} | ({"details": details} if details else {})
    return body


def json_object(body: bytes, content_type: str) -> Json:
    # kubectl's generator commands (`kubectl create configmap ...`) send protobuf, which only a real server
    # decodes; the 415 says so instead of a confusing JSON error. `kubectl apply/create -f` send JSON.
    if content_type.split(";")[0].strip().lower() not in ("", "application/json"):
        raise api_error(
            415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
        )
    try:
        obj = json.loads(body)
    except ValueError as error:
        raise bad_request(f"the body is not valid JSON: {error}") from error
    if not isinstance(obj, dict):
        raise bad_request("the body must be a JSON object")
    return obj


# Patches: JSON merge patch (Kopf, kubectl and the client for custom resources), strategic merge patch
# (kubectl and the client for built-in kinds), JSON patch (Kopf, with "test" ops).


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def without_directives(patch: Any) -> Any:
    if isinstance(patch, dict):
        return {key: without_directives(value) for key, value in patch.items() if not key.startswith("$")}
    if isinstance(patch, list):
        return [without_directives(item) for item in patch]
    return patch


def strategic_merge(target: Any, patch: Any) -> Any:
    """A strategic-merge patch applied: a JSON merge patch whose known lists merge item by item."""
    if not isinstance(patch, dict) or patch.get("$patch") == "replace":
        return without_directives(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list) and key in MERGE_KEYS:
            result[key] = merged_list(result[key], value, MERGE_KEYS[key])
        elif not key.startswith("$"):  # "$setElementOrder/..." and the like only reorder; order is kept
            result[key] = strategic_merge(result.get(key), value)
    return result


def merged_list(current: list[Any], patch: list[Any], candidate_keys: tuple[str, ...]) -> list[Any]:
    key = next(
        (k for k in candidate_keys if all(isinstance(item, dict) and k in item for item in patch)), None
    )
    if key is None:
        return [without_directives(item) for item in patch]
    merged = list(current)
    for item in patch:
        index = next(
            (i for i, old in enumerate(merged) if isinstance(old, dict) and old.get(key) == item[key]), None
        )
        if item.get("$patch") == "delete":
            merged = merged if index is None else merged[:index] + merged[index + 1 :]
        elif index is None:
            merged.append(without_directives(item))
        else:
            merged[index] = strategic_merge(merged[index], item)
    return merged


def patched(obj: Json, content_type: str, body: bytes, *, custom: bool) -> Json:
    media_type = content_type.split(";")[0].strip().lower()
    try:
        patch = json.loads(body)
    except ValueError as error:
        raise bad_request(f"the patch is not valid JSON: {error}") from error
    if media_type == "application/json-patch+json":
        if not isinstance(patch, list):
            raise bad_request("a JSON patch must be a list of operations")
        try:
            patched_object: Json = jsonpatch.apply_patch(obj, patch)
        except jsonpatch.InvalidJsonPatch as error:
            raise bad_request(str(error)) from error
        except jsonpatch.JsonPatchTestFailed as error:
            # kube-apiserver's words (evanphx/json-patch): "testing value <path> failed: test failed".
            raise api_error(422, "Invalid", f"testing value failed: test failed ({error})") from error
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
            # Gap: a failed "test" op (or a missing path) is 422 Invalid in kube-apiserver, not 500.
            raise api_error(422, "Invalid", str(error)) from error
        return patched_object
    strategic = media_type == "application/strategic-merge-patch+json" and not custom
    if media_type == "application/merge-patch+json" or strategic:
        if not isinstance(patch, dict):
            raise bad_request("a merge patch must be a JSON object")
        # Gap: kmock merges dicts its own way (a dict never replaces a scalar, lists never merge). Here a
        # merge patch is RFC 7386, and a strategic merge patch of a built-in merges its lists by key.
        result: Json = strategic_merge(obj, patch) if strategic else merge_patch(obj, patch)
        return result
    # As in kube-apiserver: custom resources take no strategic merge patch (nor server-side apply here).
    raise api_error(
        415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {media_type}"
    )


# Label and field selectors.


def split_requirements(selector: str) -> list[str]:
    return [part.strip() for part in re.split(r",(?![^()]*\))", selector) if part.strip()]


_LABEL_REQUIREMENT = re.compile(
    r"""^(?:
        !\s*(?P<absent>[\w./-]+)
      | (?P<key>[\w./-]+)\s*(?:
            (?P<op>==|=|!=)\s*(?P<value>[\w.-]*)
          | \s(?P<set_op>in|notin)\s*\((?P<values>[^)]*)\)
        )?
    )$""",
    re.VERBOSE,
)


def label_requirement(text: str) -> Callable[[Mapping[str, str]], bool]:
    match = _LABEL_REQUIREMENT.match(text)
    if match is None:
        raise bad_request(f"unable to parse requirement: {text!r}")
    key = match["key"] or match["absent"]
    if match["absent"]:
        return lambda labels: key not in labels
    if match["op"]:
        value, negated = match["value"], match["op"] == "!="
        return lambda labels: (labels.get(key) == value) != negated
    if match["set_op"]:
        values, negated = {v.strip() for v in match["values"].split(",")}, match["set_op"] == "notin"
        return lambda labels: (key in labels and labels[key] in values) != negated
    return lambda labels: key in labels


def field_requirement(text: str) -> Callable[[Json], bool]:
    match = re.fullmatch(r"(?P<path>[\w.]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*)", text)
    if match is None:
        raise bad_request(f"invalid field selector: {text!r}")
    path, value, negated = match["path"].split("."), match["value"], match["op"] == "!="

    def requirement(obj: Json) -> bool:
        found: Any = obj
        for step in path:
            found = found.get(step) if isinstance(found, dict) else None
        return (found is not None and str(found) == value) != negated

    return requirement


def object_filter(target: Target, params: Mapping[str, str]) -> Callable[[Json], bool]:
    """Which objects a list or watch request selects: its namespace, name, label and field selectors."""
    # Gap: kmock ignores labelSelector and fieldSelector; `kubectl wait` relies on metadata.name=NAME.
    labels = [label_requirement(part) for part in split_requirements(params.get("labelSelector", ""))]
    fields = [field_requirement(part) for part in split_requirements(params.get("fieldSelector", ""))]

    def selects(obj: Json) -> bool:
        meta = obj.get("metadata") or {}
        return (
            target.namespace in (None, meta.get("namespace"))
            and target.name in (None, meta.get("name"))
            and all(requirement(meta.get("labels") or {}) for requirement in labels)
            and all(requirement(obj) for requirement in fields)
        )

    return selects


# Field paths of admission errors, and their values as kube-apiserver prints them.


def value_at(obj: Any, field_path: str) -> Any:
    for name, index, key in re.findall(r"([^.\[\]]+)|\[(\d+)\]|\[([^\]]+)\]", field_path):
        if index and isinstance(obj, list):
            obj = obj[int(index)] if int(index) < len(obj) else None
        else:
            obj = obj.get(name or key) if isinstance(obj, dict) else None
    return obj


def go_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, dict | list):
        return '"object"' if isinstance(value, dict) else '"array"'
    return json.dumps(value) if isinstance(value, str) else str(value)


def status_cause(obj: Json, violation: Violation) -> Json:
    field, message = violation if isinstance(violation, tuple) else (violation.field, violation.message)
    reason = next((r for prefix, r in FIELD_ERROR_REASONS.items() if message.startswith(prefix)), None)
    if reason is None:
        reason, message = "FieldValueInvalid", f"Invalid value: {go_value(value_at(obj, field))}: {message}"
    return {"reason": reason, "field": field, "message": message}


def violation_field(violation: Violation) -> str:
    return violation[0] if isinstance(violation, tuple) else violation.field


def violation_message(violation: Violation) -> str:
    return violation[1] if isinstance(violation, tuple) else violation.message


def drop_path(obj: Json, path: str) -> None:
    """Remove the field at a path such as "spec.steps[0].colour" (no-op when it is not there)."""
    steps: list[str | int] = [
        int(index) if index else name for index, name in re.findall(r"\[(\d+)\]|([^.\[\]]+)", path)
    ]
    node: Any = obj
    for step in steps[:-1]:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict):
        node.pop(steps[-1], None)


def invalid(kind: str, group: str, obj: Json, violations: list[Violation]) -> kmock.KubernetesError:
    causes = [status_cause(obj, violation) for violation in violations]
    errors = [
        f"{cause['field']}: {cause['message']}" if cause["field"] else cause["message"] for cause in causes
    ]
    summary = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
    name = obj["metadata"]["name"]
    qualified = f"{kind}.{group}" if group else kind  # the core group has no name
    message = f'{qualified} "{name}" is invalid: {summary}'
    return api_error(422, "Invalid", message, name=name, group=group, kind=kind, causes=causes)


# Server-side printing: the Table that `kubectl get` asks for.

_JSONPATH_STEP = re.compile(
    r"""\.(?P<field>[^.\[\]]+)
      | \[(?P<index>-?\d+)\]
      | (?P<all>\[\*\])
      | \['(?P<key>[^']*)'\]
      | \[\?\(@(?P<test>(?:\.[\w-]+)+)\s*(?P<op>==|!=)\s*(?P<literal>"[^"]*"|'[^']*'|[^)\s]+)\s*\)\]""",
    re.VERBOSE,
)


def jsonpath(value: Any, path: str) -> list[Any]:
    """The values a simple JSONPath (fields, indexes, [*], [?(@.a=="b")]) finds, as kubectl evaluates it."""
    path, found, position = path.strip().removeprefix("{").removesuffix("}"), [value], 0
    while position < len(path):
        step = _JSONPATH_STEP.match(path, position)
        if step is None:
            raise ValueError(f"unsupported JSONPath: {path!r}")
        found, position = [child for parent in found for child in jsonpath_step(parent, step)], step.end()
    return found


def jsonpath_step(value: Any, step: re.Match[str]) -> Iterator[Any]:
    if step["field"] is not None or step["key"] is not None:
        key = step["field"] if step["field"] is not None else step["key"]
        if isinstance(value, dict) and key in value:
            yield value[key]
    elif step["index"] is not None:
        if isinstance(value, list) and -len(value) <= int(step["index"]) < len(value):
            yield value[int(step["index"])]
    elif step["all"] is not None:
        yield from value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    elif isinstance(value, list):
        expected = yaml.safe_load(step["literal"])
        for item in value:
            equal = jsonpath(item, step["test"])[:1] == [expected]
            if equal == (step["op"] == "=="):
                yield item


def human_age(timestamp: str) -> str:
    """The age of an RFC 3339 timestamp as kubectl prints it (k8s.io/apimachinery duration.HumanDuration)."""
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    seconds = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < -1:
        return "<invalid>"
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d" if days < 730 else f"{days // 365}y"


def table_cell(column: Mapping[str, Any], obj: Json) -> Any:
    found = jsonpath(obj, column["jsonPath"])[:1]
    value = found[0] if found else None
    match column.get("type"), value:
        case _, None:
            return None
        case "date", str():
            return human_age(value)
        case "integer", int() | float() if not isinstance(value, bool):
            return int(value)
        case "number", int() | float() if not isinstance(value, bool):
            return float(value)
        case "boolean", bool():
            return value
        case "string", str():
            return value
        case "string", _:
            return json.dumps(value, separators=(",", ":"))
    return None


def table(
    columns: list[Json], objects: list[Json], resource_version: str, include: str, headers: bool = True
) -> Json:
    """A meta.k8s.io/v1 Table of the objects; without headers, as the events after a watch's first one."""
    definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    definitions += [
        {
            "name": column["name"],
            "type": column.get("type", "string"),
            "format": column.get("format", ""),
            "description": column.get("description", column["jsonPath"]),
            "priority": column.get("priority", 0),
        }
        for column in columns
    ]
    rows = [
        {"cells": [obj["metadata"]["name"], *(table_cell(c, obj) for c in columns)]}
        | ({"object": row_object(obj, include)} if include != "None" else {})
        for obj in objects
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions if headers else [],
        "rows": rows,
    }


def row_object(obj: Json, include: str) -> Json:
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def wants_table(accept: str) -> bool:
    return any("as=Table" in media_range for media_range in accept.split(","))


# CustomResourceDefinitions: what they serve, and the status their controller reports.


def crd_resources(crd: Json) -> Iterator[tuple[kmock.resource, kmock.ResourceInfo]]:
    spec, names = crd["spec"], crd["spec"]["names"]
    for version in spec.get("versions", []):
        if version.get("served", True):
            info = kmock.ResourceInfo(
                kind=names["kind"],
                singular=names.get("singular", names["kind"].lower()),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                shortnames=names.get("shortNames", []),
                categories=names.get("categories", []),
                verbs=VERBS,
                subresources={"status"} if "status" in (version.get("subresources") or {}) else set(),
            )
            yield kmock.resource(spec["group"], version["name"], names["plural"]), info


def crd_status(crd: Json, old: Json | None) -> Json:
    names = crd["spec"]["names"]
    kind = names["kind"]
    accepted = {"singular": kind.lower(), "listKind": f"{kind}List"} | names
    timestamp = now_rfc3339()
    conditions = ((old or {}).get("status") or {}).get("conditions") or [
        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"},
        {
            "type": "Established",
            "status": "True",
            "reason": "InitialNamesAccepted",
            "message": "the initial names have been accepted",
        },
    ]
    return {
        "acceptedNames": accepted,
        "conditions": [{"lastTransitionTime": timestamp} | condition for condition in conditions],
        "storedVersions": [v["name"] for v in crd["spec"].get("versions", []) if v.get("storage")],
    }


def generated_name(prefix: str) -> str:
    return prefix + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))


@attrs.define(kw_only=True)
class LocalKubernetes(kmock.KubernetesEmulator):
    """kmock's KubernetesEmulator with the kube-apiserver behaviours that Kopf and kubectl rely on.

    `validate_custom_object(crd, obj)` is the schema admission of custom resources: it returns the
    violations (field path and message) of `obj` against its CRD; any violation rejects the write with 422.
    `users` maps bearer tokens to user names, for SelfSubjectReview (`kubectl auth whoami`).
    """

    validate_custom_object: CustomObjectValidator | None = None
    retained_changes: int = 1_000
    users: Mapping[str, str] = attrs.field(factory=dict)
    _revision: int = attrs.field(default=0, init=False)
    _changes: collections.deque[Change] = attrs.field(init=False)
    _watchers: set[asyncio.Queue[Change | None]] = attrs.field(factory=set, init=False)
    _crd_names: dict[kmock.resource, str] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._changes = collections.deque(maxlen=self.retained_changes)
        # Gap: discovery knows only what kmock was told; a real server serves the built-in resources.
        for builtin in BUILTIN_RESOURCES:
            group, _, version = builtin.api_version.rpartition("/")
            self._resources[kmock.resource(group, version, builtin.plural)] = kmock.ResourceInfo(
                kind=builtin.kind,
                singular=builtin.kind.lower(),
                namespaced=builtin.namespaced,
                shortnames=builtin.short_names,
                categories=builtin.categories,
                verbs=VERBS,
                subresources={"status"} if builtin.status_subresource else set(),
            )
        self._create(Target(NAMESPACES, None, None, None), {"metadata": {"name": "default"}}, strict=True)
        self.fallback["get /openapi/v3"] << self._serve_openapi_paths
        self.fallback[re.compile(r"/openapi/v3/apis?/.+")] << self._serve_openapi_group_version

    @property
    def open_watches(self) -> int:
        """How many watch streams are open now (so a test can tell that a client has started watching)."""
        return len(self._watchers)

    def close_watches(self) -> None:
        """End every open watch stream, so that the HTTP server can shut down at once."""
        for queue in self._watchers:
            queue.put_nowait(None)

    # Discovery: kmock's, limited to the registered resources, with the core group's version fixed.

    def _get_resources(self) -> list[kmock.resource]:
        # Gap: kmock also advertises any resource that ever had an object; an unregistered one is a 404.
        return self._registered()

    def _registered(self) -> list[kmock.resource]:
        return [kmock.resource(key) for key in self._resources]

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        parts = [part for part in request.url.path.split("/") if part]
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        served = [r for r in self._registered() if (r.group, r.version) == (group, version)]
        if not served:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": api_version(served[0]),
            "resources": [entry for resource in served for entry in self._discovery_entries(resource)],
        }

    def _discovery_entries(self, resource: kmock.resource) -> Iterator[Json]:
        info = self._resources[resource]
        yield {
            "name": resource.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": sorted(info.verbs),
            "shortNames": sorted(info.shortnames),
            "categories": sorted(info.categories),
        }
        for subresource in sorted(info.subresources):
            yield {
                "name": f"{resource.plural}/{subresource}",
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": ["get", "patch", "update"],
            }

    # Gap: no OpenAPI in kmock. `kubectl apply` reads OpenAPI v3 to learn that the server validates fields
    # itself (the fieldValidation parameter); without it, it fails "failed to download openapi". This
    # minimal document declares every resource's PATCH with that parameter, and no schemas.

    async def _serve_openapi_paths(self) -> kmock.Payload:
        group_versions = {openapi_path(resource) for resource in self._registered()}
        return {
            "paths": {path: {"serverRelativeURL": f"/openapi/v3/{path}"} for path in sorted(group_versions)}
        }

    async def _serve_openapi_group_version(self, request: kmock.Request) -> kmock.Payload:
        path = request.url.path.removeprefix("/openapi/v3/")
        served = [resource for resource in self._registered() if openapi_path(resource) == path]
        if not served:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        patches = {
            f"/{path}/{resource.plural}/{{name}}": self._openapi_patch(resource) for resource in served
        }
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.37.0"}, "paths": patches}

    def _openapi_patch(self, resource: kmock.resource) -> Json:
        gvk = {"group": resource.group, "version": resource.version, "kind": self._resources[resource].kind}
        parameter = {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
        return {"patch": {"x-kubernetes-group-version-kind": gvk, "parameters": [parameter]}}

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kmock.KubernetesError):
            body = status_body(exc.status, exc.reason, exc.message, exc.details)
            return aiohttp.web.json_response(body, status=exc.status)
        return await super()._render_error(exc)

    # Resource requests.

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        target = parse_target(raw_request.path)
        if target is None:
            return await super().__call__(raw_request)
        # Gap: kmock's URL parser fails on collections under ".../namespaces" (500), and kmock serves
        # writes its own simplified way (no PUT, whole-object /status patches, no versions). Resource
        # requests are served here instead; discovery and everything else stays kmock's.
        self._requests.append(await recorded(raw_request, target, len(self._requests)))
        try:
            return await self._serve_resource(raw_request, target)
        except kmock.KubernetesError as error:
            return await self._render_error(error)

    async def _serve_resource(
        self, request: aiohttp.web.BaseRequest, target: Target
    ) -> aiohttp.web.StreamResponse:
        if target.resource == SELF_SUBJECT_REVIEWS and target.name is None and request.method == "POST":
            return aiohttp.web.json_response(self._self_subject_review(request.headers), status=201)
        if target.resource not in self._resources or (
            target.namespace is not None and not self._resources[target.resource].namespaced
        ):
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        if request.method == "GET" and request.query.get("watch") in ("true", "1"):
            return await self._serve_watch_stream(request, target)
        code, body = self._serve_request(
            request.method, target, request.query, request.headers, await request.read()
        )
        if request.method == "GET" and wants_table(request.headers.get("Accept", "")):
            body = self._table(target.resource, body, request.query.get("includeObject", "Metadata"))
        return aiohttp.web.json_response(body, status=code)

    def _serve_request(
        self, method: str, target: Target, params: Mapping[str, str], headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Json]:
        # Gap: field validation. Strict (kubectl's default) refuses unknown fields, else they are dropped.
        strict = params.get("fieldValidation") == "Strict"
        match method, target.name:
            case "GET", None:
                return 200, self._list(target, params)
            case "GET", _:
                return 200, self._existing(target)[1]
            case "POST", None:
                return 201, self._create(target, json_object(body, headers.get("Content-Type", "")), strict)
            case "PUT", str():
                return 200, self._replace(target, json_object(body, headers.get("Content-Type", "")), strict)
            case "PATCH", str():
                return 200, self._patch(target, headers.get("Content-Type", ""), body, strict)
            case "DELETE", str():
                return 200, self._delete(*self._existing(target))
        raise api_error(405, "MethodNotAllowed", f"{method} is not supported here")

    def _self_subject_review(self, headers: Mapping[str, str]) -> Json:
        # Gap: kmock authenticates nobody and has no authentication.k8s.io. Here a bearer token names its
        # user (`users`, plus the default kubeconfig's admin token), no token is the admin (as kind's client
        # certificate is), and an unknown token is 401. Only this review authenticates: other requests
        # are served to anyone, as before. The request body is not read: kubectl may send it as protobuf.
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        users = {ADMIN_TOKEN: ADMIN_USER} | dict(self.users)
        if not token:
            username = ADMIN_USER
        elif scheme.lower() == "bearer" and token in users:
            username = users[token]
        else:
            raise api_error(401, "Unauthorized", "Unauthorized")
        return {
            "kind": "SelfSubjectReview",
            "apiVersion": api_version(SELF_SUBJECT_REVIEWS),
            "metadata": {"creationTimestamp": now_rfc3339()},
            "status": {"userInfo": {"username": username, "groups": ["system:authenticated"]}},
        }

    # Reads.

    def _live(self, key: ObjectKey) -> Json | None:
        if key not in self._objects or self._objects[key].deleted:
            return None
        return copy.deepcopy(self._objects[key].raw)

    def _existing(self, target: Target) -> tuple[ObjectKey, Json]:
        assert target.name is not None
        key = (target.resource, target.namespace, target.name)
        obj = self._live(key)
        if obj is None:
            raise not_found(target.resource, target.name)
        if target.subresource not in (None, "status") or (
            target.subresource == "status" and "status" not in self._resources[target.resource].subresources
        ):
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        return key, obj

    def _selected(self, target: Target, selects: Callable[[Json], bool]) -> list[Json]:
        objects = [
            copy.deepcopy(obj.raw)
            for (resource, _, _), obj in self._objects.items()
            if resource == target.resource and not obj.deleted and selects(obj.raw)
        ]
        return sorted(objects, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))

    def _list(self, target: Target, params: Mapping[str, str]) -> Json:
        info = self._resources[target.resource]
        # Gap: kmock's lists have no kind, apiVersion or resourceVersion; clients resume watches from it.
        return {
            "kind": f"{info.kind}List",
            "apiVersion": api_version(target.resource),
            "metadata": {"resourceVersion": str(self._revision)},
            "items": self._selected(target, object_filter(target, params)),
        }

    def _table(self, resource: kmock.resource, body: Json, include: str) -> Json:
        # Gap: `kubectl get` asks for a server-side Table; kmock has none. Custom resources get their
        # CRD version's additionalPrinterColumns (date columns as ages, as kube-apiserver renders them).
        objects = body.get("items", [body])
        return table(self._printer_columns(resource), objects, body["metadata"]["resourceVersion"], include)

    def _printer_columns(self, resource: kmock.resource) -> list[Json]:
        crd = self._live((CRDS, None, self._crd_names[resource])) if resource in self._crd_names else None
        versions: list[Json] = (crd or {}).get("spec", {}).get("versions", [])
        version = next((v for v in versions if v["name"] == resource.version), {})
        columns: list[Json] = version.get("additionalPrinterColumns") or [AGE_COLUMN]
        return columns

    # Writes: every one goes through _commit, which versions it, stores it and tells the watchers.

    def _create(self, target: Target, body: Json, strict: bool) -> Json:
        info = self._resources[target.resource]
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        namespace = self._namespace_of_new(target, info.namespaced, meta)
        name = meta.get("name") or (meta.get("generateName") and generated_name(meta["generateName"]))
        if not name:
            kind = f"{info.kind}.{target.resource.group}" if target.resource.group else f"{info.kind}"
            error = "metadata.name: Required value: name or generateName is required"
            raise api_error(422, "Invalid", f'{kind} "" is invalid: {error}')
        key = (target.resource, namespace, name)
        if self._live(key) is not None:
            message = f'{group_resource(target.resource)} "{name}" already exists'
            raise api_error(
                409,
                "AlreadyExists",
                message,
                name=name,
                group=target.resource.group,
                kind=target.resource.plural,
            )
        # Gap: kmock sets no uid, creationTimestamp or generation; controllers and kstatus read them.
        created = {
            "name": name,
            "uid": str(uuid.uuid4()),
            "creationTimestamp": now_rfc3339(),
            "generation": 1,
        }
        obj["metadata"] = {k: v for k, v in meta.items() if k not in SERVER_OWNED_METADATA} | created
        obj["metadata"] |= {"namespace": namespace} if namespace is not None else {}
        obj |= {"apiVersion": api_version(target.resource), "kind": info.kind}
        if "status" in info.subresources:
            obj.pop("status", None)  # Gap: with a status subresource, a create cannot set the status.
        obj = self._without_unknown_fields(target.resource, obj, strict)
        return self._commit(key, "ADDED", self._admitted(target.resource, obj, None), None)

    def _namespace_of_new(self, target: Target, namespaced: bool | None, meta: Json) -> str | None:
        if not namespaced:
            return None
        if target.namespace is None:
            raise api_error(405, "MethodNotAllowed", "a namespaced object is created in its namespace's URL")
        if meta.get("namespace") not in (None, target.namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if self._live((NAMESPACES, None, target.namespace)) is None:
            raise not_found(NAMESPACES, target.namespace)
        return target.namespace

    def _replace(self, target: Target, body: Json, strict: bool) -> Json:
        # Gap: kmock leaves PUT unmapped; a real server replaces the whole object.
        key, old = self._existing(target)
        if (body.get("metadata") or {}).get("name", target.name) != target.name:
            raise bad_request(f"the name of the object does not match the name on the URL ({target.name})")
        return self._update(target, key, old, copy.deepcopy(body), strict)

    def _patch(self, target: Target, content_type: str, body: bytes, strict: bool) -> Json:
        key, old = self._existing(target)
        custom = target.resource in self._crd_names
        return self._update(target, key, old, patched(old, content_type, body, custom=custom), strict)

    def _update(self, target: Target, key: ObjectKey, old: Json, new: Json, strict: bool) -> Json:
        old_meta, new_meta = old["metadata"], new.get("metadata") or {}
        # Gap: optimistic concurrency; a write that names a stale resourceVersion is a 409 Conflict.
        if new_meta.get("resourceVersion") not in (None, "", old_meta["resourceVersion"]):
            message = (
                f'Operation cannot be fulfilled on {group_resource(target.resource)} "{target.name}": '
                "the object has been modified; please apply your changes to the latest version and try again"
            )
            raise api_error(
                409,
                "Conflict",
                message,
                name=target.name,
                group=target.resource.group,
                kind=target.resource.plural,
            )
        new = self._without_unknown_fields(target.resource, self._status_rules(target, old, new), strict)
        meta = {k: v for k, v in (new.get("metadata") or {}).items() if k not in SERVER_OWNED_METADATA}
        new["metadata"] = meta | {k: old_meta[k] for k in SERVER_OWNED_METADATA if k in old_meta}
        new |= {"apiVersion": old["apiVersion"], "kind": old["kind"]}
        # Gap: generation counts changes of the desired state only, never of metadata or status.
        if without_metadata_and_status(new) != without_metadata_and_status(old):
            new["metadata"]["generation"] = old_meta.get("generation", 0) + 1
        new = self._admitted(target.resource, new, old)
        if new == old:  # A no-op write keeps the resourceVersion and notifies nobody, as in kube-apiserver.
            return old
        if meta_of(new).get("deletionTimestamp") and not meta_of(new).get("finalizers"):
            return self._commit(key, "DELETED", new, old)
        return self._commit(key, "MODIFIED", new, old)

    def _without_unknown_fields(self, resource: kmock.resource, obj: Json, strict: bool) -> Json:
        """A custom object as kube-apiserver decodes it: unknown fields are a 400 when the client asked for
        strict validation, and are otherwise dropped (the server only warns)."""
        crd_name = self._crd_names.get(resource)
        if crd_name is None or self.validate_custom_object is None:
            return obj
        crd = self._live((CRDS, None, crd_name)) or {}
        unknown = [
            violation_field(v)
            for v in self.validate_custom_object(crd, obj)
            if violation_message(v).startswith('unknown field "')
        ]
        if not unknown:
            return obj
        if strict:
            kind, version = obj.get("kind", ""), str(obj.get("apiVersion", "")).rpartition("/")[2]
            fields = ", ".join(f'unknown field "{path}"' for path in unknown)
            refused = f'{kind} in version "{version}" cannot be handled as a {kind}'
            raise bad_request(f"{refused}: strict decoding error: {fields}")
        pruned = copy.deepcopy(obj)
        for path in unknown:
            drop_path(pruned, path)
        return pruned

    def _status_rules(self, target: Target, old: Json, new: Json) -> Json:
        # Gap: kmock applies a /status write to the whole object. With a status subresource, the main
        # resource ignores .status and the /status subresource changes nothing but .status.
        if "status" not in self._resources[target.resource].subresources:
            return new
        kept, taken = (old, new) if target.subresource == "status" else (new, old)
        result = copy.deepcopy(kept)
        result.pop("status", None)
        return result | ({"status": taken["status"]} if "status" in taken else {})

    def _admitted(self, resource: kmock.resource, obj: Json, old: Json | None) -> Json:
        """The object as stored after admission: validated, with what the server's controllers fill in."""
        if resource == CRDS:
            # Gap: no apiextensions controller in kmock; this one accepts the names and establishes the CRD.
            try:
                obj["status"] = crd_status(obj, old)
                list(crd_resources(obj))  # What registering it will read, checked before it is stored.
            except (KeyError, TypeError) as error:
                message = (
                    f'CustomResourceDefinition.apiextensions.k8s.io "{obj["metadata"]["name"]}" is invalid'
                )
                raise api_error(422, "Invalid", f"{message}: spec: Required value: {error}") from error
        if resource == NAMESPACES:
            obj["status"] = {"phase": "Active"}
        if resource == SECRETS:
            # Gap: a Secret's data is base64; kube-apiserver cannot decode anything else (400).
            for value in (obj.get("data") or {}).values():
                position = illegal_base64_position(str(value))
                if position is not None:
                    message = f"illegal base64 data at input byte {position}"
                    raise api_error(
                        400, "BadRequest", f'Secret in version "v1" cannot be handled as a Secret: {message}'
                    )
        if resource == SECRETS and "stringData" in obj:
            # Gap: a real server merges a Secret's write-only stringData into data, base64-encoded.
            encoded = {
                k: base64.b64encode(str(v).encode()).decode() for k, v in obj.pop("stringData").items()
            }
            obj["data"] = {**(obj.get("data") or {}), **encoded}
        if old is not None and old.get("immutable") is True and resource in IMMUTABLE_FIELDS:
            # Gap: kmock lets an immutable ConfigMap or Secret change; kube-apiserver forbids it.
            forbidden = "Forbidden: field is immutable when `immutable` is set"
            frozen = (*IMMUTABLE_FIELDS[resource], "immutable")
            changed: list[Violation] = [(f, forbidden) for f in frozen if obj.get(f) != old.get(f)]
            if changed:
                raise invalid(obj["kind"], resource.group or "", obj, changed)
        crd_name = self._crd_names.get(resource)
        if crd_name is not None and self.validate_custom_object is not None:
            crd = self._live((CRDS, None, crd_name))
            # Gap: kmock admits anything; kube-apiserver validates custom resources against their schema.
            violations = list(self.validate_custom_object(crd or {}, obj))
            if violations:
                raise invalid(obj["kind"], resource.group or "", obj, violations)
        return obj

    def _delete(self, key: ObjectKey, obj: Json) -> Json:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return obj
        if meta.get("finalizers"):
            marked = copy.deepcopy(obj)
            marked["metadata"] |= {"deletionTimestamp": now_rfc3339(), "deletionGracePeriodSeconds": 0}
            return self._commit(key, "MODIFIED", marked, obj)
        return self._commit(key, "DELETED", obj, obj)

    def _commit(self, key: ObjectKey, event_type: str, obj: Json, old: Json | None) -> Json:
        # Gap: kmock has no resourceVersion; here every write takes the next value of one global counter.
        self._revision += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self._revision)
        if event_type == "DELETED":
            self._objects[key].delete()
        elif key in self._objects:
            self._objects[key].history.append(stored)
        else:
            self._objects[key] = stored
        change = Change(self._revision, key[0], event_type, stored, old)
        self._changes.append(change)
        for queue in self._watchers:
            queue.put_nowait(change)
        self._react(change)
        return copy.deepcopy(stored)

    def _react(self, change: Change) -> None:
        if change.resource == CRDS:
            self._register_crd(change.object["metadata"]["name"], change.object, change.type != "DELETED")
        if change.type == "DELETED":
            # Gap: no garbage collector in kmock; dependents of a deleted object go in the background.
            asyncio.get_running_loop().call_soon(self._collect_garbage, change.resource, change.object)

    def _register_crd(self, name: str, crd: Json, served: bool) -> None:
        # Gap: kmock's discovery does not follow CRDs; a real server serves a CRD's versions at once.
        for resource in [resource for resource, crd_name in self._crd_names.items() if crd_name == name]:
            del self._resources[resource], self._crd_names[resource]
        for resource, info in crd_resources(crd) if served else ():
            self._resources[resource], self._crd_names[resource] = info, name

    def _collect_garbage(self, resource: kmock.resource, owner: Json) -> None:
        for key in list(self._dependents(resource, owner)):
            dependent = self._live(key)
            if dependent is not None:
                self._delete(key, dependent)

    def _dependents(self, resource: kmock.resource, owner: Json) -> Iterator[ObjectKey]:
        """What goes with a deleted object: what it owns, a namespace's content, a CRD's custom objects."""
        live = {key: obj.raw for key, obj in self._objects.items() if not obj.deleted}
        alive = {meta_of(obj).get("uid") for obj in live.values()}
        uid, name = owner["metadata"]["uid"], owner["metadata"]["name"]
        crd_served = {r for r, _ in crd_resources(owner)} if resource == CRDS else set()
        for key, obj in live.items():
            owners = {ref.get("uid") for ref in meta_of(obj).get("ownerReferences") or []}
            owned = uid in owners and not owners & alive
            if owned or (resource == NAMESPACES and key[1] == name) or key[0] in crd_served:
                yield key

    # Watches.

    async def _serve_watch_stream(
        self, request: aiohttp.web.BaseRequest, target: Target
    ) -> aiohttp.web.StreamResponse:
        params = request.query
        selects = object_filter(target, params)
        initial = self._initial_events(target, params, selects)
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self._watchers.add(queue)  # Subscribed in the same step as the snapshot: no event is lost between.
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        encoded = self._watch_encoder(target.resource, request.headers.get("Accept", ""), params)
        # Gap: real kubectl needs a JSON Content-Type on watch streams; kmock sends none.
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            await response.prepare(request)
            for event in initial:
                await response.write(encoded(event))
            expired = any(event["type"] == "ERROR" for event in initial)  # As in kube-apiserver: the end.
            while not expired and (change := await next_change(queue, deadline)) is not None:
                followed = change.event_for(selects) if change.resource == target.resource else None
                if followed is not None:
                    await response.write(encoded(followed))
            await response.write_eof()
        except ConnectionResetError:
            pass  # The client went away; there is no one left to tell.
        finally:
            self._watchers.discard(queue)
        return response

    def _watch_encoder(
        self, resource: kmock.resource, accept: str, params: Mapping[str, str]
    ) -> Callable[[Json], bytes]:
        """How a watch's events go on the wire: as they are, or (`kubectl get -w`) as one-row Tables."""
        columns = self._printer_columns(resource) if wants_table(accept) else None
        include, sent_headers = params.get("includeObject", "Metadata"), False

        def encoded(event: Json) -> bytes:
            nonlocal sent_headers
            if columns is not None and event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                obj = event["object"]
                # As kube-apiserver does: the column definitions come with the first event only.
                rendered = table(
                    columns, [obj], obj["metadata"]["resourceVersion"], include, not sent_headers
                )
                event, sent_headers = {"type": event["type"], "object": rendered}, True
            return json.dumps(event).encode() + b"\n"

        return encoded

    def _initial_events(
        self, target: Target, params: Mapping[str, str], selects: Callable[[Json], bool]
    ) -> list[Json]:
        since = params.get("resourceVersion", "")
        if params.get("sendInitialEvents") == "true":
            # Gap: the watch-list of kubectl and Kopf waits for a bookmark that ends the initial events.
            bookmark = {
                "kind": self._resources[target.resource].kind,
                "apiVersion": api_version(target.resource),
                "metadata": {
                    "resourceVersion": str(self._revision),
                    "annotations": {INITIAL_EVENTS_END: "true"},
                },
            }
            return [*self._added_events(target, selects), {"type": "BOOKMARK", "object": bookmark}]
        if since in ("", "0"):
            return self._added_events(target, selects)
        if not since.isdigit():
            raise bad_request(f"invalid resourceVersion: {since!r}")
        # Gap: kmock replays every object to every watch; a watch from resourceVersion N gets only the
        # changes after N (from a bounded log; older than the log is 410 Expired, as in kube-apiserver).
        if len(self._changes) == self._changes.maxlen and int(since) < self._changes[0].revision - 1:
            message = f"too old resource version: {since} ({self._changes[0].revision - 1})"
            return [{"type": "ERROR", "object": status_body(410, "Expired", message, None)}]
        replayed = (
            c.event_for(selects)
            for c in self._changes
            if c.revision > int(since) and c.resource == target.resource
        )
        return [event for event in replayed if event is not None]

    def _added_events(self, target: Target, selects: Callable[[Json], bool]) -> list[Json]:
        return [{"type": "ADDED", "object": obj} for obj in self._selected(target, selects)]


async def recorded(request: aiohttp.web.BaseRequest, target: Target, number: int) -> kmock.Request:
    """A resource request as kmock records it, so that tests can assert on it (`list(emulator)`)."""
    body = await request.read()
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    watching = request.method == "GET" and request.query.get("watch") in ("true", "1")
    actions = {
        "GET": "FETCH" if target.name else "LIST",
        "POST": "CREATE",
        "PATCH": "UPDATE",
        "DELETE": "DELETE",
    }
    action = "WATCH" if watching else actions.get(request.method)
    return kmock.Request(
        id=number,
        method=request.method,
        url=request.url,
        params=dict(request.query),
        headers=dict(request.headers),
        body=body,
        text=body.decode(errors="replace"),
        data=data,
        action=kmock.action(action) if action else None,
        resource=target.resource,
        namespace=target.namespace,
        name=target.name,
        subresource=target.subresource,
        raw_request=request,
    )


def meta_of(obj: Json) -> Json:
    metadata: Json = obj.get("metadata") or {}
    return metadata


def without_metadata_and_status(obj: Json) -> Json:
    return {key: value for key, value in obj.items() if key not in ("metadata", "status")}


async def next_change(queue: asyncio.Queue[Change | None], deadline: float | None) -> Change | None:
    """The next committed change for a watch, or None when the watch times out or the server closes."""
    # Gap: kmock ignores timeoutSeconds; a real server ends the watch stream when it passes.
    if deadline is None:
        return await queue.get()
    try:
        return await asyncio.wait_for(queue.get(), max(0.0, deadline - asyncio.get_running_loop().time()))
    except TimeoutError:
        return None


# Running it.


@dataclasses.dataclass(frozen=True)
class SecureEndpoint:
    """The same API over HTTPS, with the PEM certificate of the throwaway CA that signed its certificate."""

    url: str
    certificate_authority: bytes


@dataclasses.dataclass(frozen=True)
class LocalAPI:
    url: str
    emulator: LocalKubernetes
    secure: SecureEndpoint | None = None


def server_tls(host: str) -> tuple[ssl.SSLContext, bytes]:
    """A server TLS context for `host`, and the PEM certificate of the CA that signed it."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(host).configure_cert(context)
    return context, authority.cert_pem.bytes()


@contextlib.asynccontextmanager
async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    validate_custom_object: CustomObjectValidator | None = None,
    retained_changes: int = 1_000,
    users: Mapping[str, str] | None = None,
) -> AsyncIterator[LocalAPI]:
    """Serve a fresh local API over HTTP in the running event loop until the context exits.

    `retained_changes` is how many changes a watch can resume from (older: 410 Expired). `users` maps
    bearer tokens to the user names they authenticate (besides the admin of the default context); with
    users, the API is also served over HTTPS (`LocalAPI.secure`), where kubectl sends them.
    """
    emulator = LocalKubernetes(
        validate_custom_object=validate_custom_object, retained_changes=retained_changes, users=users or {}
    )
    # aiohttp's own server, not kmock.Server: that one patches aiohttp's resolver process-wide.
    runner = aiohttp.web.ServerRunner(aiohttp.web.Server(emulator, handler_cancellation=True))
    async with emulator:
        await runner.setup()
        try:
            await aiohttp.web.TCPSite(runner, host, port).start()
            url, secure = f"http://{host}:{runner.addresses[0][1]}", None
            if users:
                # Gap: kubectl sends credentials only to an https:// server (client-go's clientcmd reads a
                # user's token only for TLS), so the users' tokens need the API over TLS as well.
                context, certificate_authority = server_tls(host)
                await aiohttp.web.TCPSite(runner, host, 0, ssl_context=context).start()
                secure = SecureEndpoint(f"https://{host}:{runner.addresses[1][1]}", certificate_authority)
            yield LocalAPI(url=url, emulator=emulator, secure=secure)
        finally:
            emulator.close_watches()
            await runner.cleanup()


class LocalAPIThread:
    """The local API in a background thread with its own event loop, and a kubeconfig pointing at it.

    Usable from synchronous code: `with LocalAPIThread() as api: subprocess.run(["kubectl", ...],
    env={"KUBECONFIG": str(api.kubeconfig_path)})`. `call(coroutine)` runs a coroutine in the API's loop.
    With `users={"token-alice": "alice"}`, the kubeconfig also has a context `alice` that uses that token.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        validate_custom_object: CustomObjectValidator | None = None,
        retained_changes: int = 1_000,
        kubeconfig_path: str | os.PathLike[str] | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        self._users = dict(users or {})
        self._server = serve(
            host=host,
            port=port,
            validate_custom_object=validate_custom_object,
            retained_changes=retained_changes,
            users=self._users,
        )
        self._kubeconfig_path = pathlib.Path(kubeconfig_path) if kubeconfig_path is not None else None
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._api: LocalAPI | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    def __enter__(self) -> Self:
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(),), name="local-api", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure
        if self._kubeconfig_path is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="shepherd-local-api-")
            self._kubeconfig_path = pathlib.Path(self._temporary.name) / "kubeconfig"
        write_kubeconfig(self._kubeconfig_path, self.url, users=self._users, secure=self._running().secure)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join()
        if self._temporary is not None:
            self._temporary.cleanup()

    async def _serve(self) -> None:
        try:
            async with self._server as api:
                self._api, self._loop, self._stop = api, asyncio.get_running_loop(), asyncio.Event()
                self._ready.set()
                await self._stop.wait()
        except Exception as error:  # Raised again in the caller's thread by __enter__.
            self._failure = error
        finally:
            self._ready.set()

    @property
    def url(self) -> str:
        return self._running().url

    @property
    def emulator(self) -> LocalKubernetes:
        return self._running().emulator

    @property
    def kubeconfig_path(self) -> pathlib.Path:
        if self._kubeconfig_path is None:
            raise RuntimeError("the local API is not running")
        return self._kubeconfig_path

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine in the API's event loop and wait for its result."""
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the local API is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _running(self) -> LocalAPI:
        if self._api is None:
            raise RuntimeError("the local API is not running")
        return self._api


def write_kubeconfig(
    path: str | os.PathLike[str],
    url: str,
    *,
    namespace: str = "default",
    users: Mapping[str, str] | None = None,
    secure: SecureEndpoint | None = None,
) -> pathlib.Path:
    """A kubeconfig whose current context `shepherd-local` points at `url` as the admin.

    Each token of `users` (token -> user name) gets a user and a context, both named after its user, on
    the `secure` endpoint if given (kubectl sends tokens only over TLS), else on `url`.
    """
    clusters = [{"name": CONTEXT_NAME, "cluster": {"server": url, "insecure-skip-tls-verify": True}}]
    if secure is not None:
        authority = base64.b64encode(secure.certificate_authority).decode()
        clusters.append(
            {
                "name": f"{CONTEXT_NAME}-tls",
                "cluster": {"server": secure.url, "certificate-authority-data": authority},
            }
        )
    tokens = {CONTEXT_NAME: ADMIN_TOKEN} | {username: token for token, username in (users or {}).items()}
    # The admin's context on the plain URL as before; the users' on TLS if there is one.
    users_cluster = clusters[-1]["name"]
    contexts = [
        {
            "name": name,
            "context": {
                "cluster": CONTEXT_NAME if name == CONTEXT_NAME else users_cluster,
                "user": name,
                "namespace": namespace,
            },
        }
        for name in tokens
    ]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "users": [{"name": name, "user": {"token": token}} for name, token in tokens.items()],
        "contexts": contexts,
        "current-context": CONTEXT_NAME,
    }
    target = pathlib.Path(path)
    target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return target


def install_crds(url: str, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Create (or replace) every CustomResourceDefinition in the YAML files; return their names.

    Blocking: from async code, run it with `await asyncio.to_thread(install_crds, url, paths)`.
    """
    collection = f"{url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    names = []
    for path in paths:
        for document in yaml.safe_load_all(pathlib.Path(path).read_text(encoding="utf-8")):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                name = document["metadata"]["name"]
                try:
                    send_json("POST", collection, document)
                except urllib.error.HTTPError as error:
                    if error.code != 409:
                        raise
                    send_json("PUT", f"{collection}/{name}", document)
                names.append(name)
    return names


def send_json(method: str, url: str, body: Json) -> Json:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: Json = json.load(response)
        return answer
