"""`shepherd run | demo | lint`."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click
import durationpy
import yaml

from shepherd.kube import load_configuration
from shepherd.runner import OperatorOptions, run_operator


def _seconds(value: str, name: str) -> float:
    try:
        seconds = durationpy.from_str(value).total_seconds()
    except (durationpy.DurationError, ValueError):
        raise click.BadParameter(f"{value!r} is not a duration such as 30s or 1m", param_hint=name) from None
    if seconds <= 0:
        raise click.BadParameter("must be longer than 0s", param_hint=name)
    return float(seconds)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="release-shepherd")
def main() -> None:
    """Shepherd: take a Release from git to serving all traffic, safely."""


@main.command()
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Watch this namespace (repeatable).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Watch Releases in every namespace.")
@click.option("--standalone", is_flag=True, help="Do not coordinate with other operator instances (peering).")
@click.option(
    "--liveness", "liveness", metavar="URL", help="Serve a health endpoint, e.g. http://0.0.0.0:8080/healthz."
)
@click.option("--resync", default="30s", show_default=True, help="Safety-net re-check of every Release.")
@click.option("--priority", default=0, show_default=True, help="Peering priority: the highest one acts.")
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), help="Serve Prometheus metrics on /metrics here."
)
@click.option(
    "--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig file (default: like kubectl)."
)
@click.option("--context", help="Kubeconfig context to use.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    standalone: bool,
    liveness: str | None,
    resync: str,
    priority: int,
    metrics_port: int | None,
    kubeconfig: str | None,
    context: str | None,
    verbose: bool,
) -> None:
    """Run the operator against the cluster in KUBECONFIG or the in-cluster service account."""
    if bool(namespaces) == all_namespaces:
        raise click.UsageError("give either -n/--namespace (one or more) or -A/--all-namespaces")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    options = OperatorOptions(
        namespaces=namespaces,
        standalone=standalone,
        liveness_endpoint=liveness,
        resync_seconds=_seconds(resync, "--resync"),
        priority=priority,
        metrics_port=metrics_port,
    )
    configuration = load_configuration(kubeconfig, context)
    asyncio.run(run_operator(configuration, options))


@main.command()
@click.option("--keep", is_flag=True, help="Leave the local API and operator running after the demo.")
@click.option("--port", default=0, show_default=True, help="Port for the local API (0: any free port).")
def demo(keep: bool, port: int) -> None:
    """A live release through every phase, on a local Kubernetes API emulator."""
    from shepherd.demo import run_demo

    sys.exit(run_demo(keep=keep, port=port))


@main.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def lint(files: tuple[Path, ...]) -> None:
    """Check Release manifests against the CRD schema and the operator's own rules."""
    from shepherd.lint import lint_documents

    problems = 0
    for path in files:
        try:
            documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except yaml.YAMLError as error:
            click.echo(f"{path}: not valid YAML: {error}", err=True)
            problems += 1
            continue
        for line in lint_documents(documents):
            click.echo(f"{path}: {line}", err=True)
            problems += 1
    if problems:
        raise click.ClickException(f"{problems} problem(s) found")
    click.echo(f"{len(files)} file(s) OK")
