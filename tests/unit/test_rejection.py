"""A refused write holds the Release as Stalled, with the reason it was refused for, until a person acts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shepherd.core.rejection import REASON, STATUS_REFUSED, Rejection, held_status, record_rejection

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
STATUS = {"phase": "Progressing", "revision": 2, "canaryWeight": 25, "conditions": []}
REFUSED = Rejection("Release", "shop status", 422, "no Release may be paused in this namespace")


def stalled(status: dict[str, object]) -> dict[str, object]:
    conditions = status["conditions"]
    assert isinstance(conditions, list)
    return next(c for c in conditions if c["type"] == "Stalled")


@pytest.mark.parametrize("reason", [REASON, STATUS_REFUSED])
def test_a_refusal_is_held_with_its_own_reason_on_every_later_pass_of_that_generation(reason: str) -> None:
    held, event = record_rejection(7, STATUS, REFUSED, NOW, reason)
    assert (event.type, event.reason) == ("Warning", reason)
    assert "the API server refused Release shop status" in event.message
    assert stalled(held)["reason"] == reason
    assert held["rejected"]["reason"] == reason  # type: ignore[index]
    assert (held["phase"], held["canaryWeight"]) == ("Progressing", 25), "the status as it was"

    later = held_status(7, held, NOW + timedelta(minutes=5), new_command=False)
    assert later is not None and stalled(later)["reason"] == reason
    assert stalled(later)["lastTransitionTime"] == stalled(held)["lastTransitionTime"]


def test_a_new_generation_or_a_command_ends_the_hold() -> None:
    held, _ = record_rejection(7, STATUS, REFUSED, NOW, STATUS_REFUSED)
    assert held_status(8, held, NOW, new_command=False) is None
    assert held_status(7, held, NOW, new_command=True) is None


def test_a_refusal_recorded_before_reasons_were_kept_reads_as_an_invalid_template() -> None:
    held, _ = record_rejection(7, STATUS, REFUSED, NOW)
    del held["rejected"]["reason"]  # type: ignore[attr-defined]
    later = held_status(7, held, NOW, new_command=False)
    assert later is not None and stalled(later)["reason"] == REASON
