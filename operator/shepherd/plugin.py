"""`kubectl release ...`: read and steer Releases the way kubectl users expect.

kubectl finds this as the `kubectl-release` executable on PATH. Manual actions
are the same annotations `kubectl annotate` would set, so both ways are equal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click
import kubernetes.client
import kubernetes.config
import yaml
from kubernetes.client.exceptions import ApiException
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from urllib3.exceptions import HTTPError

from shepherd.kube import GROUP, MERGE_PATCH, PLURAL, VERSION, load_configuration

console = Console(highlight=False)


@dataclass
class Target:
    custom: Any
    namespace: str


def _namespace_of_context(kubeconfig: str | None, context: str | None) -> str:
    try:
        contexts, current = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
    except (kubernetes.config.ConfigException, FileNotFoundError):
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), current) if context else current
    return str((chosen or {}).get("context", {}).get("namespace") or "default")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    custom = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(configuration))
    ctx.obj = Target(custom, namespace or _namespace_of_context(kubeconfig, context))


def _get(target: Target, name: str) -> dict[str, Any]:
    try:
        release: dict[str, Any] = target.custom.get_namespaced_custom_object(
            GROUP, VERSION, target.namespace, PLURAL, name
        )
    except ApiException as error:
        if error.status == 404:
            raise click.ClickException(
                f'release "{name}" not found in namespace "{target.namespace}"'
            ) from None
        raise click.ClickException(f"the API server answered {error.status}: {error.reason}") from None
    except HTTPError as error:
        raise click.ClickException(f"cannot reach the cluster: {error}") from None
    return release


def _annotate(target: Target, name: str, key: str, value: str) -> None:
    _get(target, name)
    patch = {"metadata": {"annotations": {f"{GROUP}/{key}": value}}}
    target.custom.patch_namespaced_custom_object(
        GROUP, VERSION, target.namespace, PLURAL, name, patch, _content_type=MERGE_PATCH
    )
    click.echo(f"release.{GROUP}/{name} {key} requested")


def _ready(status: Mapping[str, Any]) -> str:
    return next(
        (str(c.get("status")) for c in status.get("conditions") or [] if c.get("type") == "Ready"), ""
    )


@main.command("list")
@click.option("-A", "--all-namespaces", is_flag=True, help="Releases of every namespace.")
@click.pass_obj
def list_releases(target: Target, all_namespaces: bool) -> None:
    """Releases with their version, phase and weight."""
    try:
        if all_namespaces:
            items = target.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        else:
            items = target.custom.list_namespaced_custom_object(GROUP, VERSION, target.namespace, PLURAL)[
                "items"
            ]
    except (ApiException, HTTPError) as error:
        raise click.ClickException(f"cannot list releases: {error}") from None
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
@click.pass_obj
def status(target: Target, name: str, output: str) -> None:
    """A readable view: phase, weight, steps, history."""
    release = _get(target, name)
    if output == "json":
        click.echo(json.dumps(release.get("status") or {}, indent=2))
        return
    if output == "yaml":
        click.echo(yaml.safe_dump(release.get("status") or {}, sort_keys=False))
        return
    spec, state = release.get("spec") or {}, release.get("status") or {}
    weight = int(state.get("canaryWeight") or 0)
    console.print(
        f"[bold]{name}[/]  version {spec.get('version')}  phase [bold]{state.get('phase', 'Pending')}[/]"
    )
    console.print(f"weight {escape('[' + '#' * (weight // 5) + '.' * (20 - weight // 5) + ']')} {weight}%")
    console.print(escape(str(state.get("message", ""))))
    steps = (spec.get("strategy") or {}).get("canary", {}).get("steps") or []
    current = state.get("currentStep")
    for index, step in enumerate(steps):
        marker = ">" if index == current and state.get("phase") in ("Progressing", "Paused") else " "
        console.print(f" {marker} {index + 1}. {escape(json.dumps(step))}")
    _print_history(state)


@main.command()
@click.argument("name")
@click.pass_obj
def history(target: Target, name: str) -> None:
    """Every revision this Release rolled out, and what became of it."""
    _print_history(_get(target, name).get("status") or {})


def _print_history(state: Mapping[str, Any]) -> None:
    table = Table(title="history", box=None)
    for column in ("REVISION", "VERSION", "ATTEMPT", "RESULT", "REASON", "STARTED", "FINISHED"):
        table.add_column(column)
    for entry in state.get("history") or []:
        table.add_row(
            *(
                str(entry.get(key, ""))
                for key in ("revision", "version", "attempt", "result", "reason", "startedAt", "finishedAt")
            )
        )
    console.print(table)


@main.command()
@click.argument("name")
@click.option("--full", is_flag=True, help="Skip every remaining step, not just the current one.")
@click.pass_obj
def promote(target: Target, name: str, full: bool) -> None:
    """Skip the current pause or step (or all of them with --full)."""
    _annotate(target, name, "promote", "full" if full else "true")


@main.command()
@click.argument("name")
@click.pass_obj
def abort(target: Target, name: str) -> None:
    """Roll the revision in flight back now."""
    _annotate(target, name, "abort", "true")


@main.command()
@click.argument("name")
@click.pass_obj
def retry(target: Target, name: str) -> None:
    """Start a RolledBack or Failed revision again."""
    _annotate(target, name, "retry", "true")
