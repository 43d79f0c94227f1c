"""Story: the release board in a real browser (Debian's Chromium, driven by Playwright), served by
`shepherd dashboard` and `kubectl release dashboard` as real users of the real control plane: client
certificates whose O names their groups. Every read and write is the user's own, so what the board lists
and what a click may change is what RBAC and the chart's admission policies allow that user.

Screenshots of each page are kept under .artifacts/screenshots/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from helpers import free_port
from prometheus_fixtures import wait_for_value
from shepherd.core.promql import render_query
from shepherd.lab.controlplane import ControlPlane
from shepherd.lab.exporter import SeriesKey, TrafficExporter
from shepherd.lab.promserver import PrometheusServer
from shepherd.prometheus import Connection, Prometheus
from story import Story, grant, kubectl_binary, quickstart_release

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / ".artifacts" / "screenshots"
CHROMIUM = os.environ.get("SHEPHERD_CHROMIUM", "/usr/bin/chromium")
LIVE_SECONDS = 1.0  # a change the API server holds shows on an open page within this
SERVER_START_SECONDS = 30.0
GROUPS = {"alice": ["qa"], "carol": [], "vera": []}
SIGN_OFF: dict[str, Any] = {
    "name": "sign-off",
    "description": "QA has run the regression suite",
    "approval": {"from": [{"group": "qa"}]},
}
NOTES = "Fixes checkout.\n\n<script>window.pwned = true</script> <b>not bold</b>"
READ = ["get", "list", "watch"]


def rules(release_verbs: list[str], approval_verbs: list[str]) -> list[dict[str, Any]]:
    return [
        {"apiGroups": ["shepherd.dev"], "resources": ["releases"], "verbs": release_verbs},
        {"apiGroups": ["shepherd.dev"], "resources": ["releaseapprovals"], "verbs": approval_verbs},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
    ]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


@pytest.fixture
def other_namespace(admin: kubernetes.client.ApiClient, namespace: str) -> Iterator[str]:
    name = f"{namespace}-b"
    core = kubernetes.client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def people(
    control_plane: ControlPlane, story: Story, admin: kubernetes.client.ApiClient, tmp_path: Path
) -> Path:
    """alice (qa) may read, change and sign off Releases of the story's namespace; carol may only read
    them; vera may read Releases of every namespace."""
    grant(admin, story.namespace, "release-managers", rules([*READ, "patch"], [*READ, "create"]), ["alice"])
    grant(admin, story.namespace, "release-readers", rules(READ, READ), ["carol"])
    rbac = kubernetes.client.RbacAuthorizationV1Api(admin)
    viewer = f"release-viewer-{story.namespace}"
    rbac.create_cluster_role({"metadata": {"name": viewer}, "rules": rules(READ, READ)})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": viewer},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": viewer},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "vera"}],
        }
    )
    return control_plane.users_kubeconfig(GROUPS, tmp_path / "people.kubeconfig")


@contextmanager
def dashboard(command: list[str], port: int, log: Path) -> Iterator[str]:
    """A dashboard process, until it answers its board; stopped at the end."""
    env = os.environ | {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            assert process.poll() is None, f"the dashboard exited:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, f"no dashboard on {url}:\n{log.read_text()}"
            time.sleep(0.1)  # polling the port until the server binds it
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def shepherd_dashboard(kubeconfig: Path, user: str, namespace: str, port: int, *flags: str) -> list[str]:
    shepherd = str(Path(sys.executable).with_name("shepherd"))
    connection = ["--kubeconfig", str(kubeconfig), "--context", user, "-n", namespace]
    return [shepherd, "dashboard", *connection, "--port", str(port), *flags]


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port`, from /proc/net/tcp (hex, little-endian)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def post(url: str, fields: dict[str, str], headers: dict[str, str]) -> int:
    body = "&".join(f"{k}={v}" for k, v in fields.items()).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_board_shows_what_each_user_may_list_and_follows_a_canary_without_a_reload(
    story: Story,
    people: Path,
    other_namespace: str,
    admin: kubernetes.client.ApiClient,
    page: Page,
    tmp_path: Path,
) -> None:
    plan = {"summary": "checkout fixes", "notes": NOTES, "risk": "low", "owner": "shop-team"}
    story.apply(quickstart_release("1.0.0", plan=plan))
    story.wait_phase("Succeeded", revision=1)
    cart = quickstart_release("2.0.0")
    cart["metadata"] = {"name": "cart", "namespace": other_namespace}
    custom = kubernetes.client.CustomObjectsApi(admin)
    custom.create_namespaced_custom_object("shepherd.dev", "v1alpha1", other_namespace, "releases", cart)

    # vera may list Releases in every namespace: through `kubectl release dashboard`, both are on her board.
    port = free_port()
    command = [kubectl_binary(), "release", "--kubeconfig", str(people), "--context", "vera", "dashboard"]
    with dashboard([*command, "--port", str(port)], port, tmp_path / "vera.log") as url:
        assert listening_addresses(port) == {"127.0.0.1"}, "the default bind is loopback only"
        page.goto(f"{url}/")
        board = page.locator("table.board")
        expect(board.locator(f'tr[data-release="{story.namespace}/shop"]')).to_be_visible()
        expect(board.locator(f'tr[data-release="{other_namespace}/cart"]')).to_be_visible()
        expect(page.locator(".mode")).to_contain_text("every namespace")
        shot(page, "board")

        page.select_option('select[name="namespace"]', other_namespace)
        page.click("text=Filter")
        expect(board.locator("tbody tr")).to_have_count(1)
        expect(board.locator(f'tr[data-release="{other_namespace}/cart"]')).to_be_visible()

        page.goto(f"{url}/calendar")
        expect(page.locator("h1")).to_have_text("The next 14 days")
        shot(page, "calendar")

    # alice may list Releases of the story's namespace only: her board falls back to it, without cart.
    port = free_port()
    command = shepherd_dashboard(people, "alice", story.namespace, port)
    with dashboard(command, port, tmp_path / "alice.log") as url:
        page.goto(f"{url}/")
        expect(page.locator(".mode")).to_contain_text(f"namespace {story.namespace}")
        expect(page.locator(f'tr[data-release="{story.namespace}/shop"]')).to_be_visible()
        expect(page.locator("table.board tbody tr")).to_have_count(1)

        page.goto(f"{url}/releases/{story.namespace}/shop")
        expect(page.locator("body")).to_have_attribute("data-live", "connected")
        # Read-only: no action at all on the page, and the server refuses a write even with the token.
        expect(page.locator("form[method=post]")).to_have_count(0)
        cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "shepherd_csrf")
        forged = post(
            f"{url}/releases/{story.namespace}/shop",
            {"action": "abort", "csrf": cookie},
            {"Cookie": f"shepherd_csrf={cookie}", "Origin": url},
        )
        assert forged == 403
        assert "shepherd.dev/abort" not in (story.release()["metadata"].get("annotations") or {})

        # The notes' markup is text: shown as written, never run.
        expect(page.locator("#notes")).to_contain_text("<script>window.pwned = true</script> <b>not bold</b>")
        assert page.evaluate("window.pwned") is None
        assert page.locator("#notes b").count() == 0

        # A step that advances shows without a reload: the page's own state survives the change.
        page.evaluate("window.unreloaded = true")
        steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
        paused = quickstart_release("1.1.0", plan=plan)
        paused["spec"]["strategy"]["canary"]["steps"] = steps
        story.apply(paused)
        story.wait(
            "the canary paused at step 2", lambda s: s.get("phase") == "Paused" and s["currentStep"] == 1
        )
        expect(page.locator("#step")).to_contain_text("1/4", timeout=LIVE_SECONDS * 1000)
        expect(page.locator("#traffic")).to_contain_text("25%", timeout=LIVE_SECONDS * 1000)
        shot(page, "release")
        story.kubectl("release", "promote", "shop", "--no-wait")
        story.wait("the canary at step 4", lambda s: s.get("currentStep") == 3)
        expect(page.locator("#step")).to_contain_text("3/4", timeout=LIVE_SECONDS * 1000)
        expect(page.locator("#traffic")).to_contain_text("50%", timeout=LIVE_SECONDS * 1000)
        assert page.evaluate("window.unreloaded") is True, "the page was not reloaded"


def test_with_actions_a_qa_member_signs_off_as_herself_and_a_refusal_is_shown(
    story: Story, people: Path, admin: kubernetes.client.ApiClient, page: Page, tmp_path: Path
) -> None:
    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    story.apply(quickstart_release("1.1.0", gates=[SIGN_OFF]))
    story.wait_phase("Gating", revision=2)

    port = free_port()
    command = shepherd_dashboard(people, "carol", story.namespace, port, "--allow-actions")
    with dashboard(command, port, tmp_path / "carol.log") as url:
        page.goto(f"{url}/")
        expect(page.locator(".attention")).to_contain_text("waiting for sign-off by qa")
        page.goto(f"{url}/releases/{story.namespace}/shop")
        # A write from another site, or without this session's token, is refused before it reaches the API.
        cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "shepherd_csrf")
        target = f"{url}/releases/{story.namespace}/shop"
        assert post(target, {"action": "pause"}, {"Cookie": f"shepherd_csrf={cookie}", "Origin": url}) == 403
        forged = {"Cookie": f"shepherd_csrf={cookie}", "Origin": "http://evil.example"}
        assert post(target, {"action": "pause", "csrf": cookie}, forged) == 403
        assert not story.release()["spec"].get("paused")

        # carol may not create ReleaseApprovals: the API server's refusal is on the page.
        page.select_option('select[name="group"]', "qa")
        page.click("text=Approve revision 2")
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("forbidden")
        expect(alert).to_contain_text('User "carol" cannot create resource "releaseapprovals"')
        shot(page, "refused")

    port = free_port()
    command = shepherd_dashboard(people, "alice", story.namespace, port, "--allow-actions")
    with dashboard(command, port, tmp_path / "alice.log") as url:
        page.goto(f"{url}/releases/{story.namespace}/shop")
        page.select_option('select[name="group"]', "qa")
        page.fill('input[name="comment"]', "regression suite green")
        page.click("text=Approve revision 2")
        expect(page.get_by_role("status").filter(has_text="alice approves")).to_contain_text(
            "alice approves revision 2 of release shop for qa"
        )
        approvals = kubernetes.client.CustomObjectsApi(admin).list_namespaced_custom_object(
            "shepherd.dev", "v1alpha1", story.namespace, "releaseapprovals"
        )["items"]
        assert [(a["spec"]["approver"], a["spec"].get("group")) for a in approvals] == [("alice", "qa")]
        story.wait_phase("Succeeded", revision=2)
        expect(page.locator("#phase")).to_have_text("Succeeded", timeout=LIVE_SECONDS * 1000)
        shot(page, "approved")
        assert re.search(r"alice for qa", page.locator("section", has_text="Checklist").inner_text())


ERROR_RATE = (
    'sum(rate(http_requests_total{namespace="{{namespace}}",release="{{release}}",version="{{version}}",'
    'code=~"5.."}[5s])) / sum(rate(http_requests_total{namespace="{{namespace}}",release="{{release}}",'
    'version="{{version}}"}[5s]))'
)


def test_the_analysis_chart_shows_what_prometheus_measured(
    story: Story,
    people: Path,
    prometheus: PrometheusServer,
    exporter: TrafficExporter,
    page: Page,
    tmp_path: Path,
) -> None:
    def serve(version: str, role: str) -> None:
        for component in ("api", "web"):
            exporter.set_traffic(
                SeriesKey(story.namespace, "shop", component, version, role), rps=50, error_ratio=0.02
            )
        query = render_query(
            ERROR_RATE, {"namespace": story.namespace, "release": "shop", "version": version}
        )
        wait_for_value(Prometheus(Connection(prometheus.url)), query)

    def analysed(version: str) -> dict[str, Any]:
        metric = {"name": "error-rate", "query": ERROR_RATE, "max": 0.05, "count": 3}
        return quickstart_release(
            version,
            strategy={"canary": {"steps": [{"setWeight": 50}, {"analysis": {}}, {"setWeight": 75}]}},
            analysis={
                "prometheus": {"address": prometheus.url, "timeout": "2s"},
                "interval": "1s",
                "metrics": [metric],
            },
        )

    serve("1.0.0", "stable")
    story.apply(analysed("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    serve("1.1.0", "canary")
    story.apply(analysed("1.1.0"))
    status = story.wait_phase("Succeeded", revision=2)
    started = stamp(next(h["startedAt"] for h in status["history"] if h["revision"] == 2))
    # This revision's measurements: its canary's, then its bake's (the stable pods run it by then).
    measured = [m for m in status["analysis"] if m["metric"] == "error-rate" and stamp(m["at"]) >= started]
    assert {m["role"] for m in measured} == {"canary", "stable"}, measured
    assert len(measured) >= 3 and all(0.0 < m["value"] < 0.05 for m in measured), measured

    port = free_port()
    with dashboard(
        shepherd_dashboard(people, "carol", story.namespace, port), port, tmp_path / "carol.log"
    ) as url:
        page.goto(f"{url}/releases/{story.namespace}/shop")
        plot = page.locator("figure.chart .uplot")
        expect(plot).to_have_attribute("data-points", str(len(measured)))
        legend = page.locator("figure.chart .u-legend")
        for label in ("canary", "stable", "max"):
            expect(legend).to_contain_text(label)
        shown = page.locator(
            'table.measurements[data-metric="error-rate"] tbody tr td:nth-child(3)'
        ).all_inner_texts()
        assert shown == [str(m["value"]) for m in measured]
        shot(page, "analysis")
