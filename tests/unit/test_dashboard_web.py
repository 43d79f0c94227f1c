"""The release board's pure parts (what needs attention, the rows, the filters) and the server's guard on
writes: read-only refuses every POST; with actions, a write needs this session's token, from this site, to
this host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes.client
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from helpers import free_port
from shepherd.dashboard import views
from shepherd.dashboard.server import BURST, CSRF_COOKIE, Dashboard, Listener, Settings, is_loopback, serve

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def at(delta: timedelta) -> str:
    return (NOW + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def release(name: str = "shop", namespace: str = "a", **status: Any) -> dict[str, Any]:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"setWeight": 100}]
    return {
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": at(-timedelta(hours=3))},
        "spec": {"version": "1.1.0", "strategy": {"canary": {"steps": steps}}},
        "status": {"stableVersion": "1.0.0", **status},
    }


def test_a_release_waiting_for_a_role_needs_attention_and_says_which() -> None:
    checklist = [
        {"kind": "approval", "group": "qa", "state": "Pending"},
        {"kind": "approval", "group": "sre", "state": "Passed"},
    ]
    row = views.row(release(phase="Gating", checklist=checklist), NOW)
    assert row.attention == ("waiting for sign-off by qa",)


@pytest.mark.parametrize(
    ("status", "spec", "reason"),
    [
        ({"phase": "Paused"}, {}, "paused with no end"),
        ({"phase": "Progressing"}, {"paused": True}, "paused with no end"),
        (
            {"phase": "Failed", "history": [{"result": "Failed", "finishedAt": at(-timedelta(hours=2))}]},
            {},
            "failed in the last 24 h",
        ),
        (
            {
                "phase": "RolledBack",
                "history": [{"result": "RolledBack", "finishedAt": at(-timedelta(hours=1))}],
            },
            {},
            "rolled back in the last 24 h",
        ),
        (
            {
                "phase": "Progressing",
                "conditions": [{"type": "Stalled", "status": "True", "message": "no pods"}],
            },
            {},
            "stalled: no pods",
        ),
        ({"phase": "Pending", "rejected": {"message": "bad"}}, {}, "invalid spec"),
        (
            {"phase": "Gating"},
            {"plan": {"notBefore": at(timedelta(hours=5))}},
            "planned for 2026-12-07 17:00 UTC",
        ),
    ],
)
def test_what_needs_attention(status: dict[str, Any], spec: dict[str, Any], reason: str) -> None:
    shown = release(**status)
    shown["spec"].update(spec)
    assert reason in views.attention(shown, NOW)


def test_what_needs_no_one() -> None:
    old_failure = {"phase": "Failed", "history": [{"result": "Failed", "finishedAt": at(-timedelta(days=3))}]}
    later = release(phase="Gating")
    later["spec"]["plan"] = {"notBefore": at(timedelta(days=3))}
    for quiet in (release(phase="Succeeded"), release(**old_failure), later):
        assert views.attention(quiet, NOW) == ()


def test_a_row_has_the_versions_the_step_and_the_traffic() -> None:
    traffic = {"routing": "Replicas", "components": [{"name": "web", "canaryShare": 33}]}
    row = views.row(release(phase="Paused", currentStep=1, canaryWeight=25, traffic=traffic), NOW)
    assert (row.stable, row.version, row.step, row.steps, row.progress) == ("1.0.0", "1.1.0", 1, 4, 25)
    assert row.traffic == "25% (pods: web 33%)"
    assert row.age == "3h"
    assert views.row(release(phase="Succeeded"), NOW).progress == 100


def test_the_board_filters_by_namespace_phase_and_text() -> None:
    releases = [release("shop", "a", phase="Paused"), release("cart", "b", phase="Succeeded")]
    assert [r.name for r in views.board(releases, views.Filters(namespace="b"), NOW).rows] == ["cart"]
    assert [r.name for r in views.board(releases, views.Filters(phase="Paused"), NOW).rows] == ["shop"]
    assert [r.name for r in views.board(releases, views.Filters(text="A/SH"), NOW).rows] == ["shop"]
    shown = views.board(releases, views.Filters(), NOW)
    assert (shown.namespaces, shown.total, [r.name for r in shown.attention]) == (["a", "b"], 2, ["shop"])


def test_the_timeline_marks_the_current_step() -> None:
    marks = [s["state"] for s in views.timeline(release(phase="Paused", currentStep=1))]
    assert marks == ["done", "current", "next", "next"]


def test_only_loopback_addresses_count_as_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


async def ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture
def port() -> int:
    return free_port()


async def guarded(port: int, allow_actions: bool) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    dashboard = Dashboard(
        Settings(kubernetes.client.Configuration(), "a", port=port, allow_actions=allow_actions)
    )
    app = web.Application(middlewares=[dashboard.guard])
    app.router.add_get("/", ok)
    app.router.add_post("/", ok)
    async with TestClient(TestServer(app, host="127.0.0.1", port=port)) as client:
        yield client


@pytest_asyncio.fixture
async def read_only(port: int) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async for client in guarded(port, allow_actions=False):
        yield client


@pytest_asyncio.fixture
async def acting(port: int) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async for client in guarded(port, allow_actions=True):
        yield client


async def token(client: TestClient[web.Request, web.Application]) -> str:
    answer = await client.get("/")
    assert answer.status == 200
    return answer.cookies[CSRF_COOKIE].value


@pytest.mark.asyncio
async def test_read_only_refuses_every_write_even_with_the_token(
    read_only: TestClient[web.Request, web.Application], port: int
) -> None:
    csrf = await token(read_only)
    origin = {"Origin": f"http://127.0.0.1:{port}"}
    answer = await read_only.post("/", data={"csrf": csrf}, headers=origin)
    assert answer.status == 403
    assert "read-only" in await answer.text()


@pytest.mark.asyncio
async def test_with_actions_a_write_needs_the_token_of_this_session_from_this_site(
    acting: TestClient[web.Request, web.Application], port: int
) -> None:
    csrf = await token(acting)
    origin = {"Origin": f"http://127.0.0.1:{port}"}
    assert (await acting.post("/", data={"csrf": csrf}, headers=origin)).status == 200
    assert (await acting.post("/", data={}, headers=origin)).status == 403
    assert (await acting.post("/", data={"csrf": "guessed"}, headers=origin)).status == 403
    evil = {"Origin": "http://evil.example"}
    assert (await acting.post("/", data={"csrf": csrf}, headers=evil)).status == 403


@pytest.mark.asyncio
async def test_a_loopback_server_answers_only_its_own_host_names(
    read_only: TestClient[web.Request, web.Application],
) -> None:
    assert (await read_only.get("/", headers={"Host": "rebound.example:80"})).status == 403


@pytest.mark.asyncio
async def test_a_row_of_the_board_is_served_alone_escaped_as_the_filters_show_it(port: int) -> None:
    dashboard = Dashboard(Settings(kubernetes.client.Configuration(), "a", port=port))
    shown = release(phase="Paused", currentStep=1, canaryWeight=25)
    shown["metadata"]["resourceVersion"] = "1"
    shown["spec"]["version"] = "<b>1.1.0</b>"
    dashboard.releases.put(shown)
    app = web.Application(middlewares=[dashboard.guard])
    app.router.add_get("/rows/{namespace}/{name}", dashboard.board_row)
    async with TestClient(TestServer(app, host="127.0.0.1", port=port)) as client:
        answer = await client.get("/rows/a/shop")
        assert answer.status == 200
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'self'")
        row = await answer.text()
        assert row.count("<tr ") == 1 and 'data-release="a/shop"' in row
        assert 'data-attention="paused with no end"' in row and "25%" in row and "1/4" in row
        assert "&lt;b&gt;1.1.0&lt;/b&gt;" in row and "<b>" not in row
        assert (await client.get("/rows/a/shop?phase=Paused&q=shop")).status == 200
        assert (await client.get("/rows/a/shop?phase=Succeeded")).status == 204, "hidden by the filters"
        assert (await client.get("/rows/b/shop")).status == 404
        assert (await client.get("/rows/a/shop", headers={"Host": "rebound.example:80"})).status == 403


def test_a_page_is_told_which_releases_changed_and_to_read_everything_after_a_burst() -> None:
    listener = Listener()
    listener.tell("a/shop")
    listener.tell("b/cart")
    listener.tell("a/shop")
    assert listener.wake.is_set()
    assert listener.take() == (
        b'event: changed\ndata: {"release": "a/shop"}\n\nevent: changed\ndata: {"release": "b/cart"}\n\n'
    )
    assert not listener.wake.is_set()
    for index in range(BURST + 1):
        listener.tell(f"a/app-{index}")
    assert listener.take() == b"event: changed\ndata: {}\n\n"
    listener.tell(None)
    assert listener.take() == b"event: changed\ndata: {}\n\n"


def test_the_release_page_renders_every_part_and_escapes_what_the_api_gave() -> None:
    dashboard = Dashboard(Settings(kubernetes.client.Configuration(), "a"))
    shown = release(
        phase="Gating",
        revision=2,
        checklist=[
            {"name": "sign-off", "kind": "approval", "group": "qa", "state": "Pending", "owner": "qa"}
        ],
        analysis=[
            {
                "metric": "errors",
                "role": "canary",
                "value": 0.5,
                "result": "Successful",
                "at": at(-timedelta()),
            }
        ],
        history=[{"revision": 1, "version": "1.0.0", "result": "Succeeded"}],
    )
    shown["spec"]["plan"] = {
        "summary": "fixes",
        "notes": "<script>alert(1)</script>",
        "changes": [{"title": "x"}],
    }
    shown["spec"]["analysis"] = {"metrics": [{"name": "errors", "query": "rate(x[1m])", "max": 1}]}
    page = dashboard.templates.get_template("release_live.html").render(
        spec=shown["spec"],
        state=shown["status"],
        row=views.row(shown, NOW),
        components=views.components(shown),
        timeline=views.timeline(shown),
        analysis=views.analysis(shown),
        approvals=[],
        events=[],
        events_note="",
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "rate(x[1m])" in page and "0.5" in page and "sign-off" in page


def test_the_chart_has_a_series_per_role_of_the_current_revision_only() -> None:
    measurements = [
        {"metric": "errors", "role": "stable", "value": 0.9, "at": at(-timedelta(minutes=10))},
        {
            "metric": "errors",
            "role": "canary",
            "value": 0.1,
            "baseline": 0.2,
            "at": at(-timedelta(minutes=4)),
        },
        {"metric": "errors", "role": "stable", "value": 0.3, "at": at(-timedelta(minutes=2))},
    ]
    history = [{"revision": 2, "startedAt": at(-timedelta(minutes=5))}]
    shown = release(revision=2, history=history, analysis=measurements)
    shown["spec"]["analysis"] = {"metrics": [{"name": "errors", "query": "q", "max": 0.5}]}
    (metric,) = views.analysis(shown)
    assert [m["value"] for m in metric["measurements"]] == [0.1, 0.3], "the revision before is left out"
    assert metric["chart"]["series"] == {
        "canary": [0.1, None],
        "baseline": [0.2, None],
        "stable": [None, 0.3],
    }
    assert metric["chart"]["max"] == 0.5 and len(metric["chart"]["at"]) == 2


@pytest.mark.parametrize(("address", "warned"), [("127.0.0.1", False), ("0.0.0.0", True)])
def test_an_address_beyond_loopback_is_served_with_a_warning(
    address: str, warned: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bound: dict[str, Any] = {}
    monkeypatch.setattr(web, "run_app", lambda app, **options: bound.update(options))
    serve(Settings(kubernetes.client.Configuration(), "a", address=address, port=3100))
    assert (bound["host"], bound["port"]) == (address, 3100)
    assert any("reachable beyond this machine" in r.message for r in caplog.records) is warned
