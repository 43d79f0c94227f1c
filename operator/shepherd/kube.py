"""The Kubernetes adapter: applies what the core decides, and reads what the watches cannot give.

Built on the official client with raw JSON (no model classes: the core works on plain dicts). Calls are
blocking, so the shell runs them in threads. Every write returns what the server answered (`Written`), so
that the watch-fed cache holds the operator's own writes before their echo arrives. The reads here serve
the cases a watch cannot: a Release not yet seen, a re-read after a conflict, Secrets (never watched).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kubernetes.client
import kubernetes.client.rest
import kubernetes.config
from kubernetes.client.exceptions import ApiException

from shepherd.core.actions import (
    Action,
    ApplyConfigMap,
    ApplyDeployment,
    ApplyService,
    CreateJob,
    DeleteConfigMap,
    DeleteDeployment,
    DeleteJob,
    DeleteRevision,
    Event,
    PatchRoute,
    RecordRevision,
    RemoveAnnotations,
)
from shepherd.core.rejection import Rejection
from shepherd.core.timefmt import format_time
from shepherd.core.workloads import MANAGED_BY
from shepherd.limits import Limits

GROUP = "shepherd.dev"
VERSION = "v1alpha1"
PLURAL = "releases"
APPROVALS = "releaseapprovals"
POLICIES = "releasepolicies"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# Leases go through the generic object API as plain JSON: the typed client re-renders their times, and drops
# the fraction of a whole second that metav1.MicroTime requires.
COORDINATION = "coordination.k8s.io"
GATEWAY = "gateway.networking.k8s.io"

logger = logging.getLogger(__name__)


def load_configuration(
    kubeconfig: str | None = None, context: str | None = None
) -> kubernetes.client.Configuration:
    """Like kubectl: an explicit kubeconfig, else the in-cluster service account, else KUBECONFIG/~/.kube."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None and context is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return configuration
        except kubernetes.config.ConfigException:
            pass
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, context=context, client_configuration=configuration
    )
    return configuration


class NotLeading(RuntimeError):
    """A write refused because this operator no longer holds the leader lease."""


class Rejected(Exception):
    """The API server refused a write for its content (422, 400): sending it again changes nothing."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.describe())
        self.rejection = rejection


@dataclass(frozen=True)
class Written:
    """One object as a write left it: the server's answer, or for a deletion the object removed."""

    plural: str
    object: dict[str, Any]
    deleted: bool = False


class Conflict(Exception):
    """A write lost a race (409, or a compare-and-swap that found the object changed): read and try again.

    `current` is the object as read after the conflict, when the adapter read it."""

    def __init__(self, message: str, current: Written | None = None) -> None:
        super().__init__(message)
        self.current = current


@dataclass(frozen=True)
class ReleaseKey:
    namespace: str
    name: str


class BoundedREST(kubernetes.client.rest.RESTClientObject):
    """The client's REST layer, with a deadline on every request that names none: connecting, then each
    read of the answer. Without it a request the server never answers holds its thread for good."""

    def __init__(self, configuration: kubernetes.client.Configuration, seconds: float) -> None:
        super().__init__(configuration)
        self._deadline = (seconds, seconds)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["_request_timeout"] = kwargs.get("_request_timeout") or self._deadline
        return super().request(*args, **kwargs)  # type: ignore[no-untyped-call]


class KubeAPI:
    """Every call the operator makes to the API server, so RBAC can be read off one module."""

    def __init__(
        self, configuration: kubernetes.client.Configuration, request_seconds: float = Limits.request_seconds
    ) -> None:
        self.configuration = configuration
        # One connection per thread the shell writes from (runner.API_THREADS), not the client's default.
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, 32)
        self._client = kubernetes.client.ApiClient(configuration)
        self._client.rest_client = BoundedREST(configuration, request_seconds)
        # Typed as Any: the generated stubs want model classes, the core speaks plain dicts.
        self._custom: Any = kubernetes.client.CustomObjectsApi(self._client)
        self._apps: Any = kubernetes.client.AppsV1Api(self._client)
        self._core: Any = kubernetes.client.CoreV1Api(self._client)
        self._batch: Any = kubernetes.client.BatchV1Api(self._client)
        self.calls = 0  # API requests made, for the benchmarks
        # With leader election: whether this operator may write now. Checked before every write, so that a
        # reconcile still running when the lease is lost changes nothing.
        self.fence: Callable[[], bool] | None = None

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    # --- reads ---------------------------------------------------------------------------------

    def get_release(self, key: ReleaseKey) -> dict[str, Any] | None:
        try:
            release: dict[str, Any] = self._json(
                self._custom.get_namespaced_custom_object(
                    GROUP, VERSION, key.namespace, PLURAL, key.name, _preload_content=False
                )
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return release

    def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Only the Secrets a Release (or its policy) names: its Prometheus connection's, its webhook gates'
        headers, its notifications' URLs."""
        try:
            secret: dict[str, Any] = self._json(
                self._core.read_namespaced_secret(name, namespace, _preload_content=False)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return secret

    # --- writes --------------------------------------------------------------------------------

    def apply(self, key: ReleaseKey, action: Action, live: Mapping[str, Mapping[str, Any]]) -> list[Written]:
        """Apply one action; returns the objects as the server left them.

        Raises Rejected when the API server refuses the Release's content, Conflict on a lost race."""
        self._may_write()
        if isinstance(action, RemoveAnnotations):
            return self._remove_annotations(key, action)
        try:
            written = self._apply(key, action, live)
        except ApiException as error:
            kind, name = _written(action)
            if error.status in (400, 422) and kind:
                raise Rejected(_rejection(error, kind, name)) from error
            if error.status == 409:
                raise Conflict(f"{kind or type(action).__name__} {name}: {_message(error)}") from error
            raise
        except ValueError as error:
            # The official client (37 and later) checks a body against its models before sending it: a
            # template the API server would refuse (an `env` given as a string) never leaves the process.
            kind, name = _written(action)
            refused = _client_rejection(error, kind, name)
            if refused is None:
                raise
            raise Rejected(refused) from error
        return [written] if written is not None else []

    def _apply(
        self, key: ReleaseKey, action: Action, live: Mapping[str, Mapping[str, Any]]
    ) -> Written | None:
        namespace = key.namespace
        if isinstance(action, ApplyDeployment):
            return self._apply_deployment(key, action, live.get(action.name))
        if isinstance(action, DeleteDeployment):
            return self._delete(
                "deployments",
                namespace,
                action.name,
                lambda: self._apps.delete_namespaced_deployment(
                    action.name, namespace, propagation_policy="Background", _preload_content=False
                ),
            )
        if isinstance(action, ApplyConfigMap):
            # Immutable and named by its content: one that exists already is this one.
            return self._create(
                "configmaps",
                lambda: self._core.create_namespaced_config_map(
                    namespace, dict(action.manifest), _preload_content=False
                ),
            )
        if isinstance(action, DeleteConfigMap):
            return self._delete(
                "configmaps",
                namespace,
                action.name,
                lambda: self._core.delete_namespaced_config_map(
                    action.name, namespace, _preload_content=False
                ),
            )
        if isinstance(action, RecordRevision):
            return self._create(
                "controllerrevisions",
                lambda: self._apps.create_namespaced_controller_revision(
                    namespace, dict(action.manifest), _preload_content=False
                ),
            )
        if isinstance(action, DeleteRevision):
            return self._delete(
                "controllerrevisions",
                namespace,
                action.name,
                lambda: self._apps.delete_namespaced_controller_revision(
                    action.name, namespace, _preload_content=False
                ),
            )
        if isinstance(action, CreateJob):
            return self._create(
                "jobs",
                lambda: self._batch.create_namespaced_job(
                    namespace, dict(action.manifest), _preload_content=False
                ),
            )
        if isinstance(action, ApplyService):
            return self._create(
                "services",
                lambda: self._core.create_namespaced_service(
                    namespace, dict(action.manifest), _preload_content=False
                ),
            )
        if isinstance(action, PatchRoute):
            return self._patch_route(action)
        if isinstance(action, DeleteJob):
            return self._delete(
                "jobs",
                namespace,
                action.name,
                lambda: self._batch.delete_namespaced_job(
                    action.name, namespace, propagation_policy="Background", _preload_content=False
                ),
            )
        return None

    def _remove_annotations(self, key: ReleaseKey, action: RemoveAnnotations) -> list[Written]:
        """Remove each command annotation that still holds the acknowledged value: one given again with
        another value meanwhile is a new command and stays."""
        written = []
        for name in action.keys:
            path = "/metadata/annotations/" + name.replace("~", "~0").replace("/", "~1")
            ops: list[dict[str, Any]] = [{"op": "remove", "path": path}]
            if name in action.values:
                ops.insert(0, {"op": "test", "path": path, "value": action.values[name]})
            try:
                self._count()
                response = self._custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    key.namespace,
                    PLURAL,
                    key.name,
                    ops,
                    _content_type=JSON_PATCH,
                    _preload_content=False,
                )
            except ApiException as error:
                if error.status == 409:
                    raise Conflict(f"Release {key.name} annotation {name}: {_message(error)}") from error
                if error.status != 422:  # 422: the annotation changed or went meanwhile
                    raise
                continue
            written.append(Written(PLURAL, json.loads(response.data)))
        return written

    def patch_status(self, key: ReleaseKey, status: Mapping[str, Any], resource_version: str = "") -> Written:
        """Merge-patch the status subresource; with `resource_version`, only if the Release is still at it
        (else Conflict, also when it is gone: deleted since the copy was read, perhaps created anew), so a
        decision made on a stale copy is never written. Rejected when the server refuses the status."""
        self._may_write()
        self._count()
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            response = self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                key.namespace,
                PLURAL,
                key.name,
                body,
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status == 409:
                raise Conflict(f"Release {key.name} status: {_message(error)}") from error
            if error.status == 404 and resource_version:
                raise Conflict(f"Release {key.name} is gone since it was read") from error
            if error.status in (400, 422):
                raise Rejected(_rejection(error, "Release", f"{key.name} status")) from error
            raise
        return Written(PLURAL, json.loads(response.data))

    def post_event(self, release: Mapping[str, Any], event: Event, now: datetime) -> None:
        self._may_write()
        meta = release["metadata"]
        stamp = format_time(now.astimezone(UTC))
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Release",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": MANAGED_BY},
            "reportingComponent": f"{GROUP}/operator",
            "reportingInstance": MANAGED_BY,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        self._count()
        self._core.create_namespaced_event(meta["namespace"], body, _preload_content=False)

    # --- leader election (never fenced: it is how an operator gets to write) ------------------------

    def get_lease(self, namespace: str, name: str, timeout: float) -> dict[str, Any] | None:
        try:
            lease: dict[str, Any] = self._json(
                self._custom.get_namespaced_custom_object(
                    COORDINATION,
                    "v1",
                    namespace,
                    "leases",
                    name,
                    _preload_content=False,
                    _request_timeout=timeout,
                )
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return lease

    def write_lease(
        self,
        namespace: str,
        name: str,
        lease: Mapping[str, Any] | None,
        spec: Mapping[str, Any],
        timeout: float,
    ) -> dict[str, Any] | None:
        """Create the Lease (when `lease` is None) or replace the one read, whose resourceVersion makes the
        write a compare-and-swap. None when another candidate wrote first."""
        try:
            if lease is None:
                body = {
                    "apiVersion": f"{COORDINATION}/v1",
                    "kind": "Lease",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": dict(spec),
                }
                response = self._custom.create_namespaced_custom_object(
                    COORDINATION,
                    "v1",
                    namespace,
                    "leases",
                    body,
                    _preload_content=False,
                    _request_timeout=timeout,
                )
            else:
                response = self._custom.replace_namespaced_custom_object(
                    COORDINATION,
                    "v1",
                    namespace,
                    "leases",
                    name,
                    {**lease, "spec": dict(spec)},
                    _preload_content=False,
                    _request_timeout=timeout,
                )
        except ApiException as error:
            if error.status == 409:
                return None
            raise
        written: dict[str, Any] = self._json(response)
        return written

    # --- helpers -------------------------------------------------------------------------------

    def _may_write(self) -> None:
        if self.fence is not None and not self.fence():
            raise NotLeading("this operator no longer holds the leader lease: it writes nothing")

    def _apply_deployment(
        self, key: ReleaseKey, action: ApplyDeployment, live: Mapping[str, Any] | None
    ) -> Written:
        manifest = dict(action.manifest)
        if live is None:
            try:
                self._count()
                created = self._apps.create_namespaced_deployment(
                    key.namespace, manifest, _preload_content=False
                )
                return Written("deployments", json.loads(created.data))
            except ApiException as error:
                if error.status != 409:
                    raise
                live = self._read_deployment(key, action.name)
                if live is None:
                    raise Conflict(f"Deployment {action.name} was deleted while being created") from error
        self._count()
        try:
            patched = self._apps.patch_namespaced_deployment(
                action.name,
                key.namespace,
                _deployment_patch(manifest, live),
                _content_type=JSON_PATCH,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status == 422:
                # A failed "test" of the resourceVersion is a 422 too: the Deployment changed since read.
                tested = (live.get("metadata") or {}).get("resourceVersion")
                try:
                    current = self._read_deployment(key, action.name)
                except ApiException:
                    current = None
                now = (current or {}).get("metadata", {}).get("resourceVersion")
                if tested and now != tested:
                    seen = Written("deployments", current) if current is not None else None
                    raise Conflict(f"Deployment {action.name} changed since it was read", seen) from error
            raise
        return Written("deployments", json.loads(patched.data))

    def _patch_route(self, action: PatchRoute) -> Written:
        """One JSON patch of the route, tested against the version the plan was made on."""
        ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": action.resource_version}]
        self._count()
        try:
            patched = self._custom.patch_namespaced_custom_object(
                GATEWAY,
                "v1",
                action.namespace,
                "httproutes",
                action.name,
                [*ops, *map(dict, action.ops)],
                _content_type=JSON_PATCH,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status == 422 and "test failed" in _message(error):
                raise Conflict(f"HTTPRoute {action.name} changed since it was read") from error
            raise
        return Written("httproutes", json.loads(patched.data))

    def _read_deployment(self, key: ReleaseKey, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._json(
                self._apps.read_namespaced_deployment(name, key.namespace, _preload_content=False)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    def _delete(self, plural: str, namespace: str, name: str, call: Callable[[], Any]) -> Written:
        gone: dict[str, Any] = {"metadata": {"namespace": namespace, "name": name}}
        try:
            self._count()
            answer = json.loads(call().data or "{}")
        except ApiException as error:
            if error.status != 404:
                raise
            return Written(plural, gone, deleted=True)
        # The object removed (its version tells older watch events apart), or a Status naming nothing.
        removed = answer if answer.get("kind") not in (None, "Status") else gone
        return Written(plural, removed, deleted=True)

    def _create(self, plural: str, call: Callable[[], Any]) -> Written | None:
        try:
            self._count()
            return Written(plural, json.loads(call().data))
        except ApiException as error:
            if error.status != 409:
                raise
            return None

    def _json(self, response: Any) -> Any:
        self._count()
        return json.loads(response.data)

    def _count(self) -> None:
        self.calls += 1


def retry_after(error: BaseException) -> float | None:
    """The seconds a 429 (too many requests) asks to wait, from its Retry-After header, if `error` is one
    or was raised from one."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ApiException) and seen.status == 429:
            value = (seen.headers or {}).get("Retry-After", "")
            try:
                return max(0.0, float(value))
            except ValueError:
                return None  # an HTTP date, or nothing: the ordinary backoff
        seen = seen.__cause__ or seen.__context__
    return None


def secret_text(secret: Mapping[str, Any], keys: Collection[str] | None = None) -> dict[str, str]:
    """A Secret's data (or only `keys` of it) decoded to text; raises ValueError naming the first key
    that is not UTF-8 text."""
    decoded = {}
    for key, value in (secret.get("data") or {}).items():
        if keys is not None and key not in keys:
            continue
        try:
            decoded[key] = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError(f"key {key} of the Secret is not text") from None
    return decoded


def _written(action: Action) -> tuple[str, str]:
    """The kind and name of what an action writes from the Release's content ("" for a deletion)."""
    if isinstance(action, ApplyDeployment):
        return "Deployment", action.name
    if isinstance(action, ApplyConfigMap):
        return "ConfigMap", action.name
    if isinstance(action, CreateJob):
        return "Job", action.name
    if isinstance(action, RecordRevision):
        return "ControllerRevision", str(action.manifest["metadata"]["name"])
    if isinstance(action, ApplyService):
        return "Service", action.name
    if isinstance(action, PatchRoute):
        return "HTTPRoute", action.name
    return "", str(getattr(action, "name", ""))


def _status_body(error: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(error.body or "{}")
    except (ValueError, TypeError):
        return {}
    return body if isinstance(body, dict) else {}


def _message(error: ApiException) -> str:
    return str(_status_body(error).get("message") or f"HTTP {error.status} {error.reason or ''}".strip())


def _rejection(error: ApiException, kind: str, name: str) -> Rejection:
    """The server's own words: its message, and the fields its causes name."""
    causes = (_status_body(error).get("details") or {}).get("causes") or []
    fields = list(dict.fromkeys(str(c["field"]) for c in causes if isinstance(c, dict) and c.get("field")))
    return Rejection(kind, name, int(error.status or 0), _message(error), ", ".join(fields))


def _client_rejection(error: ValueError, kind: str, name: str) -> Rejection | None:
    """The client's model check in the API server's terms: the fields as paths, each with its problem."""
    errors = getattr(error, "errors", None)
    if not kind or not callable(errors):
        return None
    problems = []
    for problem in errors():
        # The location starts with the argument (its position or name) before the body's own path.
        path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in problem["loc"][1:])
        problems.append((path.lstrip("."), str(problem["msg"])))
    message = "; ".join(f"{path}: {text}" for path, text in problems)
    fields = ", ".join(dict.fromkeys(path for path, _ in problems))
    return Rejection(kind, name, 0, message, fields)


def _deployment_patch(manifest: Mapping[str, Any], live: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Replace the spec whole (a merge patch would keep keys the new template dropped) and set our
    labels and annotations beside anyone else's; the resourceVersion test makes it a compare-and-swap."""
    meta = live.get("metadata") or {}
    wanted = manifest["metadata"]
    ops: list[dict[str, Any]] = []
    if meta.get("resourceVersion"):
        ops.append({"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]})
    ops.append({"op": "replace", "path": "/spec", "value": manifest["spec"]})
    for field in ("labels", "annotations"):
        merged = {**(meta.get(field) or {}), **wanted[field]}
        ops.append({"op": "add", "path": f"/metadata/{field}", "value": merged})
    ops.append({"op": "add", "path": "/metadata/ownerReferences", "value": wanted["ownerReferences"]})
    return ops
