"""What the core asks the shell to do: plain data, applied in order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ApplyDeployment:
    """Create the Deployment, or bring the live one to this manifest's spec, labels and annotations."""

    manifest: Mapping[str, Any]
    exists: bool

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class DeleteDeployment:
    name: str


@dataclass(frozen=True)
class ApplyConfigMap:
    """Create a revision's immutable ConfigMap; one that exists already holds the same content (its name)."""

    manifest: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class DeleteConfigMap:
    name: str


@dataclass(frozen=True)
class RecordRevision:
    """Store a revision's content as an apps/v1 ControllerRevision owned by the Release."""

    manifest: Mapping[str, Any]


@dataclass(frozen=True)
class DeleteRevision:
    name: str


@dataclass(frozen=True)
class CreateJob:
    """Run a Job; one that exists already is left as it is (Jobs are named per revision and attempt)."""

    manifest: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class DeleteJob:
    """Delete a Job and its pods."""

    name: str


@dataclass(frozen=True)
class RemoveAnnotations:
    """Consume manual commands, after the status write that acknowledges them; an annotation whose value
    is no longer the one in `values` is a new command and stays."""

    keys: tuple[str, ...]
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApplyService:
    """Create a stable or canary Service Shepherd manages for Gateway API routing (one that exists is it)."""

    manifest: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class PatchRoute:
    """JSON-patch an HTTPRoute (weights, Shepherd's header rules) if it is still at `resource_version`."""

    namespace: str
    name: str
    resource_version: str
    ops: tuple[Mapping[str, Any], ...]


Action = (
    ApplyDeployment
    | DeleteDeployment
    | ApplyConfigMap
    | DeleteConfigMap
    | RecordRevision
    | DeleteRevision
    | CreateJob
    | DeleteJob
    | RemoveAnnotations
    | ApplyService
    | PatchRoute
)


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
