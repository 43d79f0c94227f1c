"""Stories on the real API server: migration Jobs finished by the real job controller (one completes, one
fails), a ReleasePolicy freeze, and a rollback to a recorded revision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from story import Story, quickstart_release

HELD_CANARY = {"strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}}}
STABLE_IMAGES = {"shop-api": "ghcr.io/example/shop-api:1.0.0", "shop-web": "ghcr.io/example/shop-web:1.0.0"}


def with_migration(version: str, behaviour: str | None = None, **spec: Any) -> dict[str, Any]:
    metadata = {"annotations": {"kubelet.shepherd.dev/behaviour": behaviour}} if behaviour else {}
    pod = {"metadata": metadata, "spec": {"containers": [{"name": "migrate", "image": f"migrate:{version}"}]}}
    migration = {"name": "schema", "template": {"spec": {"backoffLimit": 0, "template": pod}}}
    return quickstart_release(version, migrations=[migration], **spec)


def first_release(story: Story) -> None:
    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)


def test_a_migration_completed_by_the_job_controller_comes_before_the_canary(story: Story) -> None:
    first_release(story)
    story.apply(with_migration("1.1.0", **HELD_CANARY))

    story.wait("the canary", lambda s: s.get("phase") == "Paused" and s.get("canaryWeight") == 25)
    job = story.batch.read_namespaced_job_status("shop-migrate-schema-r2", story.namespace)
    conditions = {c.type: c.status for c in job.status.conditions or []}
    assert conditions.get("Complete") == "True", "the real job controller saw the pod succeed"
    canary = story.apps.read_namespaced_deployment("shop-api-canary", story.namespace)
    assert job.status.completion_time <= canary.metadata.creation_timestamp, "no traffic before migration"
    entry = story.status()["history"][-1]
    assert [m["name"] for m in entry["migrations"]] == ["schema"]


def test_a_failed_migration_job_moves_no_traffic(story: Story) -> None:
    first_release(story)
    story.apply(with_migration("1.1.0", behaviour="fail"))

    status = story.wait_phase("Failed", revision=2)
    assert status["history"][-1]["reason"] == "MigrationFailed"
    job = story.batch.read_namespaced_job_status("shop-migrate-schema-r2", story.namespace)
    failed = {c.type: c.reason for c in job.status.conditions or [] if c.status == "True"}
    assert failed.get("Failed") == "BackoffLimitExceeded", failed
    assert story.images() == STABLE_IMAGES and story.replicas() == {"shop-api": 4, "shop-web": 2}


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def freeze(story: Story, start: datetime, end: datetime) -> None:
    policy = {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": f"freeze-{story.namespace}"},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": story.namespace}},
            "freezes": [{"start": stamp(start), "end": stamp(end), "reason": "year-end change freeze"}],
        },
    }
    story.kubectl("apply", "-f", "-", input=yaml.safe_dump(policy))


def test_a_release_policy_freeze_holds_the_canary_until_it_ends(story: Story) -> None:
    first_release(story)
    story.apply(quickstart_release("1.1.0"))
    story.wait("the canary", lambda s: s.get("revision") == 2 and s.get("canaryWeight", 0) >= 25)
    now = datetime.now(UTC)
    try:
        freeze(story, now - timedelta(minutes=1), now + timedelta(hours=1))
        held = story.wait("the freeze", lambda s: s.get("reason") == "Freeze")
        assert held["phase"] == "Paused"
        hold = held["history"][-1]["holds"][0]
        assert hold["freeze"] == "year-end change freeze"

        freeze(story, now - timedelta(hours=1), now - timedelta(seconds=1))
        story.wait_phase("Succeeded", revision=2)
    finally:
        story.kubectl("delete", "releasepolicy", f"freeze-{story.namespace}", "--ignore-not-found")


def test_rollback_to_a_recorded_revision_restores_its_images(story: Story) -> None:
    fast = {"strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}}
    first_release(story)
    for revision, version in ((2, "1.1.0"), (3, "1.2.0")):
        story.apply(quickstart_release(version, **fast))
        story.wait_phase("Paused", revision=revision)
        story.kubectl("release", "promote", "shop", "--full")
        story.wait_phase("Succeeded", revision=revision)

    story.kubectl("release", "rollback", "shop", "--to-revision", "1")
    story.wait_phase("Paused", revision=4)
    assert story.images()["shop-api-canary"] == "ghcr.io/example/shop-api:1.0.0"
    story.kubectl("release", "promote", "shop", "--full")
    status = story.wait_phase("Succeeded", revision=4)
    assert story.images() == STABLE_IMAGES
    assert (status["history"][-1]["revision"], status["history"][-1]["rollbackOf"]) == (4, 1)
    revision = story.apps.read_namespaced_controller_revision("shop-4", story.namespace)
    assert revision.data["version"] == "1.0.0"
