"""The readiness checklist (status.checklist): every item a revision waits for before it starts.

One item per gate (the Release's own and its policies', freezes included), and one per role of an approval
gate's `from`, each with its state, the team answering for it, who signed and when, and when it passed.
Pure: computed from the gate results `decide` already has; an item's passedAt is kept from the previous
checklist while it stays passed, so it says when it passed, not when it was last looked at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from shepherd.core.gates import Approval, GateResult, RoleResult
from shepherd.core.spec import (
    ApprovalGate,
    Gate,
    GateKind,
    JobGate,
    MetricGate,
    ReleaseGate,
    WebhookGate,
    WindowGate,
)
from shepherd.core.timefmt import format_seconds, format_time

MAX_ITEMS = 64
MAX_SIGNERS = 20
KINDS: Mapping[type, str] = {
    ApprovalGate: "approval",
    WindowGate: "window",
    MetricGate: "metric",
    WebhookGate: "webhook",
    JobGate: "job",
    ReleaseGate: "release",
}


def kind_name(kind: GateKind) -> str:
    return KINDS[type(kind)]


def checklist(
    gates: Sequence[Gate], results: Sequence[GateResult], previous: Sequence[Mapping[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """status.checklist, in the order of the gates (the Release's, then its policies', then freezes)."""
    specs = {gate.name: gate for gate in gates}
    passed_before = {
        item_key(item): item.get("passedAt")
        for item in previous
        if isinstance(item, Mapping) and item.get("state") == "Passed" and item.get("passedAt")
    }
    items: list[dict[str, Any]] = []
    for result in results:
        gate = specs.get(result.name)
        # What holds a revision without being a gate of the spec ("freeze/<policy>") is of the kind its
        # name starts with.
        kind = result.name.split("/", 1)[0] if gate is None else kind_name(gate.kind)
        description, owner = (gate.description, gate.owner) if gate is not None else ("", "")
        if not result.roles:
            items.append(_item(result.name, "", kind, result.state, owner, description, result.message))
            if result.approvers:
                items[-1]["signedBy"] = _signers(result.approvers)
            continue
        for role in result.roles:
            message = _role_message(role, result.barred)
            item = _item(result.name, role.group, kind, role.state, owner or role.group, description, message)
            if role.approvers:
                item["signedBy"] = _signers(role.approvers)
            items.append(item)
    for item in items:
        if item["state"] == "Passed":
            item["passedAt"] = passed_before.get(item_key(item)) or format_seconds(now)
    return items[:MAX_ITEMS]


def item_key(item: Mapping[str, Any]) -> tuple[str, str]:
    """An item is a gate, or one role of an approval gate: its name and group."""
    return str(item.get("name", "")), str(item.get("group", ""))


def open_items(items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The items not passed yet, in checklist order."""
    return [item for item in items if item.get("state") != "Passed"]


def _item(
    name: str, group: str, kind: str, state: str, owner: str, description: str, message: str
) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name}
    if group:
        item["group"] = group
    item.update({"kind": kind, "state": state})
    if owner:
        item["owner"] = owner
    if description:
        item["description"] = description
    item["message"] = message
    return item


def _role_message(role: RoleResult, barred: Sequence[Approval]) -> str:
    who = ", ".join(a.approver for a in role.approvers) or "nobody yet"
    message = f"{len(role.approvers)}/{role.count} sign-offs from {role.group}: {who}"
    authors = sorted({a.approver for a in barred if a.group == role.group})
    for author in authors:
        message += f"; {author}'s sign-off does not count: {author} last changed the spec (four eyes)"
    return message


def _signers(approvals: Sequence[Approval]) -> list[dict[str, Any]]:
    signers = []
    for approval in approvals[:MAX_SIGNERS]:
        signer: dict[str, Any] = {"user": approval.approver}
        if approval.group:
            signer["group"] = approval.group
        if approval.created is not None:
            signer["at"] = format_time(approval.created)
        signers.append(signer)
    return signers
