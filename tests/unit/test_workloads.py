"""Desired Deployments per rollout state, and the order changes are applied in."""

from __future__ import annotations

from simulation import release_spec

from shepherd.core.actions import ApplyDeployment, DeleteDeployment
from shepherd.core.spec import content_of, parse_spec
from shepherd.core.status import Phase, Rollout
from shepherd.core.workloads import (
    ReleaseRef,
    desired_deployments,
    plan_workloads,
    readiness,
    render_deployment,
    reported_failure,
)

REF = ReleaseRef("shop", "prod", "uid-1")
SPEC = parse_spec(release_spec("1.1.0"))
CURRENT = content_of(SPEC)
STABLE = content_of(parse_spec(release_spec("1.0.0")))


def live(desired_list: list, ready: bool = True) -> dict:
    deployments = {}
    for want in desired_list:
        manifest = render_deployment(REF, want, want.replicas, want.template, 600)
        manifest["metadata"]["generation"] = 1
        count = want.replicas if ready else 0
        manifest["status"] = {
            "observedGeneration": 1,
            "replicas": want.replicas,
            "updatedReplicas": want.replicas,
            "readyReplicas": count,
            "availableReplicas": count,
        }
        deployments[want.name("shop")] = manifest
    return deployments


def canary(weight: int) -> Rollout:
    return Rollout(
        phase=Phase.PROGRESSING, revision=2, stable_revision=1, stable_version="1.0.0", canary_weight=weight
    )


def test_hold_phases_touch_nothing() -> None:
    for phase in (Phase.PENDING, Phase.FAILED):
        assert (
            desired_deployments(Rollout(phase=phase, revision=2, stable_revision=1), SPEC, CURRENT, STABLE)
            is None
        )
        assert plan_workloads(REF, None, {"x": {}}, 600).actions == ()


def test_weight_zero_has_no_canary_deployment() -> None:
    desired = desired_deployments(canary(0), SPEC, CURRENT, STABLE)
    assert desired is not None
    assert {(d.name("shop"), d.replicas) for d in desired} == {("shop-api", 4), ("shop-web", 2)}


def test_converged_when_everything_matches_and_is_ready() -> None:
    desired = desired_deployments(canary(25), SPEC, CURRENT, STABLE)
    assert desired is not None
    plan = plan_workloads(REF, desired, live(desired), 600)
    assert plan.converged and plan.actions == () and plan.waiting_on == ()


def test_scale_downs_wait_for_scale_ups() -> None:
    at25 = desired_deployments(canary(25), SPEC, CURRENT, STABLE)
    at50 = desired_deployments(canary(50), SPEC, CURRENT, STABLE)
    assert at25 is not None and at50 is not None
    plan = plan_workloads(REF, at50, live(at25), 600)
    assert {
        a.name: a.manifest["spec"]["replicas"] for a in plan.actions if isinstance(a, ApplyDeployment)
    } == {"shop-api-canary": 2}
    grown = live(at50)
    grown["shop-api"] = live(at25)["shop-api"]
    grown["shop-web"] = live(at25)["shop-web"]
    plan = plan_workloads(REF, at50, grown, 600)
    assert {
        a.name: a.manifest["spec"]["replicas"] for a in plan.actions if isinstance(a, ApplyDeployment)
    } == {"shop-api": 2}


def test_leftovers_are_deleted_last() -> None:
    at25 = desired_deployments(canary(25), SPEC, CURRENT, STABLE)
    done = desired_deployments(
        Rollout(phase=Phase.SUCCEEDED, revision=2, stable_revision=2), SPEC, CURRENT, STABLE
    )
    assert at25 is not None and done is not None
    stale = live(at25)
    plan = plan_workloads(REF, done, stale, 600)
    assert not any(isinstance(a, DeleteDeployment) for a in plan.actions), (
        "stable must take the new template first"
    )
    updated = live(done) | {k: v for k, v in stale.items() if k.endswith("-canary")}
    plan = plan_workloads(REF, done, updated, 600)
    assert set(plan.actions) == {DeleteDeployment("shop-api-canary"), DeleteDeployment("shop-web-canary")}


def test_someone_elses_labels_do_not_cause_a_rewrite() -> None:
    desired = desired_deployments(canary(25), SPEC, CURRENT, STABLE)
    assert desired is not None
    deployments = live(desired)
    deployments["shop-api"]["metadata"]["labels"]["team"] = "payments"
    assert plan_workloads(REF, desired, deployments, 600).actions == ()


def test_readiness_reads_the_deployment_controller() -> None:
    desired = desired_deployments(canary(25), SPEC, CURRENT, STABLE)
    assert desired is not None
    deployment = live(desired)["shop-api"]
    assert readiness(deployment) == (True, "3/3 ready")
    deployment["metadata"]["generation"] = 2
    assert readiness(deployment) == (False, "rollout not yet observed")
    deployment["status"]["observedGeneration"] = 2
    deployment["status"]["replicas"] = 4  # an old pod still terminating
    assert readiness(deployment)[0] is False
    deployment["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "stuck"}
    ]
    assert reported_failure(deployment) == "stuck"
