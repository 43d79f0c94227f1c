"""Versioned config: each revision's ConfigMaps, named by their content, and the templates that use them.

Config entry `shop-config` becomes the immutable ConfigMap `shop-config-<hash of its content>`, and the
pod templates of the same revision are rewritten to name it. So a revision's Deployments always read
that revision's config: the canary the new one, the stable the old one, and a rollback that gives the
stable Deployments an older template gives them the older config with it. A ConfigMap stays while a
retained revision or a live Deployment names it, and is deleted after.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from shepherd.core.actions import ApplyConfigMap, DeleteConfigMap
from shepherd.core.spec import ConfigEntry, RevisionContent
from shepherd.core.workloads import (
    GROUP,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    DesiredDeployment,
    ReleaseRef,
    WorkloadPlan,
    owner_reference,
)

CONFIG_HASH_LABEL = f"{GROUP}/config-hash"
CONFIG_NAME_ANNOTATION = f"{GROUP}/config-name"


def rendered(content: RevisionContent) -> RevisionContent:
    """The content with its pod templates naming its hashed ConfigMaps instead of its config entries."""
    if not content.config:
        return content
    names = {entry.name: entry.hashed_name for entry in content.config}
    return replace(
        content, templates={name: rewrite_template(t, names) for name, t in content.templates.items()}
    )


def rewrite_template(template: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """A copy of a PodTemplateSpec with every ConfigMap reference in `names` renamed; others left alone."""
    rewritten = copy.deepcopy(dict(template))
    for reference in _references(rewritten):
        reference["name"] = names.get(reference["name"], reference["name"])
    return rewritten


def referenced_config_maps(template: Mapping[str, Any], *, required_only: bool = False) -> set[str]:
    """The ConfigMaps a PodTemplateSpec names; with `required_only`, those its pods cannot start without."""
    return {
        reference["name"]
        for reference in _references(template)
        if not (required_only and reference.get("optional") is True)
    }


def _references(template: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every object of a pod template that names a ConfigMap: volumes (plain and projected), envFrom, env."""
    spec = template.get("spec")
    if not isinstance(spec, Mapping):
        return
    for volume in _objects(spec.get("volumes")):
        yield from _named(volume.get("configMap"))
        projected = volume.get("projected")
        if isinstance(projected, Mapping):
            for source in _objects(projected.get("sources")):
                yield from _named(source.get("configMap"))
    for kind in ("initContainers", "containers"):
        for container in _objects(spec.get(kind)):
            for source in _objects(container.get("envFrom")):
                yield from _named(source.get("configMapRef"))
            for variable in _objects(container.get("env")):
                value_from = variable.get("valueFrom")
                if isinstance(value_from, Mapping):
                    yield from _named(value_from.get("configMapKeyRef"))


def _objects(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, Mapping))


def _named(reference: Any) -> Iterator[dict[str, Any]]:
    if isinstance(reference, dict) and isinstance(reference.get("name"), str):
        yield reference


def render_config_map(release: ReleaseRef, entry: ConfigEntry) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": entry.hashed_name,
            "namespace": release.namespace,
            "labels": {
                INSTANCE_LABEL: release.name,
                MANAGED_BY_LABEL: MANAGED_BY,
                CONFIG_HASH_LABEL: entry.content_hash,
            },
            "annotations": {CONFIG_NAME_ANNOTATION: entry.name},
            "ownerReferences": [owner_reference(release)],
        },
        # Content-addressed: a change is a new name, never an edit, so nothing may edit it.
        "immutable": True,
    }
    if entry.data:
        manifest["data"] = dict(entry.data)
    if entry.binary_data:
        manifest["binaryData"] = dict(entry.binary_data)
    return manifest


def contents_in_use(
    desired: Iterable[DesiredDeployment],
    revisions: Mapping[int, RevisionContent | None],
) -> list[RevisionContent]:
    """The contents whose templates the desired Deployments run (a kept live template needs nothing)."""
    running = {want.revision for want in desired if want.template is not None}
    return [content for number, content in revisions.items() if number in running and content is not None]


def with_config(
    plan: WorkloadPlan, release: ReleaseRef, contents: Iterable[RevisionContent], live: Collection[str]
) -> WorkloadPlan:
    """The plan with the missing ConfigMaps of `contents` created first: before any Deployment names them."""
    creates: dict[str, ApplyConfigMap] = {}
    for content in contents:
        for entry in content.config:
            if entry.hashed_name not in live:
                creates.setdefault(entry.hashed_name, ApplyConfigMap(render_config_map(release, entry)))
    if not creates:
        return plan
    return replace(
        plan,
        actions=(*creates.values(), *plan.actions),
        converged=False,
        waiting_on=(*(f"ConfigMap {name} to be created" for name in creates), *plan.waiting_on),
    )


def unused_config_maps(
    retained: Iterable[RevisionContent],
    config_maps: Mapping[str, Mapping[str, Any]],
    deployments: Mapping[str, Mapping[str, Any]],
) -> list[DeleteConfigMap]:
    """Owned config ConfigMaps that no retained revision and no live Deployment names any more."""
    kept = {entry.hashed_name for content in retained for entry in content.config}
    for deployment in deployments.values():
        template = (deployment.get("spec") or {}).get("template")
        if isinstance(template, Mapping):
            kept |= referenced_config_maps(template)
    return [
        DeleteConfigMap(name)
        for name, config_map in sorted(config_maps.items())
        if name not in kept and CONFIG_HASH_LABEL in ((config_map.get("metadata") or {}).get("labels") or {})
    ]
