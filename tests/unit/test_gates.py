"""Gates: windows across zones, midnight and DST; approvals; dependencies; and the Gating phase."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simulation import ABORT, PROMOTE, RETRY, T0, World, release_spec, succeeded

from shepherd.core.evidence import needed
from shepherd.core.gates import (
    SPEC_AUTHOR,
    Approval,
    GateInputs,
    WebhookAnswer,
    counted_approvals,
    evaluate,
    next_window_change,
    webhook_url,
    window_open,
)
from shepherd.core.jobs import job_name
from shepherd.core.spec import SpecError, WebhookGate, WindowGate, parse_spec
from shepherd.core.workloads import ReleaseRef

OFFICE = WindowGate(frozenset({0, 1, 2, 3}), time(9, 0), time(16, 0), "Europe/Berlin")
NIGHT = WindowGate(frozenset({4, 5}), time(22, 0), time(2, 0), "UTC")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        ("2026-11-02 07:59", False),  # Monday 08:59 in Berlin (CET, UTC+1)
        ("2026-11-02 08:00", True),  # 09:00
        ("2026-11-02 14:59", True),  # 15:59
        ("2026-11-02 15:00", False),  # 16:00: the end is excluded
        ("2026-11-06 09:00", False),  # Friday
        ("2026-07-06 07:00", True),  # Monday 09:00 in summer (CEST, UTC+2)
        ("2026-07-06 14:00", False),  # 16:00 CEST
    ],
)
def test_office_hours_in_the_window_zone_with_dst(moment: str, inside: bool) -> None:
    assert window_open(OFFICE, utc(moment)) is inside


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        ("2026-11-06 21:59", False),  # Friday before the start
        ("2026-11-06 23:00", True),  # Friday night
        ("2026-11-07 01:00", True),  # early Saturday: the window opened on Friday
        ("2026-11-08 01:00", True),  # early Sunday: opened on Saturday
        ("2026-11-08 02:00", False),  # the end is excluded
        ("2026-11-09 01:00", False),  # early Monday: Sunday is not a window day
    ],
)
def test_a_window_across_midnight(moment: str, inside: bool) -> None:
    assert window_open(NIGHT, utc(moment)) is inside


def test_other_zones_use_their_own_wall_clock() -> None:
    kolkata = WindowGate(frozenset({0}), time(9, 0), time(17, 0), "Asia/Kolkata")
    assert window_open(kolkata, utc("2026-11-02 03:30"))  # 09:00 IST (UTC+5:30)
    assert not window_open(kolkata, utc("2026-11-02 03:29"))


def test_next_change_is_when_the_window_opens_or_closes() -> None:
    assert next_window_change(OFFICE, utc("2026-11-05 15:00")) == utc(
        "2026-11-09 08:00"
    )  # Thu 16:00 -> Mon 09:00
    assert next_window_change(OFFICE, utc("2026-11-09 08:00")) == utc("2026-11-09 15:00")


def test_a_window_boundary_skipped_by_dst_opens_right_after_the_jump() -> None:
    # Berlin skips 02:00-03:00 on 2026-03-29; a window from 02:30 opens at 03:00 CEST, 01:00 UTC.
    early = WindowGate(frozenset(range(7)), time(2, 30), time(4, 0), "Europe/Berlin")
    assert next_window_change(early, utc("2026-03-29 00:30")) == utc("2026-03-29 01:00")
    assert window_open(early, utc("2026-03-29 01:00"))


def test_approvals_count_distinct_approvers_of_this_revision_only() -> None:
    at = utc("2026-11-02 10:00")
    approvals = [
        Approval("a1", "shop", 2, "alice", at),
        Approval("a2", "shop", 2, "alice", at + timedelta(minutes=1)),  # a duplicate
        Approval("b1", "shop", 1, "bob", at),  # an older revision
        Approval("c1", "billing", 2, "carol", at),  # another Release
        Approval("d1", "shop", 2, "dave", at + timedelta(minutes=2)),
    ]
    counted = counted_approvals(approvals, "shop", 2)
    assert [(a.name, a.approver) for a in counted] == [("a1", "alice"), ("d1", "dave")]


def test_approvals_owned_by_an_earlier_release_of_the_same_name_never_count() -> None:
    at = utc("2026-11-02 10:00")
    approvals = [
        Approval("old", "shop", 2, "alice", at, release_uid="uid-of-the-deleted-shop"),
        Approval("own", "shop", 2, "bob", at, release_uid="uid-1"),
        Approval("by-hand", "shop", 2, "carol", at),  # no owner: counted by name and revision
    ]
    counted = counted_approvals(approvals, "shop", 2, "uid-1")
    assert sorted(a.approver for a in counted) == ["bob", "carol"]


def gated(version: str, gates: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return release_spec(version, gates=gates, **extra)


TWO_APPROVALS = [{"name": "two-approvals", "approval": {"count": 2}, "timeout": "1h"}]


def test_a_revision_waits_for_two_approvals_of_its_own() -> None:
    world = succeeded(gated("1.0.0", []))
    world.set_spec(gated("1.1.0", TWO_APPROVALS))
    world.approvals.append(Approval("old", "shop", 1, "bob", world.now))
    world.settle()
    assert world.phase == "Gating"
    assert "shop-api-canary" not in world.deployments
    assert world.status["gates"][0]["state"] == "Pending"
    assert "0/2 approvals of revision 2" in world.status["gates"][0]["message"]
    world.approvals.append(Approval("a", "shop", 2, "alice", world.now))
    world.approvals.append(Approval("b", "shop", 2, "bob", world.now))
    world.settle()
    assert world.phase == "Progressing"
    gate = world.status["history"][-1]["gates"][0]
    assert [a["approver"] for a in gate["approvers"]] == ["alice", "bob"]
    assert next(c for c in world.status["conditions"] if c["type"] == "GatesPassed")["status"] == "True"
    assert any(e.reason == "GatePassed" for e in world.events)


def test_a_promote_cannot_skip_the_gates() -> None:
    world = succeeded(gated("1.0.0", []))
    world.set_spec(gated("1.1.0", TWO_APPROVALS))
    world.settle()
    world.annotations["shepherd.dev/promote"] = "full"
    world.settle()
    assert world.phase == "Gating"
    assert world.status["history"][-1]["commands"][0]["outcome"].startswith("ignored: gates decide")
    world.approvals.extend(
        [Approval("a", "shop", 2, "alice", world.now), Approval("b", "shop", 2, "bob", world.now)]
    )
    world.settle()
    assert world.status["canaryWeight"] == 25, "the canary starts at its first step, nothing was skipped"


def test_a_gate_past_its_timeout_fails_the_revision() -> None:
    world = succeeded(gated("1.0.0", []))
    world.set_spec(gated("1.1.0", TWO_APPROVALS))
    world.settle()
    world.advance(timedelta(minutes=59))
    assert world.phase == "Gating"
    world.advance(timedelta(minutes=1))
    assert world.phase == "Failed" and world.status["reason"] == "GateFailed"
    assert "gate two-approvals" in world.status["message"]
    assert next(c for c in world.status["conditions"] if c["type"] == "Stalled")["reason"] == "GateFailed"
    assert world.replicas("shop-api") == 4, "the stable is untouched"


def test_a_closed_window_holds_the_start_and_the_canary_and_never_a_rollback() -> None:
    weekdays = [
        {
            "name": "weekdays",
            "window": {
                "days": ["Mon", "Tue", "Wed", "Thu", "Fri"],
                "start": "00:00",
                "end": "23:59",
                "timeZone": "UTC",
            },
        }
    ]
    world = succeeded(gated("1.0.0", weekdays))  # T0 is a Monday
    world.set_spec(gated("1.1.0", weekdays))
    world.settle()
    assert world.status["canaryWeight"] == 25
    world.now = utc("2026-11-07 10:00")  # Saturday
    decision = world.settle()
    assert world.phase == "Paused" and world.status["reason"] == "Window"
    assert world.status["canaryWeight"] == 25
    assert decision.wake_at == utc("2026-11-09 00:00")
    assert world.status["history"][-1]["holds"][0]["gate"] == "weekdays"
    world.annotations[ABORT] = "true"
    world.settle()
    assert world.phase == "RolledBack", "a rollback is never held by a window"


def test_a_release_gate_waits_for_the_other_release() -> None:
    dependency = [{"name": "after-backend", "release": {"name": "backend", "version": "2.0.0"}}]
    world = World(gated("1.0.0", dependency))
    world.settle()
    assert world.phase == "Gating"
    assert "release prod/backend not found" in world.status["gates"][0]["message"]
    world.others[("prod", "backend")] = {"status": {"phase": "Succeeded", "version": "1.9.0"}}
    world.settle()
    assert "waiting for 2.0.0" in world.status["gates"][0]["message"]
    world.others[("prod", "backend")] = {"status": {"phase": "Succeeded", "version": "2.0.0"}}
    world.settle()
    assert world.phase != "Gating"


@pytest.mark.parametrize(
    ("gate", "field", "fragment"),
    [
        ({"name": "g", "approval": {"count": 1}, "window": {}}, "spec.gates[0]", "exactly one"),
        (
            {
                "name": "g",
                "window": {"days": ["Mon"], "start": "09:00", "end": "17:00", "timeZone": "Mars/Olympus"},
            },
            "spec.gates[0].window.timeZone",
            "IANA",
        ),
        (
            {"name": "g", "window": {"days": ["Mon"], "start": "09:00", "end": "09:00", "timeZone": "UTC"}},
            "spec.gates[0].window.end",
            "empty",
        ),
        (
            {
                "name": "g",
                "window": {"days": ["Funday"], "start": "09:00", "end": "10:00", "timeZone": "UTC"},
            },
            "spec.gates[0].window.days",
            "Mon",
        ),
        (
            {"name": "g", "window": {"days": ["Mon"], "start": "9:00", "end": "10:00", "timeZone": "UTC"}},
            "spec.gates[0].window.start",
            "HH:MM",
        ),
        ({"name": "g", "approval": {"count": 0}}, "spec.gates[0].approval.count", "1..100"),
        ({"name": "g", "webhook": {"url": "ci.example/status"}}, "spec.gates[0].webhook.url", "absolute"),
        (
            {"name": "g", "webhook": {"url": "https://ci.example/{{role}}"}},
            "spec.gates[0].webhook.url",
            "unknown variable {{role}}; allowed: namespace, release, version, revision",
        ),
        (
            {"name": "g", "webhook": {"url": "https://ci.example", "method": "PUT"}},
            "spec.gates[0].webhook.method",
            "GET, POST",
        ),
        (
            {"name": "g", "webhook": {"url": "https://ci.example", "interval": "0s"}},
            "spec.gates[0].webhook.interval",
            "longer than 0s",
        ),
        (
            {"name": "g", "webhook": {"url": "https://ci.example", "headersSecretRef": {}}},
            "spec.gates[0].webhook.headersSecretRef.name",
            "Secret",
        ),
        (
            {"name": "g", "job": {"template": {"spec": {"template": {"spec": {"containers": []}}}}}},
            "spec.gates[0].job.template.spec.template.spec.containers",
            "at least one container",
        ),
    ],
)
def test_bad_gates_are_named(gate: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(gated("1.0.0", [gate]))
    assert caught.value.field == field
    assert fragment in caught.value.message


ANALYSIS = {
    "prometheus": {"address": "http://prometheus:9090"},
    "metrics": [{"name": "e", "query": "x", "max": 1}],
}
NO_ALERTS = [
    {"name": "no-alerts", "metric": {"query": 'sum(ALERTS{release="{{release}}"}) or vector(0)', "max": 0}}
]


def test_a_metric_gate_passes_only_on_a_value_within_its_bounds() -> None:
    world = World(gated("1.0.0", [], analysis=ANALYSIS))
    world.prometheus = lambda metric, role, component: 2.0 if metric == "no-alerts" else 0.0
    world.run_until("Succeeded")
    world.set_spec(gated("1.1.0", NO_ALERTS, analysis=ANALYSIS))
    decision = world.settle()
    assert world.phase == "Gating"
    gate = world.status["gates"][0]
    assert "2 is above max 0" in gate["message"] and 'release="shop"' in gate["message"]
    assert decision.wake_at == world.now + timedelta(seconds=10), "Prometheus is asked again shortly"
    world.prometheus_down = True
    world.advance(timedelta(seconds=10))
    assert world.phase == "Gating", "an unreachable Prometheus never passes a gate"
    assert "connection refused" in world.status["gates"][0]["message"]
    world.prometheus_down = False
    world.prometheus = lambda metric, role, component: 0.0
    world.advance(timedelta(seconds=10))
    assert world.phase != "Gating"


def test_a_metric_gate_needs_a_prometheus() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(gated("1.0.0", NO_ALERTS))
    assert caught.value.field == "spec.gates[0].metric"


CI_GREEN = [
    {
        "name": "ci-green",
        "webhook": {
            "url": "https://ci.example/status/{{release}}/{{version}}?ns={{namespace}}",
            "headersSecretRef": {"name": "ci-token"},
            "interval": "20s",
        },
        "timeout": "1h",
    }
]


def test_a_webhook_gate_passes_on_2xx_only_and_shows_the_first_line() -> None:
    world = succeeded(gated("1.0.0", []))
    world.set_spec(gated("1.1.0", CI_GREEN))
    world.webhooks["ci-green"] = WebhookAnswer(503, "pipeline 42 still running")
    decision = world.settle()
    assert world.phase == "Gating"
    assert world.status["gates"][0]["message"] == "HTTP 503: pipeline 42 still running"
    assert decision.wake_at == world.now + timedelta(seconds=20), "asked again every interval"
    call = world.calls[-1]
    assert call.url == "https://ci.example/status/shop/1.1.0?ns=prod"
    assert (call.method, call.headers_secret) == ("GET", "ci-token")
    assert call.body == {
        "namespace": "prod",
        "release": "shop",
        "version": "1.1.0",
        "revision": 2,
        "gate": "ci-green",
    }
    world.webhooks["ci-green"] = WebhookAnswer(200, "pipeline 42 passed")
    world.advance(timedelta(seconds=20))
    assert world.phase == "Progressing"
    assert world.status["history"][-1]["gates"][0]["message"] == "HTTP 200: pipeline 42 passed"
    asked = len(world.calls)
    world.advance(timedelta(minutes=1))
    assert len(world.calls) == asked, "a passed gate is not asked again"


def test_webhook_url_variables_are_url_encoded() -> None:
    gate = parse_spec(gated("1.0.0", CI_GREEN)).gates[0].kind
    assert isinstance(gate, WebhookGate)
    url = webhook_url(gate, "a&b=c", "shop", "1.0/rc?", 3)
    assert url == "https://ci.example/status/shop/1.0%2Frc%3F?ns=a%26b%3Dc"


def test_an_unreachable_webhook_never_passes_and_fails_at_its_timeout() -> None:
    world = succeeded(gated("1.0.0", []))
    world.set_spec(gated("1.1.0", CI_GREEN))
    world.webhooks["ci-green"] = WebhookAnswer(None, error="no answer within 10s")
    world.settle()
    message = world.status["gates"][0]["message"]
    assert message == "GET https://ci.example/status/shop/1.1.0?ns=prod: no answer within 10s"
    world.advance(timedelta(minutes=59))
    assert world.phase == "Gating" and world.replicas("shop-api-canary") in (None, 0)
    world.advance(timedelta(minutes=1))
    assert (world.phase, world.status["reason"]) == ("Failed", "GateFailed")
    assert "gate ci-green did not pass within its timeout 1h" in world.status["message"]


SMOKE = [
    {
        "name": "smoke",
        "job": {
            "template": {
                "metadata": {"labels": {"team": "shop"}},
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "smoke", "image": "shop/smoke:1"}],
                        }
                    },
                },
            }
        },
    }
]


def test_a_job_gate_runs_an_owned_job_and_passes_when_it_succeeds() -> None:
    world = succeeded(gated("1.0.0", []))
    world.set_spec(gated("1.1.0", SMOKE))
    world.settle()
    assert world.phase == "Gating"
    (name,) = world.jobs
    assert name == "shop-gate-smoke-r2"
    job = world.jobs[name]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/smoke:1"
    labels = job["metadata"]["labels"]
    assert labels["team"] == "shop" and labels["shepherd.dev/revision"] == "2"
    assert labels["app.kubernetes.io/instance"] == "shop"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert world.status["gates"][0]["message"] == f"job/{name} is running; kubectl logs job/{name}"
    assert "shop-api-canary" not in world.deployments
    world.job_outcomes[name] = "succeed"
    world.settle()
    assert world.phase == "Progressing"
    assert world.status["history"][-1]["gates"][0]["message"] == f"job/{name} succeeded"
    assert list(world.jobs) == [name], "the Job is created once"


def test_a_failed_job_fails_the_revision_and_a_retry_runs_it_again() -> None:
    world = succeeded(gated("1.0.0", []))
    world.set_spec(gated("1.1.0", SMOKE))
    world.settle()
    world.job_outcomes["shop-gate-smoke-r2"] = "fail"
    world.settle()
    assert (world.phase, world.status["reason"]) == ("Failed", "GateFailed")
    assert "gate smoke failed: job/shop-gate-smoke-r2 failed: BackoffLimitExceeded" in world.status["message"]
    assert "kubectl logs job/shop-gate-smoke-r2" in world.status["message"]
    assert world.replicas("shop-api") == 4 and "shop-api-canary" not in world.deployments
    world.annotations[RETRY] = "true"
    world.settle()
    assert world.phase == "Gating"
    assert set(world.jobs) == {"shop-gate-smoke-r2", "shop-gate-smoke-r2-a2"}, "the failed run stays readable"
    world.job_outcomes["shop-gate-smoke-r2-a2"] = "succeed"
    world.settle()
    assert world.phase == "Progressing"


def test_no_job_starts_while_the_release_is_paused() -> None:
    world = succeeded(gated("1.0.0", []))
    world.set_spec(gated("1.1.0", SMOKE, paused=True))
    world.settle()
    assert world.jobs == {}
    world.set_spec(gated("1.1.0", SMOKE))
    world.settle()
    assert list(world.jobs) == ["shop-gate-smoke-r2"]


def test_jobs_of_revisions_beyond_the_history_limit_are_deleted() -> None:
    limit = {"rollback": {"revisionHistoryLimit": 2}}
    world = World(gated("1.0.0", SMOKE, **limit))
    world.job_outcomes = {f"shop-gate-smoke-r{number}": "succeed" for number in range(1, 5)}
    for version in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        world.set_spec(gated(version, SMOKE, **limit))
        world.settle()
        world.annotations[PROMOTE] = "full"
        world.run_until("Succeeded")
    assert sorted(world.jobs) == ["shop-gate-smoke-r3", "shop-gate-smoke-r4"]
    assert sorted(world.revisions) == [3, 4]


def test_a_long_job_name_is_shortened_to_a_label_value_and_stays_unique() -> None:
    first = job_name("a" * 40, "gate-" + "b" * 30, 12, 3)
    second = job_name("a" * 40, "gate-" + "b" * 30, 13, 3)
    assert len(first) == 63 and len(second) == 63 and first != second
    assert first.startswith("a" * 40 + "-gate-bbb")


def test_approvals_and_dependencies_are_read_only_while_gating_and_at_once_on_entering() -> None:
    world = succeeded(gated("1.0.0", []))
    world.set_spec(gated("1.0.0", TWO_APPROVALS))  # gates alone are no new revision
    world.settle()
    assert not needed(world.release(), world.now).gate_objects, "a settled Release reads no approvals"
    world.set_spec(gated("1.1.0", TWO_APPROVALS))
    decision = world.reconcile()
    assert world.phase == "Gating"
    assert decision.wake_at == world.now, "the pass that starts gating asks for one that reads them"
    assert needed(world.release(), world.now).gate_objects


# --- sign-off by role and four eyes ---------------------------------------------------------------

SIGN_OFF = [
    {
        "name": "sign-off",
        "description": "QA and SRE have signed off",
        "owner": "team-shop",
        "approval": {"from": [{"group": "qa"}, {"group": "sre", "count": 2}]},
    }
]


def signed(name: str, approver: str, group: str = "", revision: int = 2, minutes: int = 0) -> Approval:
    return Approval(name, "shop", revision, approver, T0 + timedelta(minutes=minutes), group=group)


def role_inputs(approvals: list[Approval], author: str = "") -> GateInputs:
    return GateInputs(ReleaseRef("shop", "prod", "uid-1"), 2, 1, "1.1.0", approvals, author=author)


ROLES = parse_spec(release_spec(gates=SIGN_OFF)).gates[0]


def test_each_role_needs_its_own_count_of_distinct_signers() -> None:
    approvals = [
        signed("a", "alice", "qa"),
        signed("b", "bob", "sre"),
        signed("b2", "bob", "sre", minutes=1),  # bob twice is bob once
        signed("c", "carol"),  # no role: counts for plain-count gates only
        signed("d", "dave", "dev"),  # a role the gate does not ask for
    ]
    result = evaluate(ROLES, role_inputs(approvals), T0)
    assert result.state == "Pending"
    assert [(r.group, r.state, [a.approver for a in r.approvers]) for r in result.roles] == [
        ("qa", "Passed", ["alice"]),
        ("sre", "Pending", ["bob"]),
    ]
    assert result.message == "sign-off of revision 2: qa 1/1 (alice), sre 1/2 (bob)"
    result = evaluate(ROLES, role_inputs([*approvals, signed("e", "erin", "sre")]), T0)
    assert result.state == "Passed"
    assert [a.approver for a in result.approvers] == ["alice", "bob", "erin"]


def test_a_plain_count_counts_sign_offs_for_any_role_once_per_person() -> None:
    gate = parse_spec(release_spec(gates=TWO_APPROVALS)).gates[0]
    approvals = [signed("a", "alice", "qa"), signed("a2", "alice", "sre"), signed("b", "bob")]
    result = evaluate(gate, role_inputs(approvals), T0)
    assert result.state == "Passed"
    assert [a.name for a in result.approvers] == ["a", "b"]


def test_the_author_of_the_spec_cannot_sign_off_and_the_gate_says_why() -> None:
    approvals = [signed("a", "alice", "qa"), signed("b", "bob", "sre"), signed("e", "erin", "sre")]
    result = evaluate(ROLES, role_inputs(approvals, author="alice"), T0)
    assert result.state == "Pending"
    assert result.roles[0].approvers == ()
    assert result.message == (
        "sign-off of revision 2: qa 0/1, sre 2/2 (bob, erin); "
        "alice's approval does not count: alice last changed the spec (four eyes)"
    )
    plain = parse_spec(release_spec(gates=TWO_APPROVALS)).gates[0]
    result = evaluate(plain, role_inputs([signed("a", "alice"), signed("b", "bob")], author="bob"), T0)
    assert result.state == "Pending"
    assert result.message == (
        "1/2 approvals of revision 2: alice; "
        "bob's approval does not count: bob last changed the spec (four eyes)"
    )


PEOPLE = st.sampled_from(["alice", "bob", "carol", "dave"])
GROUPS = st.sampled_from(["", "qa", "sre", "dev"])


@given(
    st.lists(st.tuples(PEOPLE, GROUPS, st.integers(1, 3)), max_size=12),
    st.sampled_from(["", "alice", "bob"]),
)
def test_a_role_passes_exactly_when_enough_others_than_the_author_signed_for_it(
    given_approvals: list[tuple[str, str, int]], author: str
) -> None:
    approvals = [
        signed(f"x{index}", person, group, revision, index)
        for index, (person, group, revision) in enumerate(given_approvals)
    ]
    result = evaluate(ROLES, role_inputs(approvals, author), T0)
    for role in result.roles:
        eligible = {p for p, g, r in given_approvals if g == role.group and r == 2 and p != author}
        assert {a.approver for a in role.approvers} == eligible
        assert (role.state == "Passed") == (len(eligible) >= role.count)
    assert (result.state == "Passed") == all(role.state == "Passed" for role in result.roles)
    assert all(a.approver != author for a in result.approvers)


def test_a_revision_that_needs_qa_and_sre_starts_only_after_both() -> None:
    world = succeeded(gated("1.0.0", []))
    world.set_spec(gated("1.1.0", SIGN_OFF))
    world.annotations[SPEC_AUTHOR] = "carol"
    world.approvals.extend([signed("a", "alice", "qa"), signed("b", "bob", "sre")])
    world.settle()
    assert world.phase == "Gating"
    world.approvals.append(signed("c", "carol", "sre"))  # the author's sign-off does not count
    world.settle()
    assert world.phase == "Gating"
    assert "carol's approval does not count" in world.status["gates"][0]["message"]
    world.approvals.append(signed("d", "dave", "sre"))
    world.settle()
    assert world.phase == "Progressing"
    audit_entry = world.status["history"][-1]["gates"][0]
    assert [(a["approver"], a.get("group")) for a in audit_entry["approvers"]] == [
        ("alice", "qa"),
        ("bob", "sre"),
        ("dave", "sre"),
    ]
    checklist = world.status["checklist"]
    assert [(i["name"], i["group"], i["state"]) for i in checklist] == [
        ("sign-off", "qa", "Passed"),
        ("sign-off", "sre", "Passed"),
    ]
