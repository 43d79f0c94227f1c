"""The release calendar: planned revisions, freezes and windows of each namespace, in time order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shepherd.core.calendar import calendar, openings
from shepherd.core.spec import parse_window

MONDAY = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # 09:00 in Berlin


def release(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": {"version": "2.4.0", **spec}}


PRODUCTION = {
    "metadata": {"name": "production"},
    "spec": {
        "namespaceSelector": {"matchLabels": {"tier": "production"}},
        "freezes": [
            {"start": "2026-12-09T00:00:00Z", "end": "2026-12-10T00:00:00Z", "reason": "Black Friday"},
            {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z", "reason": "long over"},
        ],
        "windows": [
            {"name": "weekdays", "days": ["Tue"], "start": "10:00", "end": "12:00", "timeZone": "UTC"}
        ],
    },
}


def test_the_calendar_lists_a_freeze_a_window_and_a_planned_revision_in_time_order() -> None:
    planned = release(
        "shop",
        "checkout",
        plan={
            "notBefore": "2026-12-08T15:00:00Z",
            "summary": "Wishlist",
            "owner": "team-shop",
            "risk": "high",
        },
    )
    windowed = release(
        "shop",
        "search",
        gates=[
            {
                "name": "mornings",
                "window": {"days": ["Mon"], "start": "09:00", "end": "11:00", "timeZone": "Europe/Berlin"},
            }
        ],
    )
    elsewhere = release("staging", "checkout", plan={"notBefore": "2026-12-08T12:00:00Z"})
    labels = {"shop": {"tier": "production"}, "staging": {}}
    entries = calendar([planned, windowed, elsewhere], [PRODUCTION], labels, MONDAY, days=3)
    shown = [(e.kind, e.namespace, e.name, e.to_dict()["start"], e.to_dict()["end"]) for e in entries]
    assert shown == [
        ("window", "shop", "search/mornings", "2026-12-07T08:00:00Z", "2026-12-07T10:00:00Z"),
        ("window", "shop", "production/weekdays", "2026-12-08T10:00:00Z", "2026-12-08T12:00:00Z"),
        ("planned", "staging", "checkout", "2026-12-08T12:00:00Z", None),
        ("planned", "shop", "checkout", "2026-12-08T15:00:00Z", None),
        ("freeze", "shop", "production", "2026-12-09T00:00:00Z", "2026-12-10T00:00:00Z"),
    ]
    assert entries[3].detail == "version 2.4.0; Wishlist; owner team-shop; risk high"
    assert entries[0].detail == "Mon 09:00-11:00 Europe/Berlin"


def test_nothing_beyond_the_range_and_no_policy_for_a_namespace_it_does_not_select() -> None:
    later = release("shop", "checkout", plan={"notBefore": "2026-12-30T09:00:00Z"})
    assert calendar([later], [PRODUCTION], {"shop": {}}, MONDAY, days=14) == []


def test_a_window_open_now_starts_now_and_each_opening_is_listed_once() -> None:
    window = parse_window({"days": ["Mon", "Tue"], "start": "07:00", "end": "09:00", "timeZone": "UTC"}, "w")
    assert list(openings(window, MONDAY, MONDAY.replace(day=9))) == [
        (MONDAY, MONDAY.replace(hour=9)),
        (MONDAY.replace(day=8, hour=7), MONDAY.replace(day=8, hour=9)),
    ]
