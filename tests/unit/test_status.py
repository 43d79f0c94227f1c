"""Rollout state <-> status dict, and the kstatus conditions derived from it."""

from __future__ import annotations

from datetime import timedelta

from simulation import T0

from shepherd.core.status import (
    CommandRecord,
    HistoryEntry,
    Override,
    Phase,
    Rollout,
    render_conditions,
    rollout_conditions,
)


def test_status_round_trip_keeps_everything_needed_to_resume() -> None:
    rollout = Rollout(
        phase=Phase.PAUSED,
        reason="CanaryPauseStep",
        message="m",
        revision=3,
        revision_hash="abc",
        version="1.2.0",
        latest_revision=3,
        attempt=2,
        stable_revision=2,
        stable_hash="def",
        stable_version="1.1.0",
        canary_weight=50,
        current_step=3,
        wave=1,
        phase_since=T0,
        step_since=T0 + timedelta(seconds=1),
        unready_since=None,
        history=(
            HistoryEntry(
                3,
                "1.2.0",
                2,
                "InProgress",
                "",
                T0,
                commands=(CommandRecord("promote", "true", T0, "ok"),),
                rollback_of=1,
            ),
        ),
        override=Override(revision=3, rollback_of=1, spec_hash="0123"),
    )
    assert Rollout.from_status(rollout.to_status()) == rollout


def test_unknown_or_missing_status_starts_from_scratch() -> None:
    assert Rollout.from_status(None) == Rollout()
    assert Rollout.from_status({"phase": "Bogus", "revision": "seven"}) == Rollout()


def test_conditions_follow_kstatus() -> None:
    def kinds(phase: Phase, error: str | None = None) -> dict[str, tuple[str, str]]:
        return {
            c.type: (c.status, c.reason)
            for c in rollout_conditions(Rollout(phase=phase, reason="Why"), error)
        }

    assert kinds(Phase.PROGRESSING) == {
        "Ready": ("Unknown", "Progressing"),
        "Reconciling": ("True", "Progressing"),
    }
    assert kinds(Phase.PAUSED) == {"Ready": ("Unknown", "Paused"), "Reconciling": ("True", "Paused")}
    assert kinds(Phase.SUCCEEDED) == {"Ready": ("True", "Succeeded")}
    assert kinds(Phase.ROLLED_BACK) == {"Ready": ("False", "Why"), "Stalled": ("True", "Why")}
    assert kinds(Phase.FAILED) == {"Ready": ("False", "Why"), "Stalled": ("True", "Why")}
    assert kinds(Phase.PROGRESSING, "bad") == {
        "Ready": ("False", "InvalidSpec"),
        "Stalled": ("True", "InvalidSpec"),
    }


def test_transition_time_moves_only_with_the_status() -> None:
    first = render_conditions(rollout_conditions(Rollout(phase=Phase.PROGRESSING), None), [], 1, T0)
    later = T0 + timedelta(minutes=5)
    same = render_conditions(rollout_conditions(Rollout(phase=Phase.PAUSED), None), first, 2, later)
    assert [c["lastTransitionTime"] for c in same] == ["2026-11-02T09:00:00Z"] * 2
    assert same[0]["reason"] == "Paused" and same[0]["observedGeneration"] == 2
    done = render_conditions(rollout_conditions(Rollout(phase=Phase.SUCCEEDED), None), same, 2, later)
    assert [(c["type"], c["lastTransitionTime"]) for c in done] == [("Ready", "2026-11-02T09:05:00Z")]
