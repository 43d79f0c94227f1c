"""kstatus' verdict on a custom resource: what the health checks of Flux's `wait: true` read.

A port of the generic rules of sigs.k8s.io/cli-utils, package pkg/kstatus/status
(https://github.com/kubernetes-sigs/cli-utils/tree/master/pkg/kstatus/status, read at commit
5895ad6c17dd06b99c1e5c8af17e2b12a3504fad). A Release is a kind kstatus has no specific rules for, so only
these apply, in this order:

1. status.go `Compute` calls generic.go `checkGenericProperties`:
   - `metadata.deletionTimestamp` set: Terminating.
   - `checkGeneration`: when both `metadata.generation` and `status.observedGeneration` exist and differ,
     InProgress (reason LatestGenerationNotObserved). A missing observedGeneration skips this check.
   - the conditions in list order: the first `Reconciling=True` gives InProgress, the first `Stalled=True`
     gives Failed, whichever comes first.
2. `GetLegacyConditionsFn` (core.go) knows only built-in kinds (Deployment, Job, ...): never a Release.
3. status.go `checkReadyCondition`: `Ready=True` gives Current; `Ready=False` and `Ready=Unknown` both give
   InProgress (kstatus cannot tell a failing resource from one making progress without Stalled).
4. Otherwise Current ("Resource is current"), which includes a resource with no status at all: a Release
   its operator has not written to yet reads Current (cluster-api#9299 and flux2#4346 discuss this race).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    IN_PROGRESS = "InProgress"
    FAILED = "Failed"
    CURRENT = "Current"
    TERMINATING = "Terminating"


@dataclass(frozen=True)
class Result:
    status: Status
    message: str


def compute(obj: Mapping[str, Any]) -> Result:
    """`status.Compute` for a kind without specific rules."""
    return generic_properties(obj) or ready_condition(obj) or Result(Status.CURRENT, "Resource is current")


def generic_properties(obj: Mapping[str, Any]) -> Result | None:
    """`checkGenericProperties`: deletion, then the generation, then Reconciling or Stalled."""
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return Result(Status.TERMINATING, "Resource scheduled for deletion")
    unobserved = generation(obj)
    if unobserved is not None:
        return unobserved
    for condition in conditions(obj):
        if condition.get("type") == "Reconciling" and condition.get("status") == "True":
            return Result(Status.IN_PROGRESS, str(condition.get("message", "")))
        if condition.get("type") == "Stalled" and condition.get("status") == "True":
            return Result(Status.FAILED, str(condition.get("message", "")))
    return None


def generation(obj: Mapping[str, Any]) -> Result | None:
    """`checkGeneration`: InProgress while the controller has not observed the latest generation."""
    wanted = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    if wanted is None or observed is None:
        return None
    # kstatus reads both with NestedInt64, which fails on anything but an integer.
    if not isinstance(wanted, int) or not isinstance(observed, int):
        raise TypeError(f"generation {wanted!r} and observedGeneration {observed!r} must be integers")
    if observed == wanted:
        return None
    message = f"{obj.get('kind')} generation is {wanted}, but latest observed generation is {observed}"
    return Result(Status.IN_PROGRESS, message)


def ready_condition(obj: Mapping[str, Any]) -> Result | None:
    """`checkReadyCondition`: the first Ready condition with a known status decides."""
    for condition in conditions(obj):
        if condition.get("type") != "Ready":
            continue
        if condition.get("status") == "True":
            return Result(Status.CURRENT, "Resource is Ready")
        if condition.get("status") in ("False", "Unknown"):
            return Result(Status.IN_PROGRESS, str(condition.get("message", "")))
    return None


def conditions(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])
