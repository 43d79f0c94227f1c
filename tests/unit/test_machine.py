"""The phase machine, driven through time by the pure simulation in simulation.py."""

from __future__ import annotations

import copy
from datetime import timedelta
from itertools import pairwise

import pytest
from simulation import (
    ABORT,
    PROMOTE,
    RETRY,
    ROLLBACK,
    T0,
    World,
    canary_at,
    container,
    ordered_spec,
    release_spec,
    succeeded,
)

from shepherd.core import Observations, decide
from shepherd.core.actions import ApplyDeployment, DeleteDeployment, RecordRevision, RemoveAnnotations
from shepherd.core.report import REPORT_DELAY
from shepherd.core.spec import content_of, parse_spec
from shepherd.reconcile import status_patch

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
    assert "pause 1m until 2026-11-02T09:06:00Z" in world.status["message"]
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
    started = world.now
    decision = world.settle()
    assert decision.wake_at == started + REPORT_DELAY, "to say what the step waits for, if it still does"
    assert "to be created" in world.status["message"], "what it waits for is not written yet"
    decision = world.advance(REPORT_DELAY)
    assert "shop-api-canary 0/1 ready" in world.status["message"]
    assert decision.wake_at == started + timedelta(minutes=2)
    world.advance(timedelta(minutes=2) - REPORT_DELAY)
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
    assert removals == [RemoveAnnotations((PROMOTE,), {PROMOTE: "true"})]
    assert decision.actions[-1] == removals[0], "annotations go last, once status acknowledges them"
    ack = decision.status["commands"][-1]
    assert (ack["annotation"], ack["value"], ack["open"]) == (PROMOTE, "true", True)


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


# --- component ordering (dependsOn) ------------------------------------------------------------


def ordered_canary(world: World, version: str = "1.1.0", **overrides: object) -> list[dict[str, object]]:
    """Roll `version` of ordered_spec out to Succeeded, promoting past pauses; what each reconcile left."""
    world.set_spec(ordered_spec(version, **overrides))
    seen = []
    for _ in range(60):
        world.reconcile()
        seen.append(
            {
                "wave": world.status["wave"],
                "backend": world.revision_of("shop-backend"),
                "backend-canary": world.revision_of("shop-backend-canary"),
                "frontend": world.revision_of("shop-frontend"),
                "frontend-canary": world.revision_of("shop-frontend-canary"),
                "message": world.status["message"],
            }
        )
        if world.phase == "Succeeded":
            return seen
        if world.status["reason"] == "CanaryPauseStep":
            world.annotations[PROMOTE] = "true"
        world.now += timedelta(seconds=30)
    raise AssertionError(f"never succeeded: {world.status['message']}")


def test_the_backend_wave_is_promoted_before_the_frontend_canary_starts() -> None:
    world = succeeded(ordered_spec("1.0.0"))
    seen = ordered_canary(world)
    first_frontend_canary = next(i for i, s in enumerate(seen) if s["frontend-canary"] == 2)
    assert any(s["backend-canary"] == 2 for s in seen[:first_frontend_canary]), "the backend had its canary"
    for state in seen[first_frontend_canary:]:
        assert state["backend"] == 2 and state["backend-canary"] is None, state
    for state in seen:
        if state["wave"] == 0:
            assert state["frontend-canary"] is None and state["frontend"] == 1, state
    assert {n: world.image(n) for n in world.deployments} == {
        "shop-backend": "shop/backend:1.1.0",
        "shop-frontend": "shop/frontend:1.1.0",
    }
    assert any("wave 1/2 (backend), step" in s["message"] for s in seen)  # type: ignore[operator]
    assert any("wave 2/2 (frontend), step" in s["message"] for s in seen)  # type: ignore[operator]
    waves = [e.message for e in world.events if e.reason == "Wave"]
    assert waves[-1] == (
        "revision 2: wave 1/2 (backend) completed its steps: promoting it; "
        "wave 2/2 (frontend) starts its canary once it is ready"
    )


HOLD = {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}


def test_the_next_wave_waits_until_the_promoted_wave_is_ready() -> None:
    world = succeeded(ordered_spec("1.0.0", strategy=HOLD))
    world.set_spec(ordered_spec("1.1.0", strategy=HOLD))
    world.settle()
    assert world.phase == "Paused" and world.status["wave"] == 0
    world.annotations[PROMOTE] = "true"
    world.reconcile()
    assert world.status["wave"] == 1 and world.image("shop-backend") == "shop/backend:1.1.0"
    world.unready.add("shop-backend")  # the promoted backend's new pods do not become ready
    world.advance(timedelta(minutes=5))
    assert world.status["canaryWeight"] == 0
    assert "shop-frontend-canary" not in world.deployments
    assert world.replicas("shop-backend-canary") == 2, "the backend canary serves until its stable is ready"
    assert world.status["message"] == (
        "promoting wave 1/2 (backend) before wave 2/2 (frontend) starts: waiting for shop-backend 0/4 ready"
    )
    world.unready.clear()
    world.settle()
    assert world.replicas("shop-frontend-canary") == 1
    assert "shop-backend-canary" not in world.deployments


def test_the_first_revision_deploys_the_backend_before_the_frontend() -> None:
    world = World(ordered_spec("1.0.0"))
    world.unready.add("shop-backend")
    world.advance(timedelta(minutes=1))
    assert set(world.deployments) == {"shop-backend"}
    assert world.status["message"].startswith(
        "deploying revision 1 (1.0.0) to all replicas in wave 1/2 (backend)"
    )
    world.unready.clear()
    world.settle()
    assert set(world.deployments) == {"shop-backend", "shop-frontend"}
    world.run_until("Succeeded")


def test_without_depends_on_all_components_move_together() -> None:
    world = canary_at(25)
    assert world.status["wave"] == 0
    assert world.replicas("shop-api-canary") == 1 and world.replicas("shop-web-canary") == 1
    assert "wave" not in world.status["message"]


@pytest.mark.parametrize("failure", ["abort", "crash"])
def test_rolling_back_the_second_wave_restores_the_first(failure: str) -> None:
    world = succeeded(ordered_spec("1.0.0"))
    world.set_spec(ordered_spec("1.1.0"))
    while "shop-frontend-canary" not in world.deployments:
        world.annotations[PROMOTE] = "true"
        world.advance(timedelta(minutes=1))
    assert world.image("shop-backend") == "shop/backend:1.1.0"
    if failure == "abort":
        world.annotations[ABORT] = "true"
    else:
        world.crashing.add("shop-frontend-canary")
    world.unready.add("shop-frontend")
    world.settle()
    assert world.phase == "RollingBack"
    assert world.revision_of("shop-backend") == 2, "the backend waits until the frontend is back"
    world.unready.clear()
    world.settle()
    assert world.phase == "RolledBack"
    assert {n: world.image(n) for n in world.deployments} == {
        "shop-backend": "shop/backend:1.0.0",
        "shop-frontend": "shop/frontend:1.0.0",
    }
    assert world.revision_of("shop-backend") == 1 and world.replicas("shop-backend") == 4
    assert world.status["wave"] == 0


def test_promote_full_skips_the_steps_of_every_wave_still_in_order() -> None:
    world = succeeded(ordered_spec("1.0.0"))
    seen = []
    world.set_spec(ordered_spec("1.1.0"))
    world.annotations[PROMOTE] = "full"
    for _ in range(10):
        world.reconcile()
        seen.append((world.revision_of("shop-backend"), world.revision_of("shop-frontend")))
        if world.phase == "Baking":
            break
    assert world.phase == "Baking"
    assert (1, 2) not in seen, "the frontend never runs ahead of the backend"
    assert "shop-frontend-canary" not in world.deployments


def test_a_dependency_cycle_stalls_as_invalid_spec_and_touches_nothing() -> None:
    world = succeeded(ordered_spec("1.0.0"))
    before = copy.deepcopy(world.deployments)
    cyclic = ordered_spec("1.1.0")
    cyclic["components"][1]["dependsOn"] = ["frontend"]
    world.set_spec(cyclic)
    decision = world.settle()
    assert decision.actions == () and world.deployments == before
    stalled = world.condition("Stalled")
    assert stalled["reason"] == "InvalidSpec"
    assert stalled["message"] == (
        "invalid spec: spec.components[0].dependsOn: dependsOn forms a cycle "
        "frontend -> backend -> frontend: none of them could ever start"
    )


# --- rollback to a recorded revision -----------------------------------------------------------


def three_revisions(**overrides: object) -> World:
    """1.0.0, 1.1.0 and 1.2.0 each rolled out to Succeeded: revisions 1, 2 and 3."""
    world = succeeded(release_spec("1.0.0", **overrides))
    for version in ("1.1.0", "1.2.0"):
        world.set_spec(release_spec(version, **overrides))
        world.annotations[PROMOTE] = "full"
        world.run_until("Succeeded")
    assert world.status["revision"] == 3
    return world


def through_its_canary(world: World) -> None:
    world.settle()
    for _ in range(20):
        if world.phase == "Succeeded":
            return
        if world.status["reason"] == "CanaryPauseStep":
            world.annotations[PROMOTE] = "true"
        world.advance(timedelta(minutes=1))
    raise AssertionError(world.status["message"])


def test_rollback_to_a_revision_number_rolls_its_content_out_as_a_new_revision() -> None:
    world = three_revisions()
    world.annotations[ROLLBACK] = "1"
    world.settle()
    assert ROLLBACK not in world.annotations
    assert world.status["revision"] == 4 and world.status["version"] == "1.0.0"
    assert world.phase == "Progressing", "a rollback takes the same canary steps"
    assert world.image("shop-api-canary") == "shop/api:1.0.0"
    assert world.image("shop-api") == "shop/api:1.2.0"
    assert world.status["override"] == {
        "revision": 4,
        "rollbackOf": 1,
        "specHash": content_of(parse_spec(release_spec("1.2.0"))).hash,
    }
    entry = world.status["history"][-1]
    assert (entry["revision"], entry["rollbackOf"], entry["result"]) == (4, 1, "InProgress")
    assert entry["commands"][0]["outcome"] == "rolling back to revision 1 (1.0.0) as revision 4"
    assert world.revisions[4] == world.revisions[1], "recorded with the old content"
    assert any(e.reason == "Rollback" and e.type == "Normal" for e in world.events)

    through_its_canary(world)
    assert {n: world.image(n) for n in world.deployments} == {
        "shop-api": "shop/api:1.0.0",
        "shop-web": "shop/web:1.0.0",
    }
    assert world.status["stableRevision"] == 4 and world.status["stableVersion"] == "1.0.0"
    assert world.status["history"][-1]["rollbackOf"] == 1


def test_the_unchanged_spec_does_not_undo_a_rollback() -> None:
    world = three_revisions()
    world.annotations[ROLLBACK] = "1"
    through_its_canary(world)
    world.set_spec(release_spec("1.2.0"))  # a GitOps tool applies the same commit again
    world.advance(timedelta(hours=1))
    assert world.phase == "Succeeded" and world.status["revision"] == 4
    assert world.image("shop-api") == "shop/api:1.0.0"


def test_a_new_spec_content_ends_the_rollback_and_is_rolled_out_as_usual() -> None:
    world = three_revisions()
    world.annotations[ROLLBACK] = "1"
    through_its_canary(world)
    world.set_spec(release_spec("1.3.0"))
    world.settle()
    assert world.status["revision"] == 5 and world.status["version"] == "1.3.0"
    assert "override" not in world.status or world.status["override"] is None
    assert world.image("shop-api-canary") == "shop/api:1.3.0"
    assert world.image("shop-api") == "shop/api:1.0.0", "the rolled-back revision is the stable baseline"
    assert any(e.reason == "OverrideEnded" for e in world.events)


def test_reverting_git_to_the_rolled_back_content_ends_the_override_and_moves_nothing() -> None:
    world = three_revisions()
    world.annotations[ROLLBACK] = "1"
    through_its_canary(world)
    before = copy.deepcopy(world.deployments)
    world.set_spec(release_spec("1.0.0"))
    world.settle()
    assert world.status["override"] is None
    assert world.phase == "Succeeded" and world.status["revision"] == 4
    assert world.deployments == before
    world.set_spec(release_spec("1.2.0"))
    world.settle()
    assert world.status["revision"] == 5, "with the override gone, git's newer content is a new revision"


def test_rollback_to_previous_toggles_between_the_last_two_stable_contents() -> None:
    world = three_revisions()
    world.annotations[ROLLBACK] = "previous"
    through_its_canary(world)
    assert world.status["revision"] == 4 and world.status["history"][-1]["rollbackOf"] == 2
    assert world.image("shop-api") == "shop/api:1.1.0"
    world.annotations[ROLLBACK] = "previous"
    through_its_canary(world)
    assert world.status["revision"] == 5 and world.status["history"][-1]["rollbackOf"] == 3
    assert world.image("shop-api") == "shop/api:1.2.0"
    assert world.status["override"] is None, "back on the spec's own content: nothing stands in for it"


def test_rollback_mid_canary_supersedes_the_revision_in_flight() -> None:
    world = three_revisions()
    canary_at(25, world, version="1.3.0")
    world.annotations[ROLLBACK] = "1"
    world.settle()
    superseded = world.status["history"][-2]
    assert (superseded["revision"], superseded["result"], superseded["reason"]) == (
        4,
        "Superseded",
        "RollbackRequested",
    )
    assert world.status["revision"] == 5
    assert world.image("shop-api-canary") == "shop/api:1.0.0"
    assert world.image("shop-api") == "shop/api:1.2.0"


def rollback_outcome(world: World, value: str) -> str:
    """Annotate shepherd.dev/rollback=value, reconcile, and return the outcome recorded in history."""
    world.annotations[ROLLBACK] = value
    world.settle()
    assert ROLLBACK not in world.annotations, "consumed, whatever the outcome"
    return str(world.status["history"][-1]["commands"][-1]["outcome"])


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        ("42", "ignored: there is no revision 42; the latest is 3"),
        ("0", "ignored: there is no revision 0; the latest is 3"),
        ("soon", "ignored: 'soon' is neither previous nor a revision number"),
        ("3", "ignored: revision 3's content already serves all traffic"),
    ],
)
def test_a_rollback_that_cannot_be_done_is_ignored_with_the_reason(value: str, outcome: str) -> None:
    world = three_revisions()
    before = copy.deepcopy(world.deployments)
    assert rollback_outcome(world, value) == outcome
    assert world.phase == "Succeeded" and world.status["revision"] == 3
    assert world.deployments == before
    assert world.status["history"][-1]["commands"][-1]["action"] == "rollback"
    assert world.events[-1].type == "Warning" and world.events[-1].reason == "Rollback"
    assert world.events[-1].message == f"shepherd.dev/rollback={value}: {outcome}"


def test_a_trimmed_revision_cannot_be_rolled_back_to() -> None:
    world = three_revisions(rollback={"revisionHistoryLimit": 2})
    assert rollback_outcome(world, "1") == (
        "ignored: revision 1 is no longer recorded (rollback.revisionHistoryLimit); recorded revisions: 2, 3"
    )
    assert world.status["revision"] == 3


def test_previous_needs_an_earlier_succeeded_revision() -> None:
    world = succeeded()
    assert rollback_outcome(world, "previous") == (
        "ignored: no earlier succeeded revision is recorded to roll back to"
    )
    assert world.status["revision"] == 1


def test_rollback_to_the_stable_content_mid_canary_points_to_abort() -> None:
    world = canary_at(25)
    assert rollback_outcome(world, "1") == (
        "ignored: revision 1's content is the stable revision's: shepherd.dev/abort returns to it"
    )
    assert world.status["revision"] == 2 and world.phase == "Progressing"


def test_a_retried_rollback_keeps_its_content_and_origin() -> None:
    world = three_revisions()
    world.annotations[ROLLBACK] = "1"
    world.settle()
    world.annotations[ABORT] = "true"
    world.settle()
    assert world.phase == "RolledBack" and world.image("shop-api") == "shop/api:1.2.0"
    world.annotations[RETRY] = "true"
    world.settle()
    assert (world.status["revision"], world.status["attempt"]) == (4, 2)
    assert world.image("shop-api-canary") == "shop/api:1.0.0"
    assert world.status["history"][-1]["rollbackOf"] == 1


# --- status.traffic: each component's real share of pods --------------------------------------


def _stored(status: dict) -> dict:
    """The status as the API server keeps it: a merge patch's nulls remove their keys."""
    return {key: value for key, value in status.items() if value is not None}


def _shares(traffic: dict | None) -> dict[str, tuple[int, int, int]]:
    """Per component: canary pods, stable pods, the canary's share in percent."""
    assert traffic is not None
    return {c["name"]: (c["canaryPods"], c["stablePods"], c["canaryShare"]) for c in traffic["components"]}


def test_the_status_shows_the_real_share_while_the_canary_runs_and_nothing_once_settled() -> None:
    world = canary_at(25)
    traffic = world.status["traffic"]
    assert traffic["desiredWeight"] == world.status["canaryWeight"] == 25
    assert _shares(traffic) == {"api": (1, 3, 25), "web": (1, 1, 50)}

    world.run_until("Paused")  # setWeight 50, then the pause without a duration
    assert _shares(world.status["traffic"]) == {"api": (2, 2, 50), "web": (1, 1, 50)}
    world.annotations[PROMOTE] = "true"
    before = _stored(world.status)
    world.run_until("Succeeded")
    assert world.status.get("traffic") is None
    assert status_patch(before, world.status)["traffic"] is None, "the merge patch drops it"


def test_the_traffic_status_is_written_only_when_it_changes() -> None:
    world = canary_at(25)
    world.settle()
    before = _stored(world.status)
    decision = world.reconcile()
    assert status_patch(before, decision.status) == {}, "a pass that changes nothing writes nothing"
    world.advance(timedelta(minutes=1))  # the timed pause ends: setWeight 50
    assert _shares(world.status["traffic"])["api"] == (2, 2, 50)
    patches = [status_patch(_stored(a.status), b.status) for a, b in pairwise(world.decisions)]
    assert any("traffic" in patch for patch in patches)
    assert patches[-1] == {}, "the settled pass writes nothing"


def test_an_abort_shows_the_canary_going_away_then_no_traffic_status() -> None:
    world = canary_at(25)
    world.annotations[ABORT] = "true"
    world.reconcile()
    assert world.phase == "RollingBack"
    assert world.status["traffic"]["desiredWeight"] == 0
    assert _shares(world.status["traffic"])["api"] == (1, 3, 25), "the canary still asks for its pod"
    world.settle()
    assert world.phase == "RolledBack" and world.status.get("traffic") is None


def test_waves_show_the_promoted_wave_on_its_stable_deployment() -> None:
    world = succeeded(ordered_spec("1.0.0"))
    world.set_spec(ordered_spec("1.1.0"))
    world.run_until("Paused")  # backend's wave at 50%
    assert _shares(world.status["traffic"]) == {"frontend": (0, 2, 0), "backend": (2, 2, 50)}
    world.annotations[PROMOTE] = "true"
    world.settle()
    world.run_until("Paused")  # backend promoted; frontend's wave at 50%
    assert world.status["wave"] == 1
    assert _shares(world.status["traffic"]) == {"frontend": (1, 1, 50), "backend": (0, 4, 0)}


def test_a_first_revision_has_no_traffic_status() -> None:
    world = World(release_spec("1.0.0"))
    world.run_until("Baking")
    assert all(d.status.get("traffic") is None for d in world.decisions)
