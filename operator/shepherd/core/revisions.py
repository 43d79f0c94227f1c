"""Revisions: every change of content is a new one, recorded as a ControllerRevision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from shepherd.core import reasons
from shepherd.core.actions import Action, DeleteRevision, Event, RecordRevision
from shepherd.core.model import Observations, ReleaseObject
from shepherd.core.plan import Plan
from shepherd.core.spec import ReleaseSpec, RevisionContent, content_of
from shepherd.core.status import PROMOTED, STALLED, Phase, Rollout
from shepherd.core.workloads import (
    GROUP,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    REVISION_LABEL,
    owner_reference,
)

REVISION_HASH_ANNOTATION = f"{GROUP}/content-hash"


def revision_content(
    rollout: Rollout, spec: ReleaseSpec, revisions: Mapping[int, RevisionContent]
) -> RevisionContent:
    """What the current revision rolls out: the spec's content, unless a rollback command overrides it."""
    override = rollout.override
    if override is not None:
        # The rollback's own record once written; until then the record it copies.
        recorded = revisions.get(override.revision) or revisions.get(override.rollback_of)
        if recorded is not None:
            return recorded
    return content_of(spec)


def select_revision(
    rollout: Rollout,
    spec: ReleaseSpec,
    revisions: Mapping[int, RevisionContent],
    now: datetime,
    events: list[Event],
) -> Rollout:
    """Every change of content is a new revision; it supersedes whatever is in flight."""
    rollout = _keep_override(rollout, spec, revisions, events)
    content = revision_content(rollout, spec, revisions)
    new_hash = content.hash
    if rollout.revision and new_hash == rollout.revision_hash:
        return rollout
    if rollout.has_stable and new_hash == rollout.stable_hash:
        rollout = rollout.finish("Superseded", reasons.REVERTED_TO_STABLE, now)
        events.append(
            Event(
                "Normal",
                reasons.REVERTED,
                f"spec matches stable revision {rollout.stable_revision} again: restoring it",
            )
        )
        return replace(
            rollout,
            phase=Phase.PROMOTING,
            reason=reasons.REVERTED,
            revision=rollout.stable_revision,
            revision_hash=rollout.stable_hash,
            version=rollout.stable_version,
            attempt=1,
            canary_weight=100,
            current_step=len(spec.steps),
            phase_since=now,
            unready_since=None,
        )
    return start_revision(rollout, spec, content, now, events)


def _keep_override(
    rollout: Rollout, spec: ReleaseSpec, revisions: Mapping[int, RevisionContent], events: list[Event]
) -> Rollout:
    """A rollback holds while the spec's content is the one it overrode; a new spec content ends it."""
    override = rollout.override
    if override is None:
        return rollout
    if override.spec_hash != content_of(spec).hash:
        events.append(
            Event(
                "Normal",
                reasons.OVERRIDE_ENDED,
                f"the spec's content changed: the rollback to revision {override.rollback_of} "
                "no longer stands in for it",
            )
        )
        return replace(rollout, override=None)
    if override.revision not in revisions and override.rollback_of not in revisions:
        events.append(
            Event(
                "Warning",
                reasons.OVERRIDE_ENDED,
                f"the records of revisions {override.revision} and {override.rollback_of} are gone: "
                "rolling out the spec's content",
            )
        )
        return replace(rollout, override=None)
    return rollout


def start_revision(
    rollout: Rollout,
    spec: ReleaseSpec,
    content: RevisionContent,
    now: datetime,
    events: list[Event],
    rollback_of: int | None = None,
) -> Rollout:
    """A new revision number for `content`; what was in flight is superseded."""
    reason = reasons.NEW_REVISION if rollback_of is None else reasons.ROLLBACK_REQUESTED
    if rollout.phase in PROMOTED:
        # The stable Deployments already run the superseded revision: it becomes the baseline.
        rollout = replace(
            rollout,
            stable_revision=rollout.revision,
            stable_hash=rollout.revision_hash,
            stable_version=rollout.version,
        )
    if rollout.phase is Phase.ROLLING_BACK:
        rollout = rollout.finish("RolledBack", rollout.reason, now, rollout.message)
    elif rollout.revision:
        rollout = rollout.finish("Superseded", reason, now)
    number = max(rollout.latest_revision, rollout.revision) + 1
    origin = "detected" if rollback_of is None else f"rolls back to the content of revision {rollback_of}"
    events.append(Event("Normal", reasons.NEW_REVISION, f"revision {number} ({content.version}) {origin}"))
    started = rollout.start(
        number, 1, content.version, content.hash, now, spec.revision_history_limit, rollback_of
    )
    return replace(started, reason=reason)


def rollback_target(
    rollout: Rollout, value: str, revisions: Mapping[int, RevisionContent]
) -> tuple[int, RevisionContent] | str:
    """The revision `shepherd.dev/rollback` names, or why the command is ignored.

    `previous` is the latest Succeeded revision in status.history whose recorded content differs from
    the stable revision's: the stable revision before the current one.
    """
    wanted = value.strip().lower()
    if wanted == "previous":
        for entry in reversed(rollout.history):
            content = revisions.get(entry.revision)
            if entry.result == "Succeeded" and content is not None and content.hash != rollout.stable_hash:
                return entry.revision, content
        return "ignored: no earlier succeeded revision is recorded to roll back to"
    if not wanted.isdigit():
        return f"ignored: {value!r} is neither previous nor a revision number"
    number = int(wanted)
    if not 1 <= number <= rollout.latest_revision:
        return f"ignored: there is no revision {number}; the latest is {rollout.latest_revision}"
    content = revisions.get(number)
    if content is None:
        kept = ", ".join(str(n) for n in sorted(revisions)) or "none"
        return (
            f"ignored: revision {number} is no longer recorded (rollback.revisionHistoryLimit); "
            f"recorded revisions: {kept}"
        )
    if content.hash == rollout.stable_hash and rollout.phase in (Phase.SUCCEEDED, Phase.ROLLED_BACK):
        return f"ignored: revision {number}'s content already serves all traffic"
    if content.hash == rollout.stable_hash:
        return (
            f"ignored: revision {number}'s content is the stable revision's: shepherd.dev/abort returns to it"
        )
    if content.hash == rollout.revision_hash:
        hint = "shepherd.dev/retry starts it again" if rollout.phase in STALLED else "it is in flight"
        return f"ignored: revision {number}'s content is the current revision {rollout.revision}'s: {hint}"
    return number, content


def revision_records(
    release: ReleaseObject,
    rollout: Rollout,
    spec: ReleaseSpec,
    content: RevisionContent,
    observed: Observations,
) -> list[Action]:
    actions: list[Action] = []
    if (
        rollout.revision
        and rollout.revision not in observed.revisions
        and rollout.revision_hash == content.hash
    ):
        # The plan goes with the revision it was written for; a rollback's content has a plan of its own.
        plan = spec.plan if rollout.override is None else None
        actions.append(RecordRevision(revision_record(release, rollout.revision, content, plan)))
    retained = retained_revisions(rollout, spec, observed)
    for number in sorted(observed.revisions):
        if number not in retained:
            actions.append(DeleteRevision(revision_record_name(release.name, number)))
    return actions


def retained_revisions(rollout: Rollout, spec: ReleaseSpec, observed: Observations) -> set[int]:
    """The newest revisionHistoryLimit recorded revisions, and always the current and stable ones."""
    newest = sorted(observed.revisions, reverse=True)[: spec.revision_history_limit]
    return {*newest, rollout.revision, rollout.stable_revision}


def revision_record_name(release: str, number: int) -> str:
    return f"{release}-{number}"


def revision_record(
    release: ReleaseObject, number: int, content: RevisionContent, plan: Plan | None = None
) -> dict[str, Any]:
    """The revision's ControllerRevision: its content, and beside it (not part of its hash) its plan."""
    data = content.to_dict()
    if plan is not None:
        data["plan"] = plan.to_dict()
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": revision_record_name(release.name, number),
            "namespace": release.namespace,
            "labels": {
                INSTANCE_LABEL: release.name,
                MANAGED_BY_LABEL: MANAGED_BY,
                REVISION_LABEL: str(number),
            },
            "annotations": {REVISION_HASH_ANNOTATION: content.hash},
            "ownerReferences": [owner_reference(release.ref)],
        },
        "revision": number,
        "data": data,
    }
