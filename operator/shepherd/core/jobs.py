"""Jobs the operator runs for a revision (job gates, migrations): names, manifests, outcomes, clean-up.

A Job is named after the Release, what it is for and the revision's attempt, so a retry runs it
again under a new name while the failed run stays readable with `kubectl logs job/<name>`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shepherd.core.workloads import (
    GROUP,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    REVISION_LABEL,
    ReleaseRef,
    owner_reference,
)

PURPOSE_LABEL = f"{GROUP}/job-for"  # "gate-<name>", "migrate-<name>", "rollback-<name>"
MAX_NAME = 63  # the job controller puts the Job's name in a label of its pods

JobState = Literal["Missing", "Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class JobOutcome:
    state: JobState
    detail: str = ""  # the job controller's message for a finished Job


def job_name(release: str, purpose: str, revision: int, attempt: int) -> str:
    """`<release>-<purpose>-r<revision>[-a<attempt>]`, shortened with a hash when too long."""
    name = f"{release}-{purpose}-r{revision}" + (f"-a{attempt}" if attempt > 1 else "")
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - len(digest) - 1].rstrip('-')}-{digest}"


def job_manifest(
    release: ReleaseRef, name: str, purpose: str, revision: int, template: Mapping[str, Any]
) -> dict[str, Any]:
    """The Job from a JobTemplateSpec, owned by the Release and labelled so the operator finds it."""
    metadata = template.get("metadata") or {}
    labels = {
        **(metadata.get("labels") or {}),
        INSTANCE_LABEL: release.name,
        MANAGED_BY_LABEL: MANAGED_BY,
        REVISION_LABEL: str(revision),
        PURPOSE_LABEL: purpose,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": release.namespace,
            "labels": labels,
            "annotations": dict(metadata.get("annotations") or {}),
            "ownerReferences": [owner_reference(release)],
        },
        "spec": _restart_never_by_default(template.get("spec") or {}),
    }


def _restart_never_by_default(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A pod's restartPolicy defaults to Always, which the API server refuses in a Job."""
    pod_template = spec.get("template") or {}
    pod = pod_template.get("spec") or {}
    if "restartPolicy" in pod:
        return dict(spec)
    return {**spec, "template": {**pod_template, "spec": {**pod, "restartPolicy": "Never"}}}


def job_outcome(job: Mapping[str, Any] | None) -> JobOutcome:
    """What the job controller reports: finished only once it sets the Complete or Failed condition."""
    if job is None:
        return JobOutcome("Missing")
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return JobOutcome("Succeeded", str(condition.get("message") or ""))
        if condition.get("type") == "Failed":
            reason, message = condition.get("reason") or "", condition.get("message") or ""
            return JobOutcome("Failed", ": ".join(part for part in (reason, message) if part))
    return JobOutcome("Running")


def stale_jobs(jobs: Mapping[str, Mapping[str, Any]], retained: Collection[int]) -> list[str]:
    """Owned Jobs of revisions no longer retained, to delete with their pods."""
    stale = []
    for name, job in sorted(jobs.items()):
        revision = ((job.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL, "")
        if revision.isdigit() and int(revision) not in retained:
            stale.append(name)
    return stale
