"""Revisions: every change of content is a new one, recorded as a ControllerRevision."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from shepherd.core.actions import Action, DeleteRevision, Event, RecordRevision
from shepherd.core.model import Observations, ReleaseObject
from shepherd.core.spec import ReleaseSpec, RevisionContent
from shepherd.core.status import PROMOTED, Phase, Rollout
from shepherd.core.workloads import (
    GROUP,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    REVISION_LABEL,
    owner_reference,
)

REVISION_HASH_ANNOTATION = f"{GROUP}/content-hash"


def select_revision(
    rollout: Rollout, spec: ReleaseSpec, content: RevisionContent, now: datetime, events: list[Event]
) -> Rollout:
    """Every change of content is a new revision; it supersedes whatever is in flight."""
    new_hash = content.hash
    if rollout.revision and new_hash == rollout.revision_hash:
        return rollout
    limit = spec.revision_history_limit
    if rollout.has_stable and new_hash == rollout.stable_hash:
        rollout = rollout.finish("Superseded", "RevertedToStable", now)
        events.append(
            Event(
                "Normal",
                "Reverted",
                f"spec matches stable revision {rollout.stable_revision} again: restoring it",
            )
        )
        return replace(
            rollout,
            phase=Phase.PROMOTING,
            reason="Reverted",
            revision=rollout.stable_revision,
            revision_hash=rollout.stable_hash,
            version=rollout.stable_version,
            attempt=1,
            canary_weight=100,
            current_step=len(spec.steps),
            phase_since=now,
            unready_since=None,
        )
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
        rollout = rollout.finish("Superseded", "NewRevision", now)
    number = max(rollout.latest_revision, rollout.revision) + 1
    events.append(Event("Normal", "NewRevision", f"revision {number} ({content.version}) detected"))
    return rollout.start(number, 1, content.version, content.hash, now, limit)


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
        actions.append(RecordRevision(revision_record(release, rollout.revision, content)))
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


def revision_record(release: ReleaseObject, number: int, content: RevisionContent) -> dict[str, Any]:
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
        "data": content.to_dict(),
    }
