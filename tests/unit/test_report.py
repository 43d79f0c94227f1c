"""When progress details are written: at once with any change of state, else once a step has lasted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shepherd.core.report import REPORT_DELAY, ends_at, report_later
from shepherd.core.status import Phase, Rollout

STARTED = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
ROLLOUT = Rollout(
    phase=Phase.PROGRESSING, revision=2, current_step=0, phase_since=STARTED, step_since=STARTED
)


def status(message: str, step: int = 0, ready: str = "Unknown", **extra: object) -> dict[str, object]:
    conditions = [
        {"type": "Ready", "status": ready, "reason": "Progressing", "message": message},
        {"type": "Reconciling", "status": "True", "reason": "Progressing", "message": message},
    ]
    return {
        "phase": "Progressing",
        "currentStep": step,
        "message": message,
        "conditions": conditions,
        **extra,
    }


OLD = status("step 1/3: waiting for app-canary to be created")


def test_a_new_detail_early_in_a_step_waits_until_the_step_has_lasted() -> None:
    new = status("step 1/3: waiting for app-canary 0/1 ready")
    assert report_later(OLD, new, ROLLOUT, STARTED + timedelta(seconds=1)) == STARTED + REPORT_DELAY


def test_a_detail_still_true_once_the_step_has_lasted_is_written_at_once() -> None:
    new = status("step 1/3: waiting for app-canary 0/1 ready")
    assert report_later(OLD, new, ROLLOUT, STARTED + REPORT_DELAY) is None


def test_the_share_of_pods_is_a_detail_too() -> None:
    new = {**OLD, "traffic": {"routing": "Replicas", "components": [{"name": "app", "canaryShare": 50}]}}
    assert report_later(OLD, new, ROLLOUT, STARTED) == STARTED + REPORT_DELAY


def test_the_delay_counts_from_the_latest_of_phase_step_and_unready_clocks() -> None:
    later = Rollout(
        phase=Phase.PROGRESSING,
        phase_since=STARTED,
        step_since=STARTED + timedelta(minutes=1),
        unready_since=STARTED + timedelta(minutes=2),
    )
    new = status("step 2/3: waiting for app 1/2 ready")
    now = STARTED + timedelta(minutes=2, seconds=1)
    assert report_later(OLD, new, later, now) == STARTED + timedelta(minutes=2) + REPORT_DELAY


@pytest.mark.parametrize(
    "new",
    [
        status("step 2/3: pause 1m until 2026-12-02T12:01:00Z", step=1),
        status("step 1/3: waiting for app-canary 0/1 ready", ready="False"),
        {**OLD, "commands": [{"action": "promote", "value": "true"}]},
        {**OLD, "observedGeneration": 3},
    ],
    ids=["a new step", "a condition's status", "a command's acknowledgement", "a new generation"],
)
def test_any_change_of_state_is_written_at_once_with_its_details(new: dict[str, object]) -> None:
    assert report_later(OLD, new, ROLLOUT, STARTED) is None


@pytest.mark.parametrize("phase", [Phase.PENDING, Phase.GATING, Phase.PAUSED, Phase.SUCCEEDED])
def test_outside_moving_workloads_a_message_is_written_at_once(phase: Phase) -> None:
    """Why a Release waits to start (Prometheus unreachable, a gate) is news, not churn."""
    new = status("revision 2 is waiting to start: connection refused")
    held = Rollout(phase=phase, phase_since=STARTED, step_since=STARTED)
    assert report_later(OLD, new, held, STARTED) is None


def test_nothing_changed_is_nothing_to_write() -> None:
    assert report_later(OLD, dict(OLD), ROLLOUT, STARTED) is None


def test_a_pause_names_its_end_not_a_countdown() -> None:
    assert ends_at(STARTED, timedelta(minutes=10)) == "2026-12-02T12:10:00Z"
    assert ends_at(None, timedelta(minutes=10)) == "now"
