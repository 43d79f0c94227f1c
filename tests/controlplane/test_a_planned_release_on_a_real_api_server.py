"""Stories of a planned release on the real API server: a revision planned ahead starts no earlier and at
once when due; the notes of an old revision are there after newer ones; the people concerned hear of it
at the reminder's lead time exactly once, across an operator restart; and the calendar puts a freeze, a
window and a planned revision in order."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes

from receiver import Receiver, secret
from shepherd.core.timefmt import parse_time
from story import Story, quickstart_release

QUICK = [{"setWeight": 50}]


def at(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def planned(version: str, **plan: Any) -> dict[str, Any]:
    release = quickstart_release(version)
    release["spec"]["strategy"]["canary"]["steps"] = QUICK
    release["spec"]["plan"] = plan
    return release


def test_a_revision_planned_ahead_starts_no_earlier_and_at_once_when_due(story: Story) -> None:
    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    # Whole seconds: the API keeps notBefore to the second; 20s ahead of the next whole second.
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=21)
    story.apply(planned("1.1.0", notBefore=at(due), summary="planned ahead"))

    gating = story.wait("revision 2 gating", lambda s: s.get("phase") == "Gating" and s.get("revision") == 2)
    assert f"scheduled for {at(due)} (in " in gating["message"], gating["message"]
    gates = {g["name"]: g["state"] for g in gating["gates"]}
    assert gates == {"plan/notBefore": "Pending"}
    assert "shop-api-canary" not in story.deployments()

    started = story.wait(
        "revision 2 started", lambda s: s.get("revision") == 2 and s.get("phase") != "Gating"
    )
    assert datetime.now(UTC) >= due, "started before its time"
    (audited,) = (g for g in started["history"][-1]["gates"] if g["name"] == "plan/notBefore")
    passed = parse_time(audited["passedAt"])
    assert passed is not None and passed >= due, f"the time gate passed at {passed}, due {due}"
    late = (passed - due).total_seconds()
    print(f"\nplanned start: gates passed {late:.2f}s after the planned time")
    assert late < 10, "woken at its time, not at a later resync"
    story.wait_phase("Succeeded", revision=2)


def test_the_notes_of_an_old_revision_are_shown_after_two_newer_ones(story: Story) -> None:
    for number, version in enumerate(("1.0.0", "1.1.0", "1.2.0"), start=1):
        notes = f"## Notes of {version}\nWhat revision {number} changed."
        changes = [
            {"title": f"change {number}", "id": f"SHOP-{number}", "url": f"https://t.example/{number}"}
        ]
        story.apply(
            planned(version, summary=f"release {version}", notes=notes, changes=changes, owner="team-shop")
        )
        story.wait_phase("Succeeded", revision=number)

    old = json.loads(story.kubectl("release", "notes", "shop", "--revision", "1", "-o", "json").stdout)
    assert old == {
        "release": "shop",
        "revision": 1,
        "version": "1.0.0",
        "summary": "release 1.0.0",
        "notes": "## Notes of 1.0.0\nWhat revision 1 changed.",
        "changes": [{"title": "change 1", "url": "https://t.example/1", "id": "SHOP-1"}],
        "owner": "team-shop",
    }
    shown = story.kubectl("release", "notes", "shop", "--revision", "1").stdout
    assert "release 1.0.0" in shown and "What revision 1 changed." in shown and "SHOP-1" in shown
    current = story.kubectl("release", "notes", "shop").stdout
    assert "release 1.2.0" in current, "without --revision: the current revision's"
    missing = story.kubectl("release", "notes", "shop", "--revision", "9", check=False)
    assert missing.returncode != 0 and "revision 9 of release shop is not recorded" in missing.stderr


def test_the_reminder_reaches_a_real_receiver_at_its_lead_time_exactly_once_across_a_restart(
    story: Story, receiver: Receiver
) -> None:
    story.kubectl("apply", "-f", "-", input=secret("team-hook", receiver.url, story.namespace))
    first = quickstart_release("1.0.0")
    hook = {"webhook": {"urlSecretRef": {"name": "team-hook", "key": "url"}}}
    first["spec"]["notifications"] = [{**hook, "events": ["Planned", "Reminder", "Started"]}]
    story.apply(first)
    story.wait_phase("Succeeded", revision=1)

    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=40)
    remind = due - timedelta(seconds=20)
    release = planned(
        "1.1.0", notBefore=at(due), remindBefore="20s", summary="the wishlist", owner="team-shop"
    )
    release["spec"]["notifications"] = first["spec"]["notifications"]
    release["spec"]["gates"] = [{"name": "after-backend", "release": {"name": "backend"}}]
    story.apply(release)

    def told(event: str) -> list[dict[str, Any]]:
        return [body for body in receiver.accepted if event in body["events"] and body["revision"] == 2]

    story.wait_until("the Planned message", lambda: bool(told("Planned")))
    story.operator.stop()  # the operator restarts between Planned and the reminder
    story.operator.start()
    story.wait_until("the Reminder message", lambda: bool(told("Reminder")), timeout=60)
    reminded_at = datetime.now(UTC)
    assert reminded_at >= remind, "reminded before its lead time"
    reminder = told("Reminder")[0]
    assert reminder["reminder"].startswith("in ") and "waiting for after-backend" in reminder["reminder"]
    assert reminder["plan"]["summary"] == "the wishlist" and reminder["openItems"] == ["after-backend"]

    story.operator.stop()  # and again between the reminder and the start
    story.operator.start()
    backend = quickstart_release("1.0.0")
    backend["metadata"]["name"] = "backend"
    story.apply(backend)  # its success is the open item: then the revision starts, at its time
    story.wait_until("the Started message", lambda: bool(told("Started")), timeout=60)
    story.wait_phase("Succeeded", revision=2)
    counted = {event: len(told(event)) for event in ("Planned", "Reminder", "Started")}
    assert counted == {"Planned": 1, "Reminder": 1, "Started": 1}, receiver.accepted


def test_the_calendar_lists_a_freeze_a_window_and_a_planned_revision_in_order(
    story: Story, admin: kubernetes.client.ApiClient
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    policy_name = f"calendar-{story.namespace}"
    policy = {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": policy_name},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": story.namespace}},
            "freezes": [
                {"start": at(now + timedelta(days=3)), "end": at(now + timedelta(days=4)), "reason": "sale"}
            ],
        },
    }
    custom = kubernetes.client.CustomObjectsApi(admin)
    custom.create_cluster_custom_object("shepherd.dev", "v1alpha1", "releasepolicies", policy)
    try:
        windowed = quickstart_release("1.0.0")
        tomorrow = now + timedelta(days=1)
        window = {"days": [tomorrow.strftime("%a")], "start": "10:00", "end": "11:00", "timeZone": "UTC"}
        windowed["spec"]["gates"] = [{"name": "mornings", "window": window}]
        windowed["metadata"]["name"] = "search"
        windowed["spec"]["paused"] = True  # only its calendar matters here
        story.apply(windowed)
        story.apply(
            planned("2.0.0", notBefore=at(now + timedelta(days=2)), summary="big one")
            | {"metadata": {"name": "shop"}}
        )
        listed = json.loads(story.kubectl("release", "calendar", "--days", "5", "-o", "json").stdout)
        table = story.kubectl("release", "calendar", "--days", "5").stdout
    finally:
        custom.delete_cluster_custom_object("shepherd.dev", "v1alpha1", "releasepolicies", policy_name)
    kinds = [(e["kind"], e["name"]) for e in listed["entries"] if e["namespace"] == story.namespace]
    assert kinds == [("window", "search/mornings"), ("planned", "shop"), ("freeze", policy_name)], listed
    positions = [table.find(text) for text in ("search/mornings", "big one", "sale")]
    assert -1 not in positions and positions == sorted(positions), table
