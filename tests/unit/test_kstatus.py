"""kstatus (what Flux's `wait: true` reads) on Shepherd's Release: InProgress while rolling, Current when
done, Failed when a person is needed.

First on the Releases captured from the operator's own runs (tests/fixtures/capture_release_status.py),
then at every reconcile of whole lifecycles in the pure simulation, so no phase can slip out of the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from simulation import ABORT, PROMOTE, RETRY, World, canary_at, release_spec

from kstatus import Result, Status, compute
from shepherd.core import Decision

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "release_status"
IN_PROGRESS, FAILED, CURRENT = Status.IN_PROGRESS, Status.FAILED, Status.CURRENT


@dataclass(frozen=True)
class Case:
    input: str  # a file of tests/fixtures/release_status, without .yaml
    status: Status
    message: str  # a part of kstatus' message


TESTS = [
    Case("succeeded", CURRENT, "Resource is Ready"),
    Case("progressing", IN_PROGRESS, "canary at 25%"),
    Case("paused-step", IN_PROGRESS, "until promoted"),
    Case("paused-by-spec", IN_PROGRESS, "paused by spec.paused"),
    Case("pending-paused", IN_PROGRESS, "spec.paused is true"),
    Case("baking", IN_PROGRESS, "baking for 1h"),
    Case("migrating", IN_PROGRESS, "migration 1/1 schema"),
    Case("rolling-back", IN_PROGRESS, "waiting for shop-api"),
    Case("unobserved-spec", IN_PROGRESS, "Release generation is 2, but latest observed generation is 1"),
    Case("rolled-back", FAILED, "aborted by shepherd.dev/abort"),
    Case("failed", FAILED, "not ready within progressDeadline 2s"),
    Case("migration-failed", FAILED, "job/shop-migrate-schema-r2 failed"),
    Case("invalid-spec", FAILED, "dependsOn forms a cycle api -> web -> api"),
    # kstatus' known gap: with no status at all it assumes Current, until the operator's first write.
    Case("no-status", CURRENT, "Resource is current"),
]


def fixture(name: str) -> dict[str, Any]:
    release: dict[str, Any] = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text(encoding="utf-8"))
    return release


@pytest.mark.parametrize("case", TESTS, ids=[case.input for case in TESTS])
def test_kstatus_of_a_captured_release(case: Case) -> None:
    result = compute(fixture(case.input))
    assert result.status == case.status, result.message
    assert case.message in result.message


def test_every_captured_release_is_in_the_table() -> None:
    captured = {path.stem for path in FIXTURES.glob("*.yaml")}
    assert captured == {case.input for case in TESTS}


def test_every_condition_carries_the_generation_it_describes() -> None:
    """kubectl wait skips a condition whose observedGeneration is behind metadata.generation (kubectl's
    pkg/cmd/wait `getObservedGeneration`): waiting right after an apply never returns on the old Ready."""
    for path in FIXTURES.glob("*.yaml"):
        status = fixture(path.stem).get("status") or {}
        for condition in status.get("conditions") or []:
            assert condition["observedGeneration"] == status["observedGeneration"], path.stem
    unobserved = fixture("unobserved-spec")
    ready = next(c for c in unobserved["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert ready["observedGeneration"] < unobserved["metadata"]["generation"]


# --- the helper follows kstatus' rules for a kind it has no specific rules for ---------------------------


def resource(*conditions: tuple[str, str], **status: Any) -> dict[str, Any]:
    listed = [
        {"type": kind, "status": value, "reason": kind, "message": f"{kind}={value}"}
        for kind, value in conditions
    ]
    return {"kind": "Release", "metadata": {"generation": 2}, "status": {**status, "conditions": listed}}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (resource(("Ready", "True"), observedGeneration=1), IN_PROGRESS),
        (resource(("Ready", "False"), observedGeneration=2), IN_PROGRESS),
        (resource(("Ready", "Unknown")), IN_PROGRESS),
        (resource(("Ready", "True")), CURRENT),
        (resource(("Ready", "Maybe")), CURRENT),
        (resource(), CURRENT),
        (resource(("Ready", "True"), ("Stalled", "True")), FAILED),
        (resource(("Stalled", "True"), ("Reconciling", "True")), FAILED),
        (resource(("Reconciling", "True"), ("Stalled", "True")), IN_PROGRESS),
        (resource(("Ready", "True"), ("Reconciling", "False")), CURRENT),
        (
            resource(("Stalled", "True")) | {"metadata": {"deletionTimestamp": "2026-11-02T09:00:00Z"}},
            Status.TERMINATING,
        ),
    ],
    ids=[
        "observedGeneration behind wins over Ready=True",
        "Ready=False without Stalled is only InProgress",
        "Ready=Unknown is InProgress",
        "Ready=True is Current",
        "a Ready status kstatus does not know is skipped",
        "no conditions at all is Current",
        "Stalled wins over Ready",
        "the first of Stalled and Reconciling decides: Stalled",
        "the first of Stalled and Reconciling decides: Reconciling",
        "abnormal-true conditions count only when True",
        "a deletion timestamp is Terminating",
    ],
)
def test_the_generic_rules(obj: dict[str, Any], expected: Status) -> None:
    assert compute(obj).status == expected


def test_a_generation_that_is_not_an_integer_is_an_error_as_in_kstatus() -> None:
    with pytest.raises(TypeError):
        compute(resource(observedGeneration="2"))


# --- every reconcile of whole lifecycles ------------------------------------------------------------------

PHASE_VERDICT = {
    "Pending": IN_PROGRESS,
    "Gating": IN_PROGRESS,
    "Migrating": IN_PROGRESS,
    "Progressing": IN_PROGRESS,
    "Paused": IN_PROGRESS,
    "Promoting": IN_PROGRESS,
    "Baking": IN_PROGRESS,
    "RollingBack": IN_PROGRESS,
    "Succeeded": CURRENT,
    "RolledBack": FAILED,
    "Failed": FAILED,
}


def stalled(status: dict[str, Any]) -> str | None:
    """The reason of a Stalled=True condition, if any."""
    return next(
        (
            c["reason"]
            for c in status.get("conditions") or []
            if c["type"] == "Stalled" and c["status"] == "True"
        ),
        None,
    )


@dataclass
class Watched(World):
    """A simulated Release that Flux looks at around every reconcile."""

    verdicts: list[tuple[str, Status]] = field(default_factory=list)
    unobserved: list[Result] = field(default_factory=list)

    def as_resource(self) -> dict[str, Any]:
        metadata = {"name": self.name, "namespace": self.namespace, "generation": self.generation}
        return {"kind": "Release", "metadata": metadata, "spec": self.spec, "status": self.status}

    def reconcile(self) -> Decision:
        if self.status and self.status["observedGeneration"] != self.generation:
            self.unobserved.append(compute(self.as_resource()))
        decision = super().reconcile()
        assert self.status["observedGeneration"] == self.generation, "a decision observes the generation"
        assert {c["observedGeneration"] for c in self.status["conditions"]} == {self.generation}
        verdict = compute(self.as_resource()).status
        # Stalled decides whatever the phase: an InvalidSpec keeps the phase the last valid spec reached.
        expected = FAILED if stalled(self.status) else PHASE_VERDICT[self.phase]
        assert verdict == expected, f"phase {self.phase}: kstatus says {verdict}"
        assert (verdict == FAILED) == (stalled(self.status) is not None), "Failed exactly when Stalled"
        self.verdicts.append((self.phase, verdict))
        return decision

    def roll_to(self, phase: str, limit: int = 60) -> None:
        """Let time pass until `phase`, promoting at every pause step that waits for a person."""
        for _ in range(limit):
            self.settle()
            if self.phase == phase:
                return
            if self.status.get("reason") == "CanaryPauseStep":
                self.annotations[PROMOTE] = "true"
            self.advance(timedelta(minutes=1))
        raise AssertionError(f"never reached {phase}: {self.phase} {self.status.get('message')}")

    def phases(self) -> list[str]:
        return list(dict.fromkeys(phase for phase, _ in self.verdicts))


def stable_release(**spec: Any) -> Watched:
    world = Watched(release_spec("1.0.0", **spec))
    world.run_until("Succeeded")
    world.verdicts.clear()
    return world


def test_first_release_is_in_progress_until_it_succeeds() -> None:
    world = Watched(release_spec("1.0.0"))
    world.run_until("Succeeded")
    assert world.phases() == ["Progressing", "Baking", "Succeeded"]
    assert world.verdicts[-1] == ("Succeeded", CURRENT)


def test_a_canary_aborted_into_rolled_back_turns_failed() -> None:
    world = stable_release()
    canary_at(50, world)
    world.settle()
    world.annotations[ABORT] = "true"
    world.run_until("RolledBack")
    assert world.phases() == ["Progressing", "Paused", "RollingBack", "RolledBack"]
    assert world.verdicts[-1] == ("RolledBack", FAILED)
    assert world.unobserved and {r.status for r in world.unobserved} == {IN_PROGRESS}


def test_a_never_ready_canary_turns_failed_when_rolled_back() -> None:
    world = stable_release(progressDeadline="2m")
    world.set_spec(release_spec("1.1.0", progressDeadline="2m"))
    world.unready.add("shop-api-canary")
    world.run_until("RolledBack")
    assert world.status["reason"] == "ProgressDeadlineExceeded"
    assert world.verdicts[-1] == ("RolledBack", FAILED)


def test_a_never_ready_first_revision_turns_failed() -> None:
    world = Watched(release_spec("1.0.0", progressDeadline="2m"))
    world.unready.add("shop-api")
    world.run_until("Failed")
    assert world.verdicts[-1] == ("Failed", FAILED)


def test_a_retry_goes_from_failed_back_to_in_progress_and_current() -> None:
    world = stable_release(progressDeadline="2m")
    world.set_spec(release_spec("1.1.0", progressDeadline="2m"))
    world.unready.add("shop-api-canary")
    world.run_until("RolledBack")
    world.verdicts.clear()
    world.unready.clear()
    world.annotations[RETRY] = "true"
    world.roll_to("Succeeded")
    verdicts = [verdict for _, verdict in world.verdicts]
    assert verdicts[0] == IN_PROGRESS and verdicts[-1] == CURRENT
    assert FAILED not in verdicts
    assert {"Paused", "Promoting", "Baking"} <= set(world.phases())


def test_migrating_is_in_progress_and_a_failed_migration_turns_failed() -> None:
    pod = {"spec": {"containers": [{"name": "migrate", "image": "shop/schema:1"}]}}
    migrations = [{"name": "schema", "template": {"spec": {"template": pod}}}]
    world = stable_release()
    world.set_spec(release_spec("1.1.0", migrations=migrations))
    world.settle()
    assert world.verdicts[-1] == ("Migrating", IN_PROGRESS)
    world.job_outcomes["shop-migrate-schema-r2"] = "fail"
    world.settle()
    assert world.verdicts[-1] == ("Failed", FAILED) and world.status["reason"] == "MigrationFailed"


def test_an_invalid_spec_turns_failed_and_a_fix_current_again() -> None:
    world = stable_release()
    invalid = release_spec("1.1.0")
    invalid["components"][1]["name"] = "api"
    world.set_spec(invalid)
    world.settle()
    assert world.verdicts[-1] == ("Succeeded", FAILED)
    world.set_spec(release_spec("1.0.0"))
    world.settle()
    assert world.verdicts[-1] == ("Succeeded", CURRENT)
    assert len(world.unobserved) == 2
