"""The verbs that change a Release, as plain functions: `kubectl release` and the dashboard both call them,
as the user whose client they are given, so RBAC and the admission policies apply to either alike.

Each returns what it did in one line and raises `CommandError` (a `click.ClickException`, which the plugin
prints as kubectl would) with the API server's own message when it refuses.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click
import kubernetes.client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from shepherd.kube import APPROVALS, GROUP, MERGE_PATCH, PLURAL, VERSION

# Phases in which an approval of the current revision can still let it through: before and while gating,
# and after a failure (a retry gates the revision again).
APPROVAL_MATTERS = frozenset({"", "Pending", "Gating", "RolledBack", "Failed"})
NAME_LIMIT = 63  # A DNS-1123 label: the name also fits a label value.
HASH_LENGTH = 8


@dataclass
class Target:
    client: kubernetes.client.ApiClient
    custom: Any
    namespace: str


class CommandError(click.ClickException):
    """The command was not carried out; `status` is the API server's answer when it refused (else 0)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def get_release(target: Target, name: str) -> dict[str, Any]:
    try:
        release: dict[str, Any] = target.custom.get_namespaced_custom_object(
            GROUP, VERSION, target.namespace, PLURAL, name
        )
    except ApiException as error:
        if error.status == 404:
            raise CommandError(f'release "{name}" not found in namespace "{target.namespace}"', 404) from None
        raise CommandError(f"the API server answered {error.status}: {error.reason}", error.status) from None
    except HTTPError as error:
        raise CommandError(f"cannot reach the cluster: {error}") from None
    return release


def _patch(target: Target, name: str, patch: Mapping[str, Any]) -> None:
    try:
        target.custom.patch_namespaced_custom_object(
            GROUP, VERSION, target.namespace, PLURAL, name, patch, _content_type=MERGE_PATCH
        )
    except ApiException as error:
        raise CommandError(f"cannot change release {name}: {api_message(error)}", error.status) from None
    except HTTPError as error:
        raise CommandError(f"cannot reach the cluster: {error}") from None


def annotate(target: Target, name: str, key: str, value: str) -> str:
    """Set the command annotation `shepherd.dev/<key>`, as `kubectl annotate` would."""
    get_release(target, name)
    _patch(target, name, {"metadata": {"annotations": {f"{GROUP}/{key}": value}}})
    return f"release.{GROUP}/{name} {key} requested"


def set_paused(target: Target, name: str, paused: bool) -> str:
    get_release(target, name)
    _patch(target, name, {"spec": {"paused": paused}})
    return f"release.{GROUP}/{name} {'paused' if paused else 'resumed'}"


@dataclass(frozen=True)
class Approved:
    message: str
    warnings: tuple[str, ...]


def approve(target: Target, name: str, comment: str, revision: int | None, group: str) -> Approved:
    """A ReleaseApproval of the current revision by the requesting user (for a role with `group`)."""
    release = get_release(target, name)
    state = release.get("status") or {}
    try:
        approved = revision_to_approve(name, state.get("revision"), revision)
    except ValueError as error:
        raise CommandError(str(error)) from None
    user = whoami(target)
    uid = str(release["metadata"].get("uid") or "")
    approval = approval_manifest(target.namespace, name, approved, user, comment, uid, group)
    warnings = []
    phase = str(state.get("phase") or "")
    if phase not in APPROVAL_MATTERS:
        warnings.append(
            f"revision {approved} of release {name} is past its gates ({phase}): the approval changes nothing"
        )
    problem = role_mismatch(name, state.get("checklist") or [], group)
    if problem:
        warnings.append(problem)
    return Approved(create_approval(target, approval), tuple(warnings))


def role_mismatch(release: str, checklist: Sequence[Mapping[str, Any]], group: str) -> str | None:
    """Why an approval for `group` (none: "") may count for none of the sign-offs the checklist lists."""
    roles = sorted({str(i["group"]) for i in checklist if i.get("kind") == "approval" and i.get("group")})
    if not roles:
        return None
    plain = any(i.get("kind") == "approval" and not i.get("group") for i in checklist)
    if not group and not plain:
        return (
            f"release {release} needs sign-off by role ({', '.join(roles)}): an approval without --group "
            "counts for none of them"
        )
    if group and group not in roles:
        asked = ", ".join(roles)
        return f"no approval gate of release {release} asks for group {group} (they ask for {asked})"
    return None


def approval_manifest(
    namespace: str,
    release: str,
    revision: int,
    user: str,
    comment: str,
    release_uid: str = "",
    group: str = "",
) -> dict[str, Any]:
    """The ReleaseApproval of `user` for one revision (for one role, with `group`), with its deterministic
    name. Owned by the Release (when its uid is known): deleted with it, and never counted for a new
    Release of the same name."""
    metadata: dict[str, Any] = {"name": approval_name(release, revision, user, group), "namespace": namespace}
    if release_uid:
        owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Release", "name": release, "uid": release_uid}
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ReleaseApproval",
        "metadata": metadata,
        "spec": {"release": release, "revision": revision, "approver": user}
        | ({"group": group} if group else {})
        | ({"comment": comment} if comment else {}),
    }


def revision_to_approve(release: str, current: object, requested: int | None) -> int:
    """The revision an approval names: the Release's current one, which `requested` must equal if given.

    An approval counts only for the revision it names: an older one never gates again, and a newer one does
    not exist yet (its content unknown), so approving either would approve nothing anyone reviewed.
    """
    if not isinstance(current, int) or isinstance(current, bool):
        raise ValueError(
            f"release {release} has no revision yet: the operator has not handled it (see kubectl release "
            f"status {release})"
        )
    if requested is not None and requested != current:
        raise ValueError(
            f"release {release} is at revision {current}, not {requested}: an approval counts only for the "
            f"revision it names; review revision {current} (kubectl release status {release}) and approve it"
        )
    return current


def approval_name(release: str, revision: int, user: str, group: str = "") -> str:
    """`<release>-r<revision>-<user>` as a DNS-1123 label, one per release, revision, user and role.

    A user name that is not a label already (`alice@example.com`, `system:serviceaccount:ci:deploy`,
    `Alice`), or a sign-off for a role (`shop-r2-alice-qa-<hash>`), gets a hash of the whole identity
    appended, so two users or roles never share a name; a name over 63 characters is cut, keeping that hash.
    """
    identity = f"{user} for {group}" if group else user
    slug = re.sub(r"[^a-z0-9]+", "-", identity.lower()).strip("-")
    name = f"{release}-r{revision}-{slug}".rstrip("-")
    if slug == identity and len(name) <= NAME_LIMIT:
        return name
    digest = hashlib.sha256(f"{release}/{revision}/{identity}".encode()).hexdigest()[:HASH_LENGTH]
    return f"{name[: NAME_LIMIT - HASH_LENGTH - 1].rstrip('-')}-{digest}"


def whoami(target: Target) -> str:
    """The requesting user as the API server authenticates it, asked the way `kubectl auth whoami` does."""
    review = kubernetes.client.V1SelfSubjectReview(
        api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"
    )
    try:
        answer = kubernetes.client.AuthenticationV1Api(target.client).create_self_subject_review(review)
    except ApiException as error:
        if error.status == 404:
            raise CommandError(
                "the cluster does not serve SelfSubjectReview (authentication.k8s.io/v1, Kubernetes 1.28 or "
                "later), so it cannot say who you are; approvals need it",
                404,
            ) from None
        raise CommandError(f"cannot tell who you are: {api_message(error)}", error.status) from None
    except HTTPError as error:
        raise CommandError(f"cannot reach the cluster: {error}") from None
    user = answer.status.user_info if answer.status else None
    if user is None or not user.username:
        raise CommandError("the cluster did not say who you are (no user name in SelfSubjectReview)")
    return str(user.username)


def create_approval(target: Target, approval: dict[str, Any]) -> str:
    name, spec = approval["metadata"]["name"], approval["spec"]
    shown = f"releaseapproval.{GROUP}/{name}"
    what = f"revision {spec['revision']} of release {spec['release']}"
    if spec.get("group"):
        what += f" for {spec['group']}"
    try:
        target.custom.create_namespaced_custom_object(GROUP, VERSION, target.namespace, APPROVALS, approval)
    except ApiException as error:
        if error.status != 409:
            raise CommandError(f"cannot create {shown}: {api_message(error)}", error.status) from None
        existing = _existing_approval(target, name)
        keys = ("release", "revision", "approver", "group")
        given = {key: existing.get("spec", {}).get(key) for key in keys}
        if given != {key: spec.get(key) for key in keys}:
            raise CommandError(
                f"{shown} already exists and approves something else: {json.dumps(given)}", 409
            ) from None
        created = existing.get("metadata", {}).get("creationTimestamp", "earlier")
        return f"{shown} unchanged: {spec['approver']} already approved {what} at {created}"
    except HTTPError as error:
        raise CommandError(f"cannot reach the cluster: {error}") from None
    return f"{shown} created: {spec['approver']} approves {what}"


def _existing_approval(target: Target, name: str) -> dict[str, Any]:
    try:
        existing: dict[str, Any] = target.custom.get_namespaced_custom_object(
            GROUP, VERSION, target.namespace, APPROVALS, name
        )
    except ApiException as error:
        raise CommandError(
            f"releaseapproval.{GROUP}/{name} already exists, but cannot be read: {api_message(error)}",
            error.status,
        ) from None
    return existing


def api_message(error: ApiException) -> str:
    """The API server's own message (an admission denial, a schema violation), else its status line."""
    try:
        message = json.loads(error.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else f"the API server answered {error.status}: {error.reason}"
