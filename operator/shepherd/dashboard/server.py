"""The dashboard's web server: pages rendered from watch-fed stores, changes pushed to open pages with
server-sent events, and the plugin's own verbs behind --allow-actions.

The stores are filled by the project's supervised informers with the user's credentials; each page reads
them, and the few things not watched (Events, ReleasePolicies, namespaces' labels) are read when a page
asks for them, also as the user.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import jinja2
import kubernetes.client
from aiohttp import web
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from shepherd import commands
from shepherd.commands import CommandError, Target
from shepherd.core.calendar import calendar
from shepherd.dashboard import views
from shepherd.informers import Connection, Informer, Resource, Store
from shepherd.kube import APPROVALS, GROUP, PLURAL, POLICIES, VERSION

logger = logging.getLogger(__name__)

DEFAULT_PORT = 3100
LOOPBACK = "127.0.0.1"
CSRF_COOKIE = "shepherd_csrf"
CSRF = web.RequestKey("csrf", str)
KEEPALIVE_SECONDS = 15.0
SYNC_SECONDS = 10.0  # the first page waits this long at most for the first list
BURST = 50  # more Releases changed than this before a page reads them: it re-reads the whole board
CALENDAR_DAYS = 14
EVENTS_SHOWN = 20
# Each verb with the annotation value the plugin gives it by default (pause and resume set spec.paused).
ANNOTATED = {"promote": "true", "abort": "true", "retry": "true", "rollback": "previous"}
ACTIONS = (*ANNOTATED, "pause", "resume", "approve")
STATIC = Path(__file__).parent / "static"
REFUSALS = frozenset({400, 401, 403, 404, 409, 422})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Settings:
    configuration: kubernetes.client.Configuration
    namespace: str  # the context's: the board's scope when the user may not list every namespace
    address: str = LOOPBACK
    port: int = DEFAULT_PORT
    allow_actions: bool = False


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def act(target: Target, name: str, action: str, form: Mapping[str, str]) -> str:
    """One verb of `kubectl release`, through the same function the plugin calls."""
    if action == "approve":
        done = commands.approve(target, name, form.get("comment", ""), None, form.get("group", ""))
        return "; ".join((done.message, *(f"warning: {w}" for w in done.warnings)))
    if action in ("pause", "resume"):
        return commands.set_paused(target, name, action == "pause")
    return commands.annotate(target, name, action, ANNOTATED[action])


def release_key(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> str:
    meta = (new or old or {}).get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def filters_of(query: Mapping[str, str]) -> views.Filters:
    return views.Filters(query.get("namespace", ""), query.get("phase", ""), query.get("q", ""))


@dataclass(eq=False)
class Listener:
    """What one open page has yet to be told: which Releases changed, or that anything may have."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    releases: set[str] = field(default_factory=set)
    everything: bool = False

    def tell(self, release: str | None) -> None:
        if release is None or len(self.releases) >= BURST:
            self.everything = True
        else:
            self.releases.add(release)
        self.wake.set()

    def take(self) -> bytes:
        """The server-sent events for what is pending, one per Release (all of it: an empty one)."""
        notices: list[dict[str, str]] = [{"release": r} for r in sorted(self.releases)]
        if self.everything:
            notices = [{}]
        self.everything, self.releases = False, set()
        self.wake.clear()
        return b"".join(f"event: changed\ndata: {json.dumps(n)}\n\n".encode() for n in notices)


@dataclass
class Dashboard:
    settings: Settings
    releases: Store = field(default_factory=Store)
    approvals: Store = field(default_factory=Store)
    scope: str | None = None  # the namespace watched; None: every namespace
    listeners: set[Listener] = field(default_factory=set)
    informers: list[Informer] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _connection: Connection | None = None

    def __post_init__(self) -> None:
        self.client = kubernetes.client.ApiClient(self.settings.configuration)
        self.custom: Any = kubernetes.client.CustomObjectsApi(self.client)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("shepherd.dashboard", "templates"),
            autoescape=True,
        )

    def target(self, namespace: str) -> Target:
        return Target(self.client, self.custom, namespace)

    async def start(self, _app: web.Application | None = None) -> None:
        self.scope = await asyncio.to_thread(self._scope)
        logger.info("watching Releases in %s", self.scope or "every namespace")
        self._connection = Connection(self.settings.configuration)
        for plural, store in ((PLURAL, self.releases), (APPROVALS, self.approvals)):
            informer = Informer(
                self._connection,
                Resource(GROUP, VERSION, plural),
                store,
                namespace=self.scope,
                # A Release's change names it, so a board re-reads only its row; an approval's may touch any.
                changed=(lambda old, new: self.notify(release_key(old, new)))
                if plural == PLURAL
                else (lambda old, new: self.notify()),
                relisted=self.notify,
            )
            self.informers.append(informer)
            self._tasks.append(asyncio.create_task(informer.run()))

    async def stop(self, _app: web.Application | None = None) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()
        self.client.close()  # type: ignore[no-untyped-call]

    def _scope(self) -> str | None:
        """Every namespace if the user may list Releases across them, else the context's namespace."""
        try:
            self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)
        except ApiException as error:
            if error.status != 403:
                raise
            return self.settings.namespace
        return None

    def notify(self, release: str | None = None) -> None:
        for listener in self.listeners:
            listener.tell(release)

    async def synced(self) -> None:
        waits = [asyncio.wait_for(i.synced.wait(), SYNC_SECONDS) for i in self.informers[:1]]
        try:
            await asyncio.gather(*waits)
        except TimeoutError:
            logger.warning("no list of Releases yet after %ss: showing what there is", SYNC_SECONDS)

    def release_list(self) -> list[dict[str, Any]]:
        return list(self.releases.objects.values())

    # Pages

    def render(self, request: web.Request, page: str, status: int = 200, **context: Any) -> web.Response:
        context |= {
            "csrf": request.get(CSRF, ""),
            "actions": self.settings.allow_actions,
            "scope": self.scope,
            "request": request,
            "page": page,
        }
        fragment = request.headers.get("X-Fragment") == "1"
        template = self.templates.get_template(f"{page}_live.html" if fragment else f"{page}.html")
        return web.Response(text=template.render(context), status=status, content_type="text/html")

    async def board_page(self, request: web.Request) -> web.Response:
        await self.synced()
        filters = filters_of(request.query)
        shown = views.board(self.release_list(), filters, datetime.now(UTC))
        return self.render(request, "board", board=shown, filters=filters)

    async def board_row(self, request: web.Request) -> web.Response:
        """One Release's row of the board, as the board's filters (the query) show it: 204 if they hide it,
        404 if it is gone, so the page knows to re-read the whole board."""
        await self.synced()
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        release = self.releases.get(namespace, name)
        if release is None:
            raise web.HTTPNotFound(text=f"release {namespace}/{name} is not among those you may list")
        filters = filters_of(request.query)
        shown = views.row(release, datetime.now(UTC))
        if not filters.admits(shown):
            return web.Response(status=204)
        html = self.templates.get_template("board_row.html").render(row=shown)
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def release_page(
        self, request: web.Request, flash: Mapping[str, str] | None = None, status: int = 200
    ) -> web.Response:
        await self.synced()
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        release = self.releases.get(namespace, name)
        if release is None:
            raise web.HTTPNotFound(text=f"release {namespace}/{name} is not among those you may list")
        events, events_note = await asyncio.to_thread(self._events, namespace, name)
        state = release.get("status") or {}
        approvals = [
            a for a in self.approvals.in_namespace(namespace) if (a.get("spec") or {}).get("release") == name
        ]
        return self.render(
            request,
            "release",
            status=status,
            release=release,
            spec=release.get("spec") or {},
            state=state,
            row=views.row(release, datetime.now(UTC)),
            components=views.components(release),
            timeline=views.timeline(release),
            analysis=views.analysis(release),
            roles=views.approval_roles(state.get("checklist") or []),
            approvals=approvals,
            events=events,
            events_note=events_note,
            flash=flash or {},
            action_names=ACTIONS,
        )

    def _events(self, namespace: str, name: str) -> tuple[list[Any], str]:
        selector = f"involvedObject.name={name},involvedObject.kind=Release"
        try:
            listed = kubernetes.client.CoreV1Api(self.client).list_namespaced_event(
                namespace, field_selector=selector
            )
        except ApiException as error:
            return [], f"Events not shown: {commands.api_message(error)}"
        except HTTPError as error:
            return [], f"Events not shown: {error}"
        newest = sorted(
            listed.items,
            key=lambda e: str(e.last_timestamp or e.event_time or ""),
            reverse=True,
        )
        return newest[:EVENTS_SHOWN], ""

    async def calendar_page(self, request: web.Request) -> web.Response:
        await self.synced()
        releases = self.release_list()
        notes: list[str] = []
        policies, labels = await asyncio.to_thread(self._calendar_inputs, releases, notes)
        entries = calendar(releases, policies, labels, datetime.now(UTC), CALENDAR_DAYS)
        return self.render(request, "calendar", entries=entries, notes=notes, days=CALENDAR_DAYS)

    def _calendar_inputs(
        self, releases: list[dict[str, Any]], notes: list[str]
    ) -> tuple[list[Any], dict[str, dict[str, str]]]:
        try:
            policies: list[Any] = self.custom.list_cluster_custom_object(GROUP, VERSION, POLICIES)["items"]
        except ApiException as error:
            policies = []
            notes.append(f"ReleasePolicies not shown: {commands.api_message(error)}")
        namespaces = {str(r["metadata"]["namespace"]) for r in releases}
        if self.scope:
            namespaces.add(self.scope)
        core = kubernetes.client.CoreV1Api(self.client)
        labels: dict[str, dict[str, str]] = {}
        for namespace in sorted(namespaces):
            try:
                found: Any = core.read_namespace(namespace)
                labels[namespace] = dict(found.metadata.labels or {})
            except ApiException as error:
                labels[namespace] = {}
                notes.append(f"namespace {namespace}: labels not read ({error.status} {error.reason})")
        return policies, labels

    async def act_on_release(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        form = {k: str(v) for k, v in (await request.post()).items()}
        action = form.get("action", "")
        if action not in ACTIONS:
            raise web.HTTPBadRequest(text=f"no such action: {action!r}")
        try:
            message = await asyncio.to_thread(act, self.target(namespace), name, action, form)
        except CommandError as error:
            status = error.status if error.status in REFUSALS else 502
            return await self.release_page(request, {"error": error.message}, status)
        return await self.release_page(request, {"done": message})

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        listener = Listener()
        self.listeners.add(listener)
        try:
            await response.write(b"retry: 1000\n: connected\n\n")
            while True:
                try:
                    await asyncio.wait_for(listener.wake.wait(), KEEPALIVE_SECONDS)
                    await response.write(listener.take())
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
        except ConnectionResetError:
            pass
        finally:
            self.listeners.discard(listener)
        return response

    # Protection

    def allowed_hosts(self) -> frozenset[str] | None:
        """The Host headers a loopback server answers (DNS rebinding); None: any (an explicit address)."""
        if not is_loopback(self.settings.address):
            return None
        port = self.settings.port
        return frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})

    @web.middleware
    async def guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        hosts = self.allowed_hosts()
        if hosts is not None and request.host not in hosts:
            raise web.HTTPForbidden(text=f"this dashboard does not answer for host {request.host}")
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if request.method not in ("GET", "HEAD"):
            if not self.settings.allow_actions:
                raise web.HTTPForbidden(text="read-only: this dashboard was started without --allow-actions")
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"{request.scheme}://{request.host}":
                raise web.HTTPForbidden(text=f"a write from another site ({origin}) is refused")
            given = str((await request.post()).get("csrf", ""))
            if not (cookie and given and hmac.compare_digest(cookie, given)):
                raise web.HTTPForbidden(text="a write without this session's token is refused")
        request[CSRF] = cookie or secrets.token_urlsafe(32)
        response = await handler(request)
        if not cookie and not response.prepared:
            response.set_cookie(CSRF_COOKIE, request[CSRF], httponly=True, samesite="Strict", path="/")
        if not response.prepared:
            response.headers.update(
                {
                    "Content-Security-Policy": CSP,
                    "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin",
                }
            )
        return response


def application(dashboard: Dashboard) -> web.Application:
    app = web.Application(middlewares=[dashboard.guard])
    app.on_startup.append(dashboard.start)
    app.on_cleanup.append(dashboard.stop)
    app.add_routes(
        [
            web.get("/", dashboard.board_page),
            web.get("/calendar", dashboard.calendar_page),
            web.get("/events", dashboard.events),
            web.get("/rows/{namespace}/{name}", dashboard.board_row),
            web.get("/releases/{namespace}/{name}", dashboard.release_page),
            web.post("/releases/{namespace}/{name}", dashboard.act_on_release),
            web.static("/static", str(STATIC)),
        ]
    )
    return app


def options(command: Any) -> Any:
    """The options `shepherd dashboard` and `kubectl release dashboard` share."""
    command = click.option(
        "--allow-actions",
        is_flag=True,
        help="Offer approve, promote, abort, pause, resume, retry and rollback (as you); else every write is "
        "refused.",
    )(command)
    command = click.option(
        "--address",
        default=LOOPBACK,
        show_default=True,
        help="Address to bind; anything but loopback lets others act with your credentials (it warns).",
    )(command)
    return click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))(
        command
    )


def serve(settings: Settings) -> None:
    """Serve until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not is_loopback(settings.address):
        logger.warning(
            "serving on %s, reachable beyond this machine: anyone who reaches it acts with your credentials "
            "(put an authenticating proxy in front)",
            settings.address,
        )
    url = f"http://{settings.address}:{settings.port}/"
    mode = "actions allowed" if settings.allow_actions else "read-only"
    print(f"Shepherd dashboard on {url} ({mode})", flush=True)
    web.run_app(
        application(Dashboard(settings)),
        host=settings.address,
        port=settings.port,
        print=None,
        shutdown_timeout=1.0,
    )
