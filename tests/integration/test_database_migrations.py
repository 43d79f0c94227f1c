"""Stories of database migrations: the migration Job runs before any traffic moves, a failed one moves
nothing, a retry runs it again, and an abort runs the down migration once the canary is gone."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from cluster import Cluster, quickstart_release

from helpers import wait_until
from shepherd.lab.kubelet import KubeletSimulator
from shepherd.runner import OperatorThread

STABLE = {"shop-api": "ghcr.io/example/shop-api:1.0.0", "shop-web": "ghcr.io/example/shop-web:1.0.0"}
# A canary that stays at 25% until promoted, so the story can look at it.
HELD_CANARY = {"strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}}}


def job(image: str, behaviour: str | None = None) -> dict[str, Any]:
    metadata = {"annotations": {"kubelet.shepherd.dev/behaviour": behaviour}} if behaviour else {}
    pod = {"metadata": metadata, "spec": {"containers": [{"name": "migrate", "image": image}]}}
    return {"spec": {"backoffLimit": 0, "template": pod}}


def with_migration(version: str, behaviour: str | None = None, **spec: Any) -> dict[str, Any]:
    migration = {
        "name": "schema",
        "template": job(f"ghcr.io/example/shop-migrate:{version}", behaviour),
        "rollbackTemplate": job(f"ghcr.io/example/shop-migrate:{version}-down"),
    }
    return quickstart_release(version, migrations=[migration], **spec)


def stable(cluster: Cluster) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)


def get_job(cluster: Cluster, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(cluster.kubectl("get", "job", name, "-o", "json").stdout)
    return found


def job_if_any(cluster: Cluster, name: str) -> dict[str, Any] | None:
    listed = json.loads(cluster.kubectl("get", "jobs", "-o", "json").stdout)["items"]
    return next((job for job in listed if job["metadata"]["name"] == name), None)


def moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_the_migration_job_completes_before_the_canary_starts(
    cluster: Cluster, kubelet: KubeletSimulator, shepherd: OperatorThread
) -> None:
    stable(cluster)
    kubelet.set_behaviour("default", "shop-migrate-schema-r2", "running", kind="Job")
    cluster.apply(with_migration("1.1.0", **HELD_CANARY))
    status = cluster.wait_status("the migration running", lambda s: "migration 1/1 schema" in s["message"])
    assert status["phase"] == "Migrating"
    assert status["message"].startswith(
        "revision 2 (1.1.0): migration 1/1 schema: job/shop-migrate-schema-r2"
    )
    # The pass that records the migration Running creates its Job after the status write.
    migration = wait_until(
        lambda: job_if_any(cluster, "shop-migrate-schema-r2"), message="the migration's Job"
    )
    assert (
        migration["spec"]["template"]["spec"]["containers"][0]["image"]
        == "ghcr.io/example/shop-migrate:1.1.0"
    )
    assert migration["metadata"]["ownerReferences"][0]["name"] == "shop"
    cluster.reconciled_after(shepherd, lambda: cluster.kubectl("annotate", "release", "shop", "tick=1"))
    assert cluster.status()["phase"] == "Migrating"
    assert cluster.images() == STABLE, "no canary while the migration runs"

    kubelet.set_behaviour("default", "shop-migrate-schema-r2", "succeed", kind="Job")
    status = cluster.wait_phase("Paused", revision=2)
    canary = cluster.deployments()["shop-api-canary"]
    completed = get_job(cluster, "shop-migrate-schema-r2")["status"]["completionTime"]
    assert moment(completed) <= moment(canary["metadata"]["creationTimestamp"])
    record = next(h for h in status["history"] if h["revision"] == 2)["migrations"][0]
    assert (record["job"], record["state"]) == ("shop-migrate-schema-r2", "Succeeded")
    reasons = {e["reason"] for e in cluster.events()}
    assert {"Migrating", "MigrationStarted", "MigrationSucceeded"} <= reasons


def test_a_failed_migration_fails_the_revision_and_moves_no_traffic(cluster: Cluster) -> None:
    stable(cluster)
    cluster.apply(with_migration("1.1.0", behaviour="fail"))
    status = cluster.wait_phase("Failed", revision=2)
    assert status["reason"] == "MigrationFailed"
    assert "job/shop-migrate-schema-r2 failed: BackoffLimitExceeded" in status["message"]
    assert "kubectl logs job/shop-migrate-schema-r2" in status["message"]
    assert cluster.images() == STABLE and cluster.replicas() == {"shop-api": 4, "shop-web": 2}
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "MigrationFailed"
    cluster.kubectl("wait", "--for=condition=Stalled", "release/shop", "--timeout=30s")


def test_a_retry_runs_the_migration_again(cluster: Cluster, kubelet: KubeletSimulator) -> None:
    stable(cluster)
    kubelet.set_behaviour("default", "shop-migrate-schema-r2", "fail", kind="Job")
    cluster.apply(with_migration("1.1.0"))
    cluster.wait_phase("Failed", revision=2)
    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/retry=true")
    status = cluster.wait_phase("Succeeded", revision=2)
    assert status["attempt"] == 2
    rerun = get_job(cluster, "shop-migrate-schema-r2-a2")
    assert any(c["type"] == "Complete" for c in rerun["status"]["conditions"])
    failed = get_job(cluster, "shop-migrate-schema-r2")
    assert any(c["type"] == "Failed" for c in failed["status"]["conditions"]), "the failed run stays readable"
    assert cluster.images()["shop-api"] == "ghcr.io/example/shop-api:1.1.0"


def test_an_abort_runs_the_down_migration_once_the_canary_is_gone(cluster: Cluster) -> None:
    stable(cluster)
    cluster.apply(with_migration("1.1.0", **HELD_CANARY))
    cluster.wait_phase("Paused", revision=2)
    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/abort=true")
    status = cluster.wait_phase("RolledBack", revision=2)
    down = get_job(cluster, "shop-rollback-schema-r2")
    assert (
        down["spec"]["template"]["spec"]["containers"][0]["image"]
        == "ghcr.io/example/shop-migrate:1.1.0-down"
    )
    assert any(c["type"] == "Complete" for c in down["status"]["conditions"])
    entry = next(h for h in status["history"] if h["revision"] == 2)
    assert [(r["job"], r["state"]) for r in entry["downMigrations"]] == [
        ("shop-rollback-schema-r2", "Succeeded")
    ]
    assert cluster.images() == STABLE and "shop-api-canary" not in cluster.deployments()
