"""Leader election over a Lease record: who may take it, when a holder expires, what a release writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shepherd.core.leadership import LeaseRecord, LeaseTiming, Sighting, claim, released, sighted

NOW = datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
STAMP = "2025-03-01T12:00:00.250000Z"
TIMING = LeaseTiming(lease_duration=15, renew_deadline=10, retry_period=2)
HELD_BY_A = LeaseRecord("a", 15, "2025-03-01T11:00:00.000000Z", "2025-03-01T11:59:58.000000Z", 3)


def test_nobody_holds_a_lease_that_does_not_exist() -> None:
    assert claim(Sighting(None, 0.0), "b", 0.0, NOW, TIMING) == LeaseRecord("b", 15, STAMP, STAMP, 0)


def test_the_holder_renews_keeping_its_acquire_time_and_transitions() -> None:
    renewed = claim(Sighting(HELD_BY_A, 100.0), "a", 101.0, NOW, TIMING)

    assert renewed == LeaseRecord("a", 15, HELD_BY_A.acquired, STAMP, 3)


def test_another_holder_is_waited_for_until_its_lease_duration_has_passed_on_our_own_clock() -> None:
    seen = Sighting(HELD_BY_A, 100.0)

    assert claim(seen, "b", 114.9, NOW, TIMING) is None
    assert claim(seen, "b", 115.0, NOW, TIMING) == LeaseRecord("b", 15, STAMP, STAMP, 4)


def test_the_holders_own_duration_counts_not_ours() -> None:
    longer = LeaseRecord("a", 60, "", "", 0)

    assert claim(Sighting(longer, 0.0), "b", 59.0, NOW, TIMING) is None
    assert claim(Sighting(longer, 0.0), "b", 60.0, NOW, TIMING) is not None


def test_a_released_lease_is_taken_at_once() -> None:
    free = released(HELD_BY_A, NOW)

    assert free == LeaseRecord("", 1, STAMP, STAMP, 3)
    assert claim(Sighting(free, 100.0), "b", 100.0, NOW, TIMING) == LeaseRecord("b", 15, STAMP, STAMP, 4)


def test_a_renewal_seen_restarts_the_wait_and_an_unchanged_record_does_not() -> None:
    first = sighted(None, HELD_BY_A, 10.0)
    again = sighted(first, LeaseRecord.from_spec(HELD_BY_A.to_spec()), 20.0)
    renewed = sighted(again, LeaseRecord("a", 15, HELD_BY_A.acquired, STAMP, 3), 30.0)

    assert again.since == 10.0
    assert renewed.since == 30.0


def test_the_lease_spec_round_trips_and_tolerates_missing_fields() -> None:
    assert LeaseRecord.from_spec(HELD_BY_A.to_spec()) == HELD_BY_A
    assert HELD_BY_A.to_spec() == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2025-03-01T11:00:00.000000Z",
        "renewTime": "2025-03-01T11:59:58.000000Z",
        "leaseTransitions": 3,
    }
    assert LeaseRecord.from_spec({"leaseDurationSeconds": "15"}) == LeaseRecord()


@pytest.mark.parametrize(
    ("timing", "problems"),
    [
        pytest.param(LeaseTiming(15, 10, 2), [], id="client-go-defaults"),
        pytest.param(LeaseTiming(2.5, 2, 1), [("lease_duration", "whole")], id="fractional-lease"),
        pytest.param(
            LeaseTiming(0, 0, 0),
            [("lease_duration", "at least 1s"), ("renew_deadline", "shorter"), ("retry_period", "longer")],
            id="nothing",
        ),
        pytest.param(LeaseTiming(10, 10, 2), [("renew_deadline", "shorter")], id="deadline-too-long"),
        pytest.param(LeaseTiming(15, 2, 2), [("renew_deadline", "1.2 times")], id="retry-too-slow"),
        pytest.param(LeaseTiming(15, 10, 0), [("retry_period", "longer than 0s")], id="no-retry-period"),
    ],
)
def test_timing_rules(timing: LeaseTiming, problems: list[tuple[str, str]]) -> None:
    found = timing.problems()

    assert [field for field, _ in found] == [field for field, _ in problems]
    for (_, message), (_, fragment) in zip(found, problems, strict=True):
        assert fragment in message


@given(
    since=st.floats(0, 1e6),
    elapsed=st.floats(0, 100),
    duration=st.integers(0, 60),
    holder=st.sampled_from(["", "a", "b"]),
)
def test_a_candidate_takes_only_its_own_a_free_or_an_expired_lease(
    since: float, elapsed: float, duration: int, holder: str
) -> None:
    record = LeaseRecord(holder, duration, "", "", 1)
    taken = claim(Sighting(record, since), "b", since + elapsed, NOW, TIMING)

    expired = since + elapsed >= since + duration
    assert (taken is not None) == (holder in ("", "b") or expired)
    if taken is not None:
        assert taken.holder == "b" and taken.renewed == STAMP
        assert taken.transitions == (1 if holder == "b" else 2)
