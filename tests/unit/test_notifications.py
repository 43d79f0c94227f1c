"""Notifications: which status writes send what to whom, once per transition, and how a message reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from simulation import ABORT, PROMOTE, RETRY, T0, World, release_spec

from shepherd.core import Decision
from shepherd.core.gates import Approval
from shepherd.core.model import ReleaseObject
from shepherd.core.notifications import Message, select, slack_message, transition_events
from shepherd.core.policy import applicable
from shepherd.core.spec import NOTIFICATION_EVENTS, SpecError, parse_notifications, parse_spec

EVERYTHING = list(NOTIFICATION_EVENTS)


def hook(name: str, *events: str, format: str = "json", **ref: str) -> dict[str, Any]:
    return {
        "webhook": {"urlSecretRef": {"name": name, "key": "url", **ref}, "format": format},
        "events": events,
    }


@dataclass
class Watched(World):
    """A simulated Release whose every status write goes through the notification selection."""

    sent: list[Message] = field(default_factory=list)

    def reconcile(self) -> Decision:
        before = self.release()
        decision = super().reconcile()
        policies = applicable(self.policies, self.namespace_labels)
        self.sent.extend(select(before, decision.status, policies, self.now))
        return decision

    def took(self) -> list[tuple[str, ...]]:
        """The events of the messages sent since the last look, each message once per target."""
        events = [m.events for m in self.sent]
        self.sent.clear()
        return events


def released(*notifications: dict[str, Any], **spec: Any) -> Watched:
    world = Watched(release_spec("1.0.0", notifications=list(notifications), **spec))
    world.run_until("Succeeded")
    return world


def new_version(world: Watched, version: str = "1.1.0") -> None:
    world.set_spec({**world.spec, **release_spec(version), "notifications": world.spec["notifications"]})


def test_a_first_release_notifies_each_phase_it_reaches_once() -> None:
    world = released(hook("everything", *EVERYTHING))

    assert world.took() == [("Progressing", "NewRevision"), ("Baking",), ("Succeeded",)]
    world.advance(timedelta(hours=1))
    world.settle()
    assert world.took() == [], "reconciling a settled Release sends nothing again"


def test_a_canary_notifies_its_pauses_and_promotion_and_nothing_in_between() -> None:
    world = released(hook("everything", *EVERYTHING))
    world.took()
    new_version(world)
    world.run_until("Paused")
    for _ in range(3):
        world.advance(timedelta(minutes=1))
    assert world.took() == [("Progressing", "NewRevision"), ("Paused",)]
    assert world.status["reason"] == "CanaryPauseStep"

    world.annotations[PROMOTE] = "true"
    world.run_until("Succeeded")
    assert world.took() == [("Progressing",), ("Promoting",), ("Baking",), ("Succeeded",)]


def test_each_target_gets_only_the_events_it_asked_for() -> None:
    world = released(hook("deploys", "Succeeded"), hook("incidents", "RollingBack", "RolledBack", "Failed"))
    assert [m.target.url.name for m in world.sent] == ["deploys"]
    world.took()

    new_version(world)
    world.run_until("Paused")
    world.annotations[ABORT] = "true"
    world.run_until("RolledBack")

    assert [(m.target.url.name, m.events) for m in world.sent] == [
        ("incidents", ("RollingBack",)),
        ("incidents", ("RolledBack",)),
    ]
    assert world.sent[0].body["reason"] == "Aborted"


def test_an_analysis_failure_is_told_once_as_it_rolls_back() -> None:
    analysis = {
        "prometheus": {"address": "http://prometheus:9090"},
        "metrics": [{"name": "error-rate", "query": "errors", "max": 0.01}],
    }
    world = Watched(
        release_spec(notifications=[hook("incidents", "AnalysisFailed", "RolledBack")], analysis=analysis)
    )
    world.prometheus = lambda metric, role, component: 0.001
    world.run_until("Succeeded")
    assert world.took() == []
    world.set_spec(
        {
            **world.spec,
            **release_spec("1.1.0"),
            "analysis": analysis,
            "notifications": world.spec["notifications"],
        }
    )
    world.spec["strategy"]["canary"]["steps"] = [{"setWeight": 25}, {"analysis": {}}]
    world.prometheus = lambda metric, role, component: 0.2
    world.run_until("RolledBack")

    assert world.took() == [("RollingBack", "AnalysisFailed"), ("RolledBack",)]
    assert world.status["reason"] == "AnalysisFailed"


def test_a_gate_past_its_timeout_is_told_as_gate_failed() -> None:
    gates = [{"name": "sign-off", "approval": {"count": 1}, "timeout": "1h"}]
    world = Watched(release_spec("1.0.0", gates=gates, notifications=[hook("gates", "Gating", "GateFailed")]))
    world.settle()
    assert world.took() == [("Gating", "NewRevision")], "a message says all the transition is"

    world.advance(timedelta(hours=2))

    assert world.took() == [("Failed", "GateFailed")]
    assert world.sent == []


def test_a_retry_is_a_new_attempt() -> None:
    world = released(hook("starts", "NewRevision"))
    world.took()
    new_version(world)
    world.run_until("Paused")
    world.annotations[ABORT] = "true"
    world.run_until("RolledBack")
    world.annotations[RETRY] = "true"
    world.settle()

    messages = [(m.events, m.body["revision"], m.body["attempt"]) for m in world.sent]
    assert messages == [(("Progressing", "NewRevision"), 2, 1), (("Progressing", "NewRevision"), 2, 2)]


def test_an_invalid_spec_is_told_once_per_problem() -> None:
    world = released(hook("broken", "InvalidSpec"))
    world.took()

    world.set_spec({**world.spec, "version": "1.1.0 beta"})
    world.settle()
    world.advance(timedelta(minutes=5))
    assert world.took() == [("InvalidSpec",)]

    world.set_spec({**world.spec, "version": "1.1.0", "progressDeadline": "ten minutes"})
    world.settle()
    (message,) = world.sent
    assert message.events == ("InvalidSpec",)
    assert message.body["reason"] == "InvalidSpec"
    assert "spec.progressDeadline" in message.body["message"]
    assert message.body["phase"] == "Succeeded", "the phase did not change: only the spec went bad"


def test_a_policy_notifies_the_releases_it_selects_beside_their_own() -> None:
    policy = {
        "metadata": {"name": "prod-rules"},
        "spec": {
            "namespaceSelector": {"matchLabels": {"environment": "production"}},
            "notifications": [hook("sre", "Succeeded", namespace="ops")],
        },
    }
    world = Watched(release_spec("1.0.0", notifications=[hook("team", "Succeeded")]))
    world.policies = [policy]
    world.namespace_labels = {"environment": "production"}
    world.run_until("Succeeded")

    assert [(m.target.url.name, m.target.url.namespace, m.target.source) for m in world.sent] == [
        ("team", None, "spec.notifications[0]"),
        ("sre", "ops", "ReleasePolicy prod-rules spec.notifications[0]"),
    ]

    staging = Watched(release_spec("1.0.0", notifications=[]))
    staging.policies = [policy]
    staging.namespace_labels = {"environment": "staging"}
    staging.run_until("Succeeded")
    assert staging.sent == []


def test_a_policy_naming_a_releases_own_secret_key_sends_one_message() -> None:
    policy = {
        "metadata": {"name": "p"},
        "spec": {"notifications": [hook("team", "Succeeded", namespace="prod")]},
    }
    world = Watched(release_spec("1.0.0", notifications=[hook("team", "Succeeded", format="slack")]))
    world.policies = [policy]
    world.run_until("Succeeded")

    (message,) = world.sent
    assert message.target.source == "spec.notifications[0]"


ROLLED_BACK = {
    "phase": "RolledBack",
    "reason": "AnalysisFailed",
    "message": "revision 5 (2.4.0) rolled back: error-rate 0.2 > max 0.01 <b>&</b>",
    "revision": 5,
    "attempt": 1,
    "version": "2.4.0",
    "stableRevision": 4,
    "stableVersion": "2.3.1",
}


def test_the_json_message_names_the_release_revision_phase_and_why() -> None:
    spec = {"notifications": [hook("hook", "RolledBack")]}
    before = ReleaseObject("shop", "prod", "uid", 1, {}, spec, {**ROLLED_BACK, "phase": "RollingBack"})

    (message,) = select(before, ROLLED_BACK, [], T0)

    assert message.body == {
        "release": "shop",
        "namespace": "prod",
        "revision": 5,
        "attempt": 1,
        "version": "2.4.0",
        "phase": "RolledBack",
        "previousPhase": "RollingBack",
        "reason": "AnalysisFailed",
        "message": ROLLED_BACK["message"],
        "stableRevision": 4,
        "stableVersion": "2.3.1",
        "events": ["RolledBack"],
        "at": "2026-11-02T09:00:00.000Z",
    }
    assert message.summary == "RolledBack of revision 5 (2.4.0)"


def test_the_slack_message_is_an_incoming_webhook_payload_with_escaped_text() -> None:
    spec = {"notifications": [hook("slack", "RollingBack", "AnalysisFailed", format="slack")]}
    before = {**ROLLED_BACK, "phase": "Progressing", "reason": "Started"}
    (message,) = select(
        ReleaseObject("shop", "prod", "uid", 1, {}, spec, before),
        {**ROLLED_BACK, "phase": "RollingBack"},
        [],
        T0,
    )

    body = message.body
    assert set(body) == {"text", "blocks"}
    headline, detail = body["text"].split("\n")
    assert headline == ":rotating_light: *prod/shop* 2.4.0 (revision 5): *RollingBack* (AnalysisFailed)"
    assert detail == "revision 5 (2.4.0) rolled back: error-rate 0.2 &gt; max 0.01 &lt;b&gt;&amp;&lt;/b&gt;"
    section, context = body["blocks"]
    assert section == {"type": "section", "text": {"type": "mrkdwn", "text": body["text"]}}
    assert context["type"] == "context"
    assert context["elements"][0]["text"] == (
        "stable 2.3.1 (revision 4) · attempt 1 · RollingBack, AnalysisFailed · 2026-11-02T09:00:00.000Z"
    )


def test_a_slack_message_is_cut_to_what_a_section_holds() -> None:
    fields = {
        "release": "shop",
        "namespace": "prod",
        "revision": 1,
        "attempt": 1,
        "version": "1.0.0",
        "phase": "Succeeded",
        "reason": "Succeeded",
        "message": "x" * 5000,
        "stableRevision": 1,
        "stableVersion": "1.0.0",
        "events": ["Succeeded"],
        "at": "2026-11-02T09:00:00.000Z",
    }

    text = slack_message(fields)["text"]

    assert text.startswith(":white_check_mark: *prod/shop* 1.0.0 (revision 1): *Succeeded*\n")
    assert len(text) < 3000 and text.endswith("x…")


@pytest.mark.parametrize(
    ("old", "new", "events"),
    [
        ({}, {"phase": "Pending", "revision": 0}, ()),
        (
            {"phase": "Paused", "reason": "Window", "revision": 2},
            {"phase": "Paused", "reason": "Freeze", "revision": 2},
            ("Paused",),
        ),
        (
            {"phase": "Paused", "reason": "Window", "revision": 2},
            {"phase": "Paused", "reason": "Window", "revision": 2},
            (),
        ),
        (
            {"phase": "RollingBack", "reason": "BakeFailed", "revision": 2},
            {"phase": "RolledBack", "reason": "BakeFailed", "revision": 2},
            ("RolledBack",),
        ),
        (
            {"phase": "Baking", "reason": "Promoted", "revision": 2},
            {"phase": "RolledBack", "reason": "BakeFailed", "revision": 2},
            ("RolledBack", "AnalysisFailed"),
        ),
        (
            {"phase": "Failed", "reason": "AnalysisFailed", "revision": 2},
            {"phase": "Failed", "reason": "AnalysisFailed", "revision": 2, "attempt": 2},
            ("Failed", "AnalysisFailed"),
        ),
    ],
    ids=["no-revision-yet", "new-reason", "same-reason", "rolled-back", "in-one-write", "next-attempt"],
)
def test_transition_events(old: dict[str, Any], new: dict[str, Any], events: tuple[str, ...]) -> None:
    assert transition_events(old, new) == events


def test_the_release_spec_carries_its_notifications() -> None:
    (notification,) = parse_spec(
        release_spec(notifications=[hook("slack", "Failed", format="slack")])
    ).notifications

    assert (notification.url.name, notification.url.key, notification.url.namespace) == ("slack", "url", None)
    assert (notification.format, notification.events) == ("slack", frozenset({"Failed"}))
    assert notification.url.describe("prod") == "Secret prod/slack key url"


@pytest.mark.parametrize(
    ("raw", "policy", "field", "fragment"),
    [
        ([{"events": ["Failed"]}], None, "spec.notifications[0].webhook", "is required"),
        ([hook("Slack", "Failed")], None, "spec.notifications[0].webhook.urlSecretRef.name", "'Slack'"),
        (
            [hook("s", "Failed", namespace="ops")],
            None,
            "spec.notifications[0].webhook.urlSecretRef.namespace",
            "own",
        ),
        ([hook("s", "Failed")], "prod-rules", "spec.notifications[0].webhook.urlSecretRef.namespace", "None"),
        (
            [hook("s", "Failed", format="teams")],
            None,
            "spec.notifications[0].webhook.format",
            "json or slack",
        ),
        ([hook("s", "Done")], None, "spec.notifications[0].events", "['Done']"),
        ([hook("s")], None, "spec.notifications[0].events", "must list events"),
        (
            [hook("s", "Failed"), hook("s", "Succeeded")],
            None,
            "spec.notifications[1].webhook.urlSecretRef",
            "merge",
        ),
        ({"webhook": {}}, None, "spec.notifications", "a list"),
    ],
)
def test_bad_notifications_are_named(raw: Any, policy: str | None, field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_notifications(raw, policy=policy)

    assert raised.value.field == field
    assert fragment in raised.value.message


def test_a_policy_with_bad_notifications_holds_its_releases_like_any_unreadable_policy() -> None:
    policy = {"metadata": {"name": "p"}, "spec": {"notifications": [hook("s", "Failed")]}}

    (parsed,) = applicable([policy], {})

    assert parsed.notifications == ()
    (freeze,) = parsed.freezes
    assert "spec.notifications[0].webhook.urlSecretRef.namespace" in freeze.reason


def test_a_planned_revision_is_told_when_seen_reminded_once_ahead_and_told_when_it_starts() -> None:
    world = released(hook("team", "Planned", "Reminder", "Started", format="slack"))
    starts = world.now + timedelta(hours=3)
    plan = {
        "notBefore": starts.isoformat().replace("+00:00", "Z"),
        "remindBefore": "1h",
        "summary": "Wishlist",
        "notes": "Saves items <for later>",
        "changes": [{"title": "Wishlist", "url": "https://tracker.example/SHOP-12", "id": "SHOP-12"}],
        "owner": "team-shop",
        "risk": "medium",
    }
    gates = [{"name": "qa-sign-off", "approval": {"count": 1}}]
    world.set_spec({**world.spec, **release_spec("1.1.0"), "plan": plan, "gates": gates})
    decision = world.settle()
    assert world.took() == [("Gating", "NewRevision", "Planned")]
    assert decision.wake_at == starts - timedelta(hours=1), "woken for the reminder"

    world.advance(timedelta(hours=1, minutes=59))
    assert world.took() == [], "before the lead time: no reminder"
    world.advance(timedelta(minutes=1))
    reminded = world.sent[0]
    assert world.took() == [("Reminder",)]
    assert "in 1h: waiting for qa-sign-off" in reminded.body["text"]
    blocks = " ".join(str(block) for block in reminded.body["blocks"])
    assert "<https://tracker.example/SHOP-12|SHOP-12: Wishlist>" in blocks
    assert "Saves items &lt;for later&gt;" in blocks, "notes escaped for Slack"
    assert "*Owner:* team-shop" in blocks and "*Risk:* medium" in blocks
    world.advance(timedelta(minutes=30))
    assert world.took() == [], "reminded once"

    world.approvals.append(Approval("a1", "shop", 2, "alice", world.now))
    world.advance(timedelta(minutes=30))
    assert world.phase == "Progressing"
    assert [events for events in world.took() if "Started" in events] == [("Progressing", "Started")]
    world.advance(timedelta(minutes=5))
    assert world.took() == []


def test_a_planned_message_in_json_carries_the_plan_and_the_open_items() -> None:
    world = released(hook("team", "Planned"))
    plan = {"notBefore": "2099-01-01T00:00:00Z", "summary": "Later", "owner": "team-shop"}
    world.set_spec({**world.spec, **release_spec("1.1.0"), "plan": plan})
    world.settle()
    (message,) = world.sent
    assert message.body["plan"] == plan
    assert message.body["openItems"] == [], "the start time is no item of anyone's"
    assert message.body["events"] == ["Gating", "NewRevision", "Planned"]
