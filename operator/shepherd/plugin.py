"""`kubectl release ...`: read and steer Releases the way kubectl users expect.

kubectl finds this as the `kubectl-release` executable on PATH. Manual actions
are the same annotations `kubectl annotate` would set, so both ways are equal.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import click
import durationpy
import kubernetes.client
import kubernetes.config
import yaml
from kubernetes.client.exceptions import ApiException
from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table
from urllib3.exceptions import HTTPError

from shepherd import commands
from shepherd.commands import (
    Target,
    annotate,
    get_release,
    set_paused,
)
from shepherd.core.calendar import calendar
from shepherd.core.plan import Plan
from shepherd.core.timefmt import format_seconds
from shepherd.core.workloads import INSTANCE_LABEL
from shepherd.dashboard import server as dashboard_server
from shepherd.kube import GROUP, PLURAL, POLICIES, VERSION, load_configuration

# Piped output (grep, a file) keeps every cell whole, as kubectl's does; a terminal gets tables that fit it.
PIPED_WIDTH = 240
console = Console(highlight=False, width=None if sys.stdout.isatty() else PIPED_WIDTH)
SETTLED = frozenset({"Succeeded", "RolledBack", "Failed"})
WATCH_INTERVAL_SECONDS = 1.0
POLL_SECONDS = 0.2
MEASUREMENTS_SHOWN = 5


def namespace_of_context(kubeconfig: str | None, context: str | None) -> str:
    try:
        contexts, current = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
    except (kubernetes.config.ConfigException, FileNotFoundError):
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), current) if context else current
    return str((chosen or {}).get("context", {}).get("namespace") or "default")


CONNECTION_OPTIONS = ("-n", "--namespace", "--context", "--kubeconfig")


def hoist_connection_options(args: list[str]) -> list[str]:
    """kubectl takes -n, --context and --kubeconfig anywhere on the line; click only before the
    subcommand. Moving them to the front lets `kubectl release status shop -n prod` work as typed."""
    hoisted: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest.extend(args[index:])
            break
        if arg in CONNECTION_OPTIONS and index + 1 < len(args):
            hoisted.extend(args[index : index + 2])
            index += 2
            continue
        joined = arg.startswith(tuple(f"{o}=" for o in CONNECTION_OPTIONS if o.startswith("--")))
        if joined or (arg.startswith("-n") and not arg.startswith("--") and len(arg) > 2):
            hoisted.append(arg)
        else:
            rest.append(arg)
        index += 1
    return hoisted + rest


class KubectlStyleGroup(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_connection_options(args))


@click.group(cls=KubectlStyleGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-n", "--namespace", help="Namespace of the Release (default: the context's).")
@click.option("--context", help="Kubeconfig context.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig file (default: $KUBECONFIG).")
@click.pass_context
def main(ctx: click.Context, namespace: str | None, context: str | None, kubeconfig: str | None) -> None:
    """Read and steer Shepherd Releases."""
    try:
        configuration = load_configuration(kubeconfig, context)
    except (kubernetes.config.ConfigException, FileNotFoundError) as error:
        raise click.ClickException(f"no cluster configured: {error}") from None
    client = kubernetes.client.ApiClient(configuration)
    custom = kubernetes.client.CustomObjectsApi(client)
    ctx.obj = Target(client, custom, namespace or namespace_of_context(kubeconfig, context))


def wait_options(command: Any) -> Any:
    command = click.option(
        "--timeout",
        default="2m",
        show_default=True,
        help="How long to wait for the operator (Go duration: 30s, 5m).",
    )(command)
    return click.option(
        "--wait/--no-wait",
        default=True,
        show_default=True,
        help="Wait until the operator has acted on the command (an abort: until traffic is back on stable).",
    )(command)


def _command(target: Target, name: str, key: str, value: str, wait: bool, timeout: str) -> None:
    """Annotate, then wait for the operator's acknowledgement in status.commands: one numbered after the
    highest there before the annotation, for this annotation and value (the operator acts on each once)."""
    try:
        seconds = durationpy.from_str(timeout).total_seconds()
    except Exception:
        raise click.BadParameter(
            f"{timeout!r} is not a duration such as 30s or 5m", param_hint="--timeout"
        ) from None
    before = max(
        (c.get("seq", 0) for c in get_release(target, name).get("status", {}).get("commands") or []),
        default=0,
    )
    click.echo(annotate(target, name, key, value))
    if not wait:
        return
    deadline = time.monotonic() + seconds
    annotation = f"{GROUP}/{key}"

    def acknowledged(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return next(
            (
                c
                for c in status.get("commands") or []
                if c.get("seq", 0) > before and c.get("annotation") == annotation and c.get("value") == value
            ),
            None,
        )

    status, ack = _poll(target, name, deadline, acknowledged, f"the operator to act on {annotation}={value}")
    outcome = str(ack.get("outcome", ""))
    click.echo(f"release.{GROUP}/{name} {key}: {outcome}")
    if key == "abort" and outcome == "rolling back":
        status, _ = _poll(
            target,
            name,
            deadline,
            lambda s: s if s.get("phase") != "RollingBack" else None,
            "the rollback to finish",
        )
        click.echo(
            f"release.{GROUP}/{name} aborted: {status.get('phase')}, all traffic on revision "
            f"{status.get('stableRevision')} ({status.get('stableVersion')})"
        )


def _poll(
    target: Target,
    name: str,
    deadline: float,
    found: Any,
    what: str,
) -> tuple[dict[str, Any], Any]:
    while True:
        status = get_release(target, name).get("status") or {}
        result = found(status)
        if result is not None:
            return status, result
        if time.monotonic() >= deadline:
            raise click.ClickException(
                f"timed out waiting for {what}; see kubectl release status {name} "
                f"(the command stays pending until the operator acts on it)"
            )
        time.sleep(POLL_SECONDS)  # a polling interval against the API server


def _ready(status: Mapping[str, Any]) -> str:
    return next(
        (str(c.get("status")) for c in status.get("conditions") or [] if c.get("type") == "Ready"), ""
    )


def _releases(target: Target, all_namespaces: bool) -> list[dict[str, Any]]:
    try:
        if all_namespaces:
            listed = target.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        else:
            listed = target.custom.list_namespaced_custom_object(GROUP, VERSION, target.namespace, PLURAL)
    except (ApiException, HTTPError) as error:
        raise click.ClickException(f"cannot list releases: {error}") from None
    items: list[dict[str, Any]] = listed["items"]
    return items


@main.command("list")
@click.option("-A", "--all-namespaces", is_flag=True, help="Releases of every namespace.")
@click.pass_obj
def list_releases(target: Target, all_namespaces: bool) -> None:
    """Releases with their version, phase and weight."""
    items = _releases(target, all_namespaces)
    table = Table(box=None)
    for column in ("NAMESPACE", "NAME", "VERSION", "PHASE", "WEIGHT", "READY", "MESSAGE"):
        table.add_column(column)
    for item in items:
        status = item.get("status") or {}
        table.add_row(
            item["metadata"]["namespace"],
            item["metadata"]["name"],
            str(item.get("spec", {}).get("version", "")),
            str(status.get("phase", "")),
            f"{status.get('canaryWeight', 0)}%",
            _ready(status),
            escape(str(status.get("message", ""))),
        )
    console.print(table)


@main.command()
@click.argument("name")
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text")
@click.option(
    "-w", "--watch", is_flag=True, help="Follow the rollout until it settles (Succeeded, RolledBack, Failed)."
)
@click.pass_obj
def status(target: Target, name: str, output: str, watch: bool) -> None:
    """A readable view: phase, weight, steps, latest measurements, history."""
    release = get_release(target, name)
    if output != "text":
        state = release.get("status") or {}
        click.echo(
            json.dumps(state, indent=2) if output == "json" else yaml.safe_dump(state, sort_keys=False)
        )
        return
    if not watch:
        console.print(_view(name, release))
        return
    with Live(_view(name, release), console=console, auto_refresh=False) as live:
        while (release.get("status") or {}).get("phase") not in SETTLED:
            time.sleep(WATCH_INTERVAL_SECONDS)  # a refresh rate for a person, not synchronisation
            release = get_release(target, name)
            live.update(_view(name, release), refresh=True)


main.add_command(status, "get")


def _view(name: str, release: Mapping[str, Any]) -> Group:
    spec, state = release.get("spec") or {}, release.get("status") or {}
    weight = int(state.get("canaryWeight") or 0)
    lines: list[Any] = [
        f"[bold]{name}[/]  version {escape(str(spec.get('version')))}  "
        f"phase [bold]{state.get('phase', 'Pending')}[/]",
        f"weight {escape('[' + '#' * (weight // 5) + '.' * (20 - weight // 5) + ']')} {weight}%",
        *(f"  {escape(line)}" for line in replica_shares(state)),
        *(f"  {escape(line)}" for line in route_weights(state)),
        escape(str(state.get("message", ""))),
    ]
    steps = (spec.get("strategy") or {}).get("canary", {}).get("steps") or []
    current = state.get("currentStep")
    for index, step in enumerate(steps):
        marker = ">" if index == current and state.get("phase") in ("Progressing", "Paused") else " "
        lines.append(f" {marker} {index + 1}. {escape(json.dumps(step))}")
    gates = state.get("gates") or []
    if gates:
        gate_table = Table(title="gates", box=None)
        for column in ("GATE", "STATE", "MESSAGE", "SINCE"):
            gate_table.add_column(column)
        for gate in gates:
            fields = ("name", "state", "message", "lastTransitionTime")
            gate_table.add_row(*(escape(str(gate.get(field) or "")) for field in fields))
        lines.append(gate_table)
    measurements = (state.get("analysis") or [])[-MEASUREMENTS_SHOWN:]
    if measurements:
        table = Table(title="latest measurements", box=None)
        for column in ("METRIC", "ROLE", "VALUE", "BASELINE", "RESULT", "AT"):
            table.add_column(column)
        for measurement in measurements:
            keys = ("metric", "role", "value", "baseline", "result", "at")
            table.add_row(*("" if measurement.get(key) is None else str(measurement[key]) for key in keys))
        lines.append(table)
    lines.append(_history_table(state))
    return Group(*lines)


def replica_shares(state: Mapping[str, Any]) -> list[str]:
    """With replica routing, what each component's canary really gets (status.traffic): its share of the
    pods, which is its share of the requests, beside the weight the step asked for."""
    traffic = state.get("traffic")
    if not isinstance(traffic, Mapping) or traffic.get("routing") != "Replicas":
        return []
    asked = traffic.get("desiredWeight", 0)
    lines = []
    for component in traffic.get("components") or []:
        name, canary, stable = (component.get(key, 0) for key in ("name", "canaryPods", "stablePods"))
        if not canary:
            lines.append(f"{name}: no canary pod ({stable} stable)")
            continue
        lines.append(
            f"{name}: canary {component.get('canaryShare', 0)}% of pods ({canary}/{canary + stable}), "
            f"asked {asked}%"
        )
    return lines


def route_weights(state: Mapping[str, Any]) -> list[str]:
    """With Gateway API routing, each route's canary weight as it holds it, and whether it is live."""
    traffic = state.get("traffic")
    if not isinstance(traffic, Mapping) or traffic.get("routing") != "GatewayAPI":
        return []
    asked = traffic.get("desiredWeight", 0)
    lines = []
    for route in traffic.get("routes") or []:
        live = "live" if route.get("verified") else f"not live: {route.get('message') or 'not yet accepted'}"
        weight = route.get("weight")
        held = "no split found" if weight is None else f"canary {weight}%"
        lines.append(
            f"HTTPRoute {route.get('namespace')}/{route.get('name')}: {held}, asked {asked}%, {live}"
        )
    return lines


@main.command()
@click.argument("name")
@click.pass_obj
def history(target: Target, name: str) -> None:
    """Every revision this Release rolled out, and what became of it."""
    _print_history(get_release(target, name).get("status") or {})


@main.command()
@click.argument("name")
@click.option("--revision", type=click.IntRange(min=1), help="Whose notes (default: the current revision's).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def notes(target: Target, name: str, revision: int | None, output: str) -> None:
    """What a revision contained: its plan (summary, owner, risk, time, changes, notes), as recorded."""
    release = get_release(target, name)
    number = revision or int((release.get("status") or {}).get("revision") or 0)
    if not number:
        raise click.ClickException(f"release {name} has no revision yet")
    record = _revision_record(target, name, number)
    data = record.get("data") or {}
    plan = Plan.from_dict(data.get("plan") or {})
    if output == "json":
        document = {"release": name, "revision": number, "version": data.get("version"), **plan.to_dict()}
        click.echo(json.dumps(document, indent=2))
        return
    console.print(notes_view(name, number, str(data.get("version") or ""), plan))


def _revision_record(target: Target, name: str, number: int) -> dict[str, Any]:
    """The ControllerRevision the operator keeps for revision `number` of the Release."""
    apps: Any = kubernetes.client.AppsV1Api(target.client)
    try:
        record: dict[str, Any] = json.loads(
            apps.read_namespaced_controller_revision(
                f"{name}-{number}", target.namespace, _preload_content=False
            ).data
        )
    except ApiException as error:
        if error.status != 404:
            raise click.ClickException(f"the API server answered {error.status}: {error.reason}") from None
        kept = apps.list_namespaced_controller_revision(
            target.namespace, label_selector=f"{INSTANCE_LABEL}={name}"
        ).items
        numbers = ", ".join(str(n) for n in sorted(int(r.revision or 0) for r in kept)) or "none"
        raise click.ClickException(
            f"revision {number} of release {name} is not recorded (spec.rollback.revisionHistoryLimit "
            f"keeps the newest); recorded: {numbers}"
        ) from None
    return record


def notes_view(name: str, number: int, version: str, plan: Plan) -> Group:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("Release", escape(f"{name} revision {number} ({version})"))
    for label, value in (
        ("Summary", plan.summary),
        ("Owner", plan.owner),
        ("Risk", plan.risk),
        ("Not before", format_seconds(plan.not_before) if plan.not_before else ""),
    ):
        if value:
            facts.add_row(label, escape(value))
    parts: list[Any] = [facts]
    if plan.changes:
        changes = Table(title="changes", box=None)
        for column in ("ID", "TITLE", "URL"):
            changes.add_column(column)
        for change in plan.changes:
            changes.add_row(*(escape(v or "") for v in (change.id, change.title, change.url)))
        parts.append(changes)
    parts.append(Markdown(plan.notes) if plan.notes else "no release notes recorded for this revision")
    return Group(*parts)


@main.command("calendar")
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace's Releases and policies.")
@click.option("--days", type=click.IntRange(1, 366), default=14, show_default=True, help="How far ahead.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def release_calendar(target: Target, all_namespaces: bool, days: int, output: str) -> None:
    """Planned revisions, and the freezes and windows that hold releases, in time order."""
    releases = _releases(target, all_namespaces)
    namespaces = {str(r["metadata"]["namespace"]) for r in releases}
    if not all_namespaces:
        namespaces.add(target.namespace)
    notes: list[str] = []
    try:
        policies = target.custom.list_cluster_custom_object(GROUP, VERSION, POLICIES)["items"]
    except ApiException as error:
        policies = []
        notes.append(f"ReleasePolicies not shown: the API server answered {error.status} {error.reason}")
    labels = {namespace: _namespace_labels(target, namespace, notes) for namespace in sorted(namespaces)}
    entries = calendar(releases, policies, labels, datetime.now(UTC), days)
    if output == "json":
        click.echo(json.dumps({"entries": [e.to_dict() for e in entries], "notes": notes}, indent=2))
        return
    table = Table(box=None, title=f"the next {days} days")
    for column in ("FROM", "UNTIL", "NAMESPACE", "KIND", "NAME", "DETAIL"):
        table.add_column(column)
    for entry in entries:
        shown = entry.to_dict()
        table.add_row(
            shown["start"] or "(under way)",
            shown["end"] or "",
            *(escape(shown[key]) for key in ("namespace", "kind", "name", "detail")),
        )
    console.print(table)
    for note in notes:
        click.echo(f"note: {note}", err=True)


def _namespace_labels(target: Target, namespace: str, notes: list[str]) -> dict[str, str]:
    """A namespace's labels select the policies that apply to it; without them, only unselective ones."""
    try:
        found: Any = kubernetes.client.CoreV1Api(target.client).read_namespace(namespace)
    except ApiException as error:
        notes.append(f"namespace {namespace}: labels not read ({error.status} {error.reason})")
        return {}
    return dict(found.metadata.labels or {})


def _print_history(state: Mapping[str, Any]) -> None:
    console.print(_history_table(state))


def _history_table(state: Mapping[str, Any]) -> Table:
    table = Table(title="history", box=None)
    for column in ("REVISION", "VERSION", "ATTEMPT", "RESULT", "REASON", "ORIGIN", "STARTED", "FINISHED"):
        table.add_column(column)
    for entry in state.get("history") or []:
        origin = f"rollback to {entry['rollbackOf']}" if entry.get("rollbackOf") else "spec"
        table.add_row(
            *(str(entry.get(key, "")) for key in ("revision", "version", "attempt", "result", "reason")),
            origin,
            *(str(entry.get(key, "")) for key in ("startedAt", "finishedAt")),
        )
    return table


@main.command()
@click.argument("name")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def checklist(target: Target, name: str, output: str) -> None:
    """The readiness checklist of the current revision: every gate and sign-off, its state, its owner,
    who signed and when, and when it passed."""
    release = get_release(target, name)
    state = release.get("status") or {}
    if output == "json":
        click.echo(json.dumps(checklist_document(name, release), indent=2))
        return
    console.print(checklist_view(name, state))


def checklist_document(name: str, release: Mapping[str, Any]) -> dict[str, Any]:
    """`checklist -o json`: the items of status.checklist, with the revision they are of."""
    state = release.get("status") or {}
    return {
        "release": name,
        "namespace": (release.get("metadata") or {}).get("namespace"),
        "revision": state.get("revision"),
        "version": state.get("version"),
        "phase": state.get("phase"),
        "items": list(state.get("checklist") or []),
    }


STATE_STYLES = {"Passed": "green", "Pending": "yellow", "Failed": "red"}


def checklist_view(name: str, state: Mapping[str, Any]) -> Table | str:
    items = state.get("checklist") or []
    revision = f"revision {state.get('revision')} ({state.get('version')})"
    if not items:
        return f"release {name}, {revision}: no gates, nothing to check"
    done = sum(1 for item in items if item.get("state") == "Passed")
    table = Table(title=f"checklist of release {name}, {revision}: {done}/{len(items)} passed", box=None)
    for column in ("ITEM", "ROLE", "KIND", "STATE", "OWNER", "SIGNED BY", "PASSED AT", "MESSAGE"):
        table.add_column(column)
    for item in items:
        title = escape(str(item.get("name", "")))
        if item.get("description"):
            title += f"\n[dim]{escape(str(item['description']))}[/]"
        state_name = str(item.get("state", ""))
        table.add_row(
            title,
            escape(str(item.get("group", ""))),
            escape(str(item.get("kind", ""))),
            f"[{STATE_STYLES.get(state_name, 'default')}]{escape(state_name)}[/]",
            escape(str(item.get("owner", ""))),
            escape("\n".join(signer_line(signer) for signer in item.get("signedBy") or [])),
            escape(str(item.get("passedAt", ""))),
            escape(str(item.get("message", ""))),
        )
    return table


def signer_line(signer: Mapping[str, Any]) -> str:
    role = f" for {signer['group']}" if signer.get("group") else ""
    at = f" at {signer['at']}" if signer.get("at") else ""
    return f"{signer.get('user', '')}{role}{at}"


@main.command()
@click.argument("name")
@click.option("--full", is_flag=True, help="Skip every remaining step, not just the current one.")
@wait_options
@click.pass_obj
def promote(target: Target, name: str, full: bool, wait: bool, timeout: str) -> None:
    """Skip the current pause or step (or all of them with --full)."""
    _command(target, name, "promote", "full" if full else "true", wait, timeout)


@main.command()
@click.argument("name")
@click.pass_obj
def pause(target: Target, name: str) -> None:
    """Set spec.paused: the rollout holds where it is (under GitOps, commit it instead)."""
    click.echo(set_paused(target, name, True))


@main.command()
@click.argument("name")
@click.pass_obj
def resume(target: Target, name: str) -> None:
    """Clear spec.paused: the rollout goes on."""
    click.echo(set_paused(target, name, False))


@main.command()
@click.argument("name")
@wait_options
@click.pass_obj
def abort(target: Target, name: str, wait: bool, timeout: str) -> None:
    """Roll the revision in flight back now; waits until all traffic is on the stable revision."""
    _command(target, name, "abort", "true", wait, timeout)


@main.command()
@click.argument("name")
@wait_options
@click.pass_obj
def retry(target: Target, name: str, wait: bool, timeout: str) -> None:
    """Start a RolledBack or Failed revision again."""
    _command(target, name, "retry", "true", wait, timeout)


@main.command()
@click.argument("name")
@click.option("--comment", default="", help='Why you approve, e.g. "dashboards look fine".')
@click.option(
    "--revision",
    type=click.IntRange(min=1),
    help="The revision you reviewed: refused if the Release is at another one (default: its current one).",
)
@click.option(
    "--group",
    default="",
    help="The role you sign off for: one of your Kubernetes groups that an approval gate's from lists.",
)
@click.pass_obj
def approve(target: Target, name: str, comment: str, revision: int | None, group: str) -> None:
    """Approve the Release's current revision as yourself (a ReleaseApproval naming you), for a role with
    --group."""
    done = commands.approve(target, name, comment, revision, group)
    for warning in done.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(done.message)


@main.command()
@dashboard_server.options
@click.pass_obj
def dashboard(target: Target, port: int, address: str, allow_actions: bool) -> None:
    """A release board in the browser, as you (your RBAC applies); read-only unless --allow-actions."""
    settings = dashboard_server.Settings(
        target.client.configuration, target.namespace, address, port, allow_actions
    )
    dashboard_server.serve(settings)


@main.command()
@click.argument("name")
@click.option(
    "--to-revision",
    type=click.IntRange(min=1),
    help="Revision to roll back to (see `kubectl release history`); default: the previous stable one.",
)
@wait_options
@click.pass_obj
def rollback(target: Target, name: str, to_revision: int | None, wait: bool, timeout: str) -> None:
    """Roll code and config back to a recorded revision, as a new revision through the usual steps."""
    value = "previous" if to_revision is None else str(to_revision)
    _command(target, name, "rollback", value, wait, timeout)
