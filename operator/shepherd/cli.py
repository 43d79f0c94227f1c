"""`shepherd run | demo | dashboard | lint`."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import click
import durationpy
import kubernetes.client
import kubernetes.config
import yaml

from shepherd.core.leadership import LeaseTiming
from shepherd.dashboard import server as dashboard_server
from shepherd.health import Endpoint
from shepherd.kube import load_configuration
from shepherd.leader import LeaderElection, LeadershipLost, default_identity
from shepherd.limits import Limits
from shepherd.plugin import namespace_of_context
from shepherd.runner import OperatorOptions, run_operator
from shepherd.sharding import SHARD_INDEX_FLAG, Shard, ShardError

LIMIT_FLAGS = {
    "request_seconds": "--request-timeout",
    "watch_idle_seconds": "--watch-idle-timeout",
    "pass_seconds": "--pass-timeout",
    "outside_workers": "--outside-workers",
    "unready_after_seconds": "--unready-after",
    "unhealthy_after_seconds": "--unhealthy-after",
}


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
MODE_REQUIRED = (
    "give --leader-elect (replicas: only the holder of the Lease acts) or --standalone (declared the only "
    "operator)"
)


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
@click.option(
    "--standalone",
    is_flag=True,
    help="Declare this the only operator: it acts at once, with no Lease (never run two of them).",
)
@click.option(
    "--liveness", "liveness", metavar="URL", help="Serve a health endpoint, e.g. http://0.0.0.0:8080/healthz."
)
@click.option(
    "--readiness",
    metavar="URL",
    help="Serve a readiness endpoint (200 once watching, or standing by), e.g. http://0.0.0.0:8080/readyz.",
)
@click.option("--resync", default="30s", show_default=True, help="Safety-net re-check of every Release.")
@click.option(
    "--leader-elect",
    is_flag=True,
    help="Act only while holding a coordination.k8s.io Lease; others stand by (implies --standalone).",
)
@click.option("--lease-name", default="shepherd", show_default=True, help="Name of the leader Lease.")
@click.option(
    "--lease-namespace",
    envvar="POD_NAMESPACE",
    default="default",
    show_default=True,
    help="Namespace of the leader Lease ($POD_NAMESPACE when set).",
)
@click.option(
    "--identity", help="This replica's name in the Lease (default: $POD_NAME or the host, made unique)."
)
@click.option(
    "--lease-duration", default="15s", show_default=True, help="How long standbys wait for a renewal."
)
@click.option(
    "--renew-deadline",
    default="10s",
    show_default=True,
    help="The leader stops acting after failing to renew this long.",
)
@click.option(
    "--retry-period", default="2s", show_default=True, help="Interval between attempts to take or renew."
)
@click.option(
    "--shards",
    type=int,
    default=1,
    show_default=True,
    help="Split the Releases among this many operators, by a hash of namespace/name; each acts only on its "
    "own (and leader-elects on a Lease of its own).",
)
@click.option(
    "--shard-index",
    type=int,
    help="Which of the --shards this operator is, 0 to N-1 (required when --shards is more than 1).",
)
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), help="Serve Prometheus metrics on /metrics here."
)
@click.option(
    "--request-timeout",
    default=f"{Limits.request_seconds:g}s",
    show_default=True,
    help="Deadline of one API request: to connect, then for each read of its answer.",
)
@click.option(
    "--watch-idle-timeout",
    default=f"{Limits.watch_idle_seconds:g}s",
    show_default=True,
    help="A watch with no event and no bookmark (sent about every minute) this long is opened again.",
)
@click.option(
    "--pass-timeout",
    default=f"{Limits.pass_seconds:g}s",
    show_default=True,
    help="Deadline of one pass over a Release; one past it is abandoned and the Release retried.",
)
@click.option(
    "--outside-workers",
    type=click.IntRange(1, 256),
    default=Limits.outside_workers,
    show_default=True,
    help="Threads for Prometheus queries and webhook gates, apart from those writing to the API server.",
)
@click.option(
    "--unready-after",
    default=f"{Limits.unready_after_seconds:g}s",
    show_default=True,
    help="A watch that has not listed successfully this long turns /readyz to 503.",
)
@click.option(
    "--unhealthy-after",
    default=f"{Limits.unhealthy_after_seconds:g}s",
    show_default=True,
    help="A watch that has not listed successfully this long fails /healthz too: the pod is restarted.",
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
    readiness: str | None,
    resync: str,
    leader_elect: bool,
    lease_name: str,
    lease_namespace: str,
    identity: str | None,
    lease_duration: str,
    renew_deadline: str,
    retry_period: str,
    shards: int,
    shard_index: int | None,
    metrics_port: int | None,
    request_timeout: str,
    watch_idle_timeout: str,
    pass_timeout: str,
    outside_workers: int,
    unready_after: str,
    unhealthy_after: str,
    kubeconfig: str | None,
    context: str | None,
    verbose: bool,
) -> None:
    """Run the operator against the cluster in KUBECONFIG or the in-cluster service account."""
    if bool(namespaces) == all_namespaces:
        raise click.UsageError("give either -n/--namespace (one or more) or -A/--all-namespaces")
    if not (standalone or leader_elect):
        # Kopf's peering alone lets two replicas act at once for a while: never a mode of its own.
        raise click.UsageError(MODE_REQUIRED)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if not verbose:
        # Kopf says at INFO that each watch event's handler succeeded: a line per Release change, at scale
        # most of the log. Its warnings and errors stay.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    for url, flag in ((liveness, "--liveness"), (readiness, "--readiness")):
        _endpoint(url, flag)
    timing = LeaseTiming(
        _seconds(lease_duration, "--lease-duration"),
        _seconds(renew_deadline, "--renew-deadline"),
        _seconds(retry_period, "--retry-period"),
    )
    for problem_field, message in timing.problems():
        raise click.BadParameter(message, param_hint="--" + problem_field.replace("_", "-"))
    shard = _shard(shards, shard_index)
    limits = Limits(
        request_seconds=_seconds(request_timeout, "--request-timeout"),
        watch_idle_seconds=_seconds(watch_idle_timeout, "--watch-idle-timeout"),
        pass_seconds=_seconds(pass_timeout, "--pass-timeout"),
        outside_workers=outside_workers,
        unready_after_seconds=_seconds(unready_after, "--unready-after"),
        unhealthy_after_seconds=_seconds(unhealthy_after, "--unhealthy-after"),
    )
    for problem_field, message in limits.problems():
        raise click.BadParameter(message, param_hint=LIMIT_FLAGS[problem_field])
    election = LeaderElection(
        lease_namespace, shard.lease_name(lease_name), identity or default_identity(), timing
    )
    options = OperatorOptions(
        namespaces=namespaces,
        standalone=standalone,
        liveness_endpoint=liveness,
        readiness_endpoint=readiness,
        resync_seconds=_seconds(resync, "--resync"),
        metrics_port=metrics_port,
        leader_election=election if leader_elect else None,
        shard=shard,
        limits=limits,
    )
    configuration = load_configuration(kubeconfig, context)
    try:
        asyncio.run(_run_until_signalled(configuration, options))
    except LeadershipLost as error:  # exit, to come back as a standby (the pod restarts)
        raise click.ClickException(str(error)) from None


async def _run_until_signalled(
    configuration: kubernetes.client.Configuration, options: OperatorOptions
) -> None:
    """SIGTERM or Ctrl+C stop a standby too (Kopf installs its own handlers only once it runs)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await run_operator(configuration, options, stop)


def _shard(shards: int, index: int | None) -> Shard:
    if index is None and shards > 1:
        raise click.BadParameter(
            f"is required with --shards {shards}: give each operator one of 0 to {shards - 1}",
            param_hint=SHARD_INDEX_FLAG,
        )
    try:
        return Shard(index or 0, shards)
    except ShardError as error:
        raise click.BadParameter(error.message, param_hint=error.flag) from None


def _endpoint(url: str | None, flag: str) -> None:
    if url is not None:
        try:
            Endpoint.parse(url)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint=flag) from None


@main.command()
@click.option("--keep", is_flag=True, help="Leave the local API and operator running after the demo.")
@click.option("--port", default=0, show_default=True, help="Port for the local API (0: any free port).")
def demo(keep: bool, port: int) -> None:
    """A live release through every phase, on a local Kubernetes API emulator."""
    try:  # the lab's modules and what they import come with the demo extra only
        from shepherd.lab.demo import run_demo

        code = run_demo(keep=keep, port=port)
    except ModuleNotFoundError as missing:
        raise click.ClickException(
            f"the demo needs the demo extra (no module {missing.name}): pip install 'release-shepherd[demo]'"
        ) from None
    sys.exit(code)


@main.command()
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig file (default: $KUBECONFIG).")
@click.option("--context", help="Kubeconfig context.")
@click.option(
    "-n",
    "--namespace",
    help="Shown when you may not list Releases in every namespace (default: the context's).",
)
@click.option("--in-cluster", is_flag=True, help="Use the pod's ServiceAccount (the chart's dashboard.web).")
@dashboard_server.options
def dashboard(
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    in_cluster: bool,
    port: int,
    address: str,
    allow_actions: bool,
) -> None:
    """A release board in the browser, as you (your RBAC applies); read-only unless --allow-actions."""
    configuration = kubernetes.client.Configuration()
    if in_cluster:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        namespace = namespace or Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
    else:
        try:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        except (kubernetes.config.ConfigException, FileNotFoundError) as error:
            raise click.ClickException(f"no cluster configured: {error}") from None
        namespace = namespace or namespace_of_context(kubeconfig, context)
    dashboard_server.serve(dashboard_server.Settings(configuration, namespace, address, port, allow_actions))


@main.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def lint(files: tuple[Path, ...]) -> None:
    """Check Release manifests against the CRD schema and the operator's own rules."""
    from shepherd.lint import lint_documents, warn_documents

    problems = warnings = 0
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
        for line in warn_documents(documents):  # the Release is valid: a warning never fails lint
            click.echo(f"{path}: warning: {line}", err=True)
            warnings += 1
    if problems:
        raise click.ClickException(f"{problems} problem(s) found")
    click.echo(f"{len(files)} file(s) OK" + (f", {warnings} warning(s)" if warnings else ""))


if __name__ == "__main__":
    main()
