"""The phase machine, driven through time by the pure simulation in simulation.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from simulation import ABORT, PROMOTE, RETRY, T0, World, canary_at, container, release_spec, succeeded

from shepherd.core import Observations, decide
from shepherd.core.actions import ApplyDeployment, DeleteDeployment, RecordRevision, RemoveAnnotations

# --- first revision ----------------------------------------------------------------------------


def test_first_revision_deploys_all_replicas_without_a_canary() -> None:
    world = World(release_spec("1.0.0"))
    world.unready.update({"shop-api", "shop-web"})
    world.settle()
    assert world.phase == "Progressing"
    assert world.replicas("shop-api") == 4 and world.replicas("shop-web") == 2
    assert not any(name.endswith("-canary") for name in world.deployments)
    assert "first revision" in world.status["message"]


def test_first_revision_bakes_then_succeeds_and_becomes_stable() -> None:
    world = World(release_spec("1.0.0"))
    decision = world.settle()
    assert world.phase == "Baking"
    assert decision.wake_at == T0 + timedelta(minutes=5)
    world.advance(timedelta(minutes=4, seconds=59))
    assert world.phase == "Baking"
    world.advance(timedelta(seconds=1))
    assert world.phase == "Succeeded"
    assert world.status["stableRevision"] == 1 and world.status["stableVersion"] == "1.0.0"
    assert world.condition("Ready")["status"] == "True"
    assert world.condition("Reconciling") is None and world.condition("Stalled") is None
    assert [h["result"] for h in world.status["history"]] == ["Succeeded"]


def test_first_revision_that_never_becomes_ready_fails_and_keeps_its_workloads() -> None:
    world = World(release_spec("1.0.0"))
    world.unready.add("shop-api")
    world.settle()
    world.advance(timedelta(minutes=9, seconds=59))
    assert world.phase == "Progressing"
    world.advance(timedelta(seconds=1))
    assert world.phase == "Failed"
    assert world.status["reason"] == "ProgressDeadlineExceeded"
    assert "nothing to roll back to" in world.status["message"]
    assert world.replicas("shop-api") == 4, "a failed first revision is held, not torn down"
    assert world.condition("Stalled")["status"] == "True"
    assert world.condition("Ready")["status"] == "False"


def test_paused_before_start_touches_nothing_until_resumed() -> None:
    world = World(release_spec("1.0.0", paused=True))
    world.settle()
    assert world.phase == "Pending"
    assert world.deployments == {}
    assert "spec.paused" in world.status["message"]
    world.set_spec(release_spec("1.0.0", paused=False))
    world.settle()
    assert world.phase in ("Progressing", "Baking")
    assert world.replicas("shop-api") == 4


def test_revision_is_recorded_as_a_controller_revision() -> None:
    world = World(release_spec("1.0.0"))
    decision = world.reconcile()
    records = [a for a in decision.actions if isinstance(a, RecordRevision)]
    assert len(records) == 1
    manifest = records[0].manifest
    assert manifest["metadata"]["name"] == "shop-1"
    assert manifest["metadata"]["ownerReferences"][0]["kind"] == "Release"
    assert manifest["data"]["version"] == "1.0.0"
    assert world.revisions[1].templates["api"] == container("shop/api:1.0.0")


# --- canary ------------------------------------------------------------------------------------


def test_canary_splits_replicas_by_weight_rounding_up() -> None:
    world = canary_at(25)
    assert world.phase == "Progressing"
    assert (world.replicas("shop-api-canary"), world.replicas("shop-api")) == (1, 3)
    assert (world.replicas("shop-web-canary"), world.replicas("shop-web")) == (1, 1)
    assert world.image("shop-api-canary") == "shop/api:1.1.0"
    assert world.image("shop-api") == "shop/api:1.0.0"
    labels = world.deployments["shop-api-canary"]["spec"]["template"]["metadata"]["labels"]
    assert labels["shepherd.dev/role"] == "canary"
    assert labels["shepherd.dev/revision"] == "2"
    assert labels["app.kubernetes.io/version"] == "1.1.0"
    assert labels["app.kubernetes.io/instance"] == "shop"


def test_canary_is_ready_before_stable_shrinks() -> None:
    world = succeeded()
    world.set_spec(release_spec("1.1.0"))
    world.unready.add("shop-api-canary")
    world.settle()
    assert world.replicas("shop-api-canary") == 1
    assert world.replicas("shop-api") == 4, "stable must keep full capacity while the canary is not ready"
    assert world.replicas("shop-web") == 2
    world.unready.clear()
    world.settle()
    assert world.replicas("shop-api") == 3


def test_timed_pause_waits_its_duration_and_wakes_exactly_then() -> None:
    world = canary_at(25)
    decision = world.settle()
    assert world.status["currentStep"] == 1
    assert decision.wake_at == world.now + timedelta(minutes=1)
    assert "pause 1m, 1m left" in world.status["message"]
    world.advance(timedelta(seconds=59))
    assert world.status["canaryWeight"] == 25
    world.advance(timedelta(seconds=1))
    assert world.status["canaryWeight"] == 50


def test_indefinite_pause_waits_for_promote() -> None:
    world = canary_at(50)
    world.settle()
    assert world.phase == "Paused"
    assert world.status["reason"] == "CanaryPauseStep"
    world.advance(timedelta(days=3))
    assert world.phase == "Paused"
    assert world.condition("Ready")["status"] == "Unknown"
    world.annotations[PROMOTE] = "true"
    world.reconcile()
    assert PROMOTE not in world.annotations
    assert world.status["canaryWeight"] == 75
    commands = world.status["history"][-1]["commands"]
    assert commands[0]["action"] == "promote" and commands[0]["outcome"] == "step 4 skipped"


def test_promote_full_skips_every_step() -> None:
    world = succeeded()
    world.set_spec(release_spec("1.1.0"))
    world.annotations[PROMOTE] = "full"
    world.settle()
    assert world.phase == "Baking"
    assert world.image("shop-api") == "shop/api:1.1.0"
    assert world.replicas("shop-api") == 4
    assert "shop-api-canary" not in world.deployments


def test_promotion_keeps_the_canary_until_the_new_stable_is_ready() -> None:
    world = canary_at(50)
    world.annotations[PROMOTE] = "full"
    world.reconcile()
    world.unready.add("shop-api")
    world.settle()
    assert world.phase == "Promoting"
    assert world.image("shop-api") == "shop/api:1.1.0"
    assert world.replicas("shop-api-canary") == 2, "canary keeps serving while stable rolls out"
    world.unready.clear()
    world.settle()
    assert world.phase == "Baking"
    assert "shop-api-canary" not in world.deployments


def test_promote_during_bake_skips_the_bake() -> None:
    world = canary_at(75)
    world.settle()
    assert world.phase == "Baking"
    world.annotations[PROMOTE] = "true"
    world.settle()
    assert world.phase == "Succeeded"
    assert world.status["history"][-1]["commands"][-1]["outcome"] == "bake skipped"


def test_full_release_ends_with_new_stable_and_history() -> None:
    world = canary_at(75)
    world.run_until("Succeeded")
    assert world.status["stableRevision"] == 2
    assert world.status["canaryWeight"] == 100
    assert {n: world.image(n) for n in world.deployments} == {
        "shop-api": "shop/api:1.1.0",
        "shop-web": "shop/web:1.1.0",
    }
    assert [h["result"] for h in world.status["history"]] == ["Succeeded", "Succeeded"]


# --- abort, failure, retry ---------------------------------------------------------------------


def test_abort_mid_canary_rolls_back_to_full_stable() -> None:
    world = canary_at(25)
    world.annotations[ABORT] = "true"
    world.settle()
    assert world.phase == "RolledBack"
    assert ABORT not in world.annotations
    assert set(world.deployments) == {"shop-api", "shop-web"}
    assert world.replicas("shop-api") == 4 and world.image("shop-api") == "shop/api:1.0.0"
    assert world.status["canaryWeight"] == 0
    assert world.condition("Stalled")["reason"] == "Aborted"
    assert world.condition("Ready")["status"] == "False"
    entry = world.status["history"][-1]
    assert entry["result"] == "RolledBack" and entry["reason"] == "Aborted"
    assert entry["commands"][0]["action"] == "abort"


def test_rollback_restores_stable_capacity_before_removing_the_canary() -> None:
    world = canary_at(50)
    world.annotations[ABORT] = "true"
    world.unready.add("shop-api")
    world.settle()
    assert world.phase == "RollingBack"
    assert world.replicas("shop-api") == 4
    assert world.replicas("shop-api-canary") == 2, "canary stays until stable is back at full capacity"
    world.unready.clear()
    world.settle()
    assert world.phase == "RolledBack"
    assert "shop-api-canary" not in world.deployments


def test_abort_during_bake_restores_the_previous_template() -> None:
    world = canary_at(75)
    world.settle()
    assert world.phase == "Baking" and world.image("shop-api") == "shop/api:1.1.0"
    world.annotations[ABORT] = "true"
    world.settle()
    assert world.phase == "RolledBack"
    assert world.image("shop-api") == "shop/api:1.0.0"
    assert world.deployments["shop-api"]["metadata"]["labels"]["shepherd.dev/revision"] == "1"


def test_abort_with_nothing_in_flight_is_ignored_and_recorded() -> None:
    world = succeeded()
    world.annotations[ABORT] = "true"
    world.settle()
    assert world.phase == "Succeeded"
    assert ABORT not in world.annotations
    assert world.status["history"][-1]["commands"][0]["outcome"].startswith("ignored")
    assert any(e.reason == "Abort" and e.type == "Warning" for e in world.events)


def test_abort_of_the_first_revision_fails_without_touching_workloads() -> None:
    world = World(release_spec("1.0.0"))
    world.unready.add("shop-api")
    world.settle()
    world.annotations[ABORT] = "yes"
    world.settle()
    assert world.phase == "Failed" and world.status["reason"] == "Aborted"
    assert world.replicas("shop-api") == 4


def test_never_ready_canary_rolls_back_after_progress_deadline() -> None:
    world = succeeded(release_spec("1.0.0", progressDeadline="2m"))
    world.set_spec(release_spec("1.1.0", progressDeadline="2m"))
    world.unready.add("shop-api-canary")
    decision = world.settle()
    assert decision.wake_at == world.now + timedelta(minutes=2)
    world.advance(timedelta(minutes=2))
    assert world.phase == "RolledBack"
    assert world.status["reason"] == "ProgressDeadlineExceeded"
    assert "shop-api-canary" in world.status["message"]
    assert "shop-api-canary" not in world.deployments
    assert world.replicas("shop-api") == 4


def test_crashing_canary_rolls_back_at_once() -> None:
    world = succeeded()
    world.set_spec(release_spec("1.1.0"))
    world.crashing.add("shop-web-canary")
    world.settle()
    assert world.phase == "RolledBack"
    assert "shop-web-canary" in world.status["message"]


def test_without_automatic_rollback_a_failure_holds_until_abort() -> None:
    spec = release_spec("1.1.0", progressDeadline="1m", rollback={"automatic": False})
    world = succeeded(release_spec("1.0.0", rollback={"automatic": False}))
    world.set_spec(spec)
    world.unready.add("shop-api-canary")
    world.settle()
    world.advance(timedelta(minutes=1))
    assert world.phase == "Failed"
    assert world.replicas("shop-api-canary") == 1, "held as it is for a person to look at"
    assert "rollback.automatic is false" in world.status["message"]
    world.annotations[ABORT] = "true"
    world.settle()
    assert world.phase == "RolledBack"
    assert "shop-api-canary" not in world.deployments


def test_failed_revision_is_not_retried_until_content_changes_or_retry() -> None:
    world = canary_at(25)
    world.annotations[ABORT] = "true"
    world.settle()
    world.advance(timedelta(hours=1))
    assert world.phase == "RolledBack"
    assert "shop-api-canary" not in world.deployments
    world.annotations[RETRY] = "true"
    world.settle()
    assert world.phase == "Progressing"
    assert world.status["revision"] == 2 and world.status["attempt"] == 2
    assert world.replicas("shop-api-canary") == 1
    assert [(h["revision"], h["attempt"], h["result"]) for h in world.status["history"]] == [
        (1, 1, "Succeeded"),
        (2, 1, "RolledBack"),
        (2, 2, "InProgress"),
    ]


def test_retry_of_a_healthy_rollout_is_ignored() -> None:
    world = canary_at(25)
    world.annotations[RETRY] = "true"
    world.settle()
    assert world.status["attempt"] == 1
    assert world.status["history"][-1]["commands"][0]["outcome"].startswith("ignored")


def test_new_content_after_rollback_is_a_new_revision() -> None:
    world = canary_at(25)
    world.annotations[ABORT] = "true"
    world.settle()
    canary_at(25, world, version="1.2.0")
    assert world.status["revision"] == 3
    assert world.image("shop-api-canary") == "shop/api:1.2.0"


# --- superseding and reverting -----------------------------------------------------------------


def test_new_revision_mid_canary_supersedes_it_and_leaves_stable_alone() -> None:
    world = canary_at(50)
    world.set_spec(release_spec("1.2.0"))
    world.settle()
    assert world.status["revision"] == 3
    assert world.image("shop-api") == "shop/api:1.0.0"
    assert world.image("shop-api-canary") == "shop/api:1.2.0"
    assert world.status["history"][-2]["result"] == "Superseded"


def test_new_revision_during_bake_adopts_the_promoted_one_as_stable() -> None:
    world = canary_at(75)
    world.settle()
    assert world.phase == "Baking"
    world.set_spec(release_spec("1.2.0"))
    world.settle()
    assert world.status["stableRevision"] == 2
    assert world.image("shop-api") == "shop/api:1.1.0"
    assert world.image("shop-api-canary") == "shop/api:1.2.0"


def test_reverting_the_spec_to_stable_cancels_the_canary() -> None:
    world = canary_at(50)
    world.set_spec(release_spec("1.0.0"))
    world.settle()
    assert world.phase == "Succeeded"
    assert world.status["revision"] == 1
    assert set(world.deployments) == {"shop-api", "shop-web"}
    assert world.replicas("shop-api") == 4
    assert world.status["history"][-1]["reason"] == "RevertedToStable"


def test_scaling_is_not_a_new_revision() -> None:
    world = succeeded()
    spec = release_spec("1.0.0")
    spec["components"][0]["replicas"] = 6
    world.set_spec(spec)
    world.settle()
    assert world.phase == "Succeeded" and world.status["revision"] == 1
    assert world.replicas("shop-api") == 6


def test_declarative_pause_holds_the_weight_and_promote() -> None:
    world = canary_at(25)
    paused = release_spec("1.1.0", paused=True)
    world.set_spec(paused)
    world.advance(timedelta(minutes=5))
    assert world.phase == "Paused" and world.status["reason"] == "SpecPaused"
    assert world.status["canaryWeight"] == 25
    world.annotations[PROMOTE] = "true"
    world.settle()
    assert world.status["canaryWeight"] == 25
    assert "spec.paused" in world.status["history"][-1]["commands"][0]["outcome"]
    world.set_spec(release_spec("1.1.0"))
    world.settle()
    assert world.status["canaryWeight"] == 50


def test_component_added_and_removed_across_revisions() -> None:
    world = succeeded()
    spec = release_spec("1.1.0")
    spec["components"] = [
        spec["components"][0],
        {"name": "worker", "replicas": 2, "template": container("w:1")},
    ]
    world.set_spec(spec)
    world.settle()
    assert world.replicas("shop-worker-canary") == 1
    assert "shop-worker" not in world.deployments
    assert world.replicas("shop-web") == 2, "a component the new revision drops keeps serving until promotion"
    world.annotations[PROMOTE] = "full"
    world.settle()
    assert set(world.deployments) == {"shop-api", "shop-worker"}
    assert world.replicas("shop-worker") == 2


def test_deleted_deployment_is_recreated() -> None:
    world = succeeded()
    del world.deployments["shop-web"]
    world.settle()
    assert world.replicas("shop-web") == 2


# --- spec errors, status bookkeeping -----------------------------------------------------------


def test_invalid_spec_stalls_without_touching_workloads_and_resumes_when_fixed() -> None:
    world = canary_at(25)
    before = {n: world.replicas(n) for n in world.deployments}
    bad = release_spec("1.1.0")
    bad["components"][0]["replicas"] = 0
    world.set_spec(bad)
    decision = world.settle()
    assert decision.actions == ()
    assert {n: world.replicas(n) for n in world.deployments} == before
    assert world.condition("Stalled")["reason"] == "InvalidSpec"
    assert "spec.components[0].replicas" in world.condition("Stalled")["message"]
    assert world.phase == "Progressing", "the rollout state is kept for when the spec is fixed"
    assert sum(e.reason == "InvalidSpec" for e in world.events) == 1
    world.set_spec(release_spec("1.1.0"))
    world.settle()
    assert world.condition("Stalled") is None
    assert world.condition("Reconciling")["status"] == "True"


def test_observed_generation_follows_the_spec() -> None:
    world = succeeded()
    world.set_spec(release_spec("1.1.0"))
    world.settle()
    assert world.status["observedGeneration"] == world.generation
    assert all(c["observedGeneration"] == world.generation for c in world.status["conditions"])


def test_condition_transition_time_moves_only_when_status_changes() -> None:
    world = canary_at(25)
    first = world.condition("Ready")["lastTransitionTime"]
    world.advance(timedelta(minutes=1))
    assert world.status["canaryWeight"] == 50
    assert world.condition("Ready")["lastTransitionTime"] == first


def test_deciding_again_on_the_same_state_changes_nothing() -> None:
    world = canary_at(25)
    world.settle()
    again = decide(world.release(), Observations(world.deployments, world.revisions), world.now)
    assert again.actions == ()
    assert again.status == world.status
    assert again.events == ()


def test_revision_records_are_trimmed_but_stable_and_current_are_kept() -> None:
    world = succeeded(release_spec("1.0.0", rollback={"revisionHistoryLimit": 2}))
    for minor in range(1, 5):
        world.set_spec(release_spec(f"1.{minor}.0", rollback={"revisionHistoryLimit": 2}))
        world.annotations[PROMOTE] = "full"
        world.run_until("Succeeded")
    assert sorted(world.revisions) == [4, 5]
    assert len(world.status["history"]) == 2


def test_commands_are_consumed_once() -> None:
    world = canary_at(50)
    world.annotations[PROMOTE] = "true"
    decision = world.reconcile()
    removals = [a for a in decision.actions if isinstance(a, RemoveAnnotations)]
    assert removals == [RemoveAnnotations((PROMOTE,))]
    assert decision.actions[0] == removals[0], "annotations go before anything else"


def test_abort_wins_over_promote_given_together() -> None:
    world = canary_at(50)
    world.annotations.update({PROMOTE: "full", ABORT: "true"})
    world.settle()
    assert world.phase == "RolledBack"
    outcomes = {c["action"]: c["outcome"] for c in world.status["history"][-1]["commands"]}
    assert outcomes["promote"].startswith("ignored")


@pytest.mark.parametrize(
    ("weight", "replicas", "canary"),
    [(0, 4, 0), (1, 4, 1), (25, 4, 1), (26, 4, 2), (50, 3, 2), (99, 10, 10), (100, 7, 7)],
)
def test_canary_replica_rounding(weight: int, replicas: int, canary: int) -> None:
    from shepherd.core.spec import canary_replicas

    assert canary_replicas(replicas, weight) == canary


def test_deployment_manifest_is_owned_and_selects_by_role() -> None:
    world = World(release_spec("1.0.0"))
    decision = world.reconcile()
    applied = [a for a in decision.actions if isinstance(a, ApplyDeployment)]
    manifest = applied[0].manifest
    assert manifest["metadata"]["ownerReferences"][0] == {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "Release",
        "name": "shop",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert manifest["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "api",
        "app.kubernetes.io/instance": "shop",
        "shepherd.dev/role": "stable",
    }
    assert manifest["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert not any(isinstance(a, DeleteDeployment) for a in decision.actions)
