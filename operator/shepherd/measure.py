"""The shell's side of analysis: run the queries the core asked for, off the event loop.

Each query runs in a worker thread with the connection's timeout, all of a
reconcile's queries at once, so one slow Prometheus never holds up another
Release (each Release has its own loop) nor the rest of this one for longer
than one timeout.
"""

from __future__ import annotations

import asyncio
import functools
import os
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from shepherd.core.analysis import Measurement, MeasurementRequest, QueryOutcome, sample_step
from shepherd.core.model import Needed, QueryCheck, QueryCheckResult
from shepherd.core.spec import PrometheusSpec
from shepherd.kube import KubeAPI, ReleaseKey, secret_text
from shepherd.prometheus import Connection, Prometheus

T = TypeVar("T")


async def off_loop(executor: Executor | None, call: Callable[..., T], *args: object) -> T:
    """`call` in a thread of `executor` (None: the loop's default, the API's)."""
    return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(call, *args))


class SecretProblem(RuntimeError):
    pass


def connection_for(api: KubeAPI, key: ReleaseKey, spec: PrometheusSpec) -> Connection:
    """Resolve the Secrets a Prometheus connection names into plain credentials."""
    bearer: str | None = None
    basic: tuple[str, str] | None = None
    ca_file: str | None = None
    if spec.secret:
        data = _secret(api, key, spec.secret, "spec.analysis.prometheus.secretRef")
        if "token" in data:
            bearer = data["token"].strip()
        elif "username" in data and "password" in data:
            basic = (data["username"], data["password"])
        else:
            raise SecretProblem(f"Secret {spec.secret} must hold `token`, or `username` and `password`")
    if spec.ca_secret:
        data = _secret(api, key, spec.ca_secret, "spec.analysis.prometheus.caSecretRef")
        if "ca.crt" not in data:
            raise SecretProblem(f"Secret {spec.ca_secret} must hold `ca.crt`")
        ca_file = _ca_file(data["ca.crt"])
    return Connection(
        address=spec.address,
        headers=dict(spec.headers),
        bearer_token=bearer,
        basic_auth=basic,
        ca_file=ca_file,
        insecure_skip_verify=spec.insecure_skip_verify,
        timeout=spec.timeout.total_seconds(),
    )


def _secret(api: KubeAPI, key: ReleaseKey, name: str, field: str) -> dict[str, str]:
    secret = api.read_secret(key.namespace, name)
    if secret is None:
        raise SecretProblem(f"{field}: Secret {key.namespace}/{name} not found")
    try:
        return secret_text(secret)
    except ValueError as error:
        raise SecretProblem(f"{field}: Secret {key.namespace}/{name}: {error}") from None


def _ca_file(pem: str) -> str:
    """requests wants a path; one file per distinct CA, reused across reconciles."""
    folder = os.path.join(tempfile.gettempdir(), "shepherd-ca")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{abs(hash(pem)):x}.crt")
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(pem)
    return path


@dataclass(frozen=True)
class Answers:
    measurements: tuple[Measurement, ...] = ()
    checks: tuple[QueryCheckResult, ...] = ()
    gate_samples: Mapping[str, QueryOutcome] = field(default_factory=dict)


async def gather(
    api: KubeAPI,
    key: ReleaseKey,
    spec: PrometheusSpec | None,
    needed: Needed,
    now: datetime,
    outside: Executor | None = None,
) -> Answers:
    """Every query at once, each bounded by the connection's timeout, on the `outside` threads: a slow
    Prometheus holds none of those that write to the API server."""
    if spec is None or not (needed.measurements or needed.query_checks or needed.gate_queries):
        return Answers()
    try:
        connection = await asyncio.to_thread(connection_for, api, key, spec)
    except SecretProblem as problem:
        return _all_failed(needed, str(problem), now)
    prometheus = Prometheus(connection)
    try:
        measured = asyncio.gather(
            *(_measure(prometheus, request, now, outside) for request in needed.measurements)
        )
        checked = asyncio.gather(*(_check(prometheus, check, outside) for check in needed.query_checks))
        sampled = asyncio.gather(*(_instant(prometheus, query, outside) for _, query in needed.gate_queries))
        measurements, checks, samples = await asyncio.gather(measured, checked, sampled)
    finally:
        prometheus.close()
    gate_samples = {name: sample for (name, _), sample in zip(needed.gate_queries, samples, strict=True)}
    return Answers(tuple(measurements), tuple(checks), gate_samples)


async def _instant(prometheus: Prometheus, query: str, outside: Executor | None) -> QueryOutcome:
    sample = await off_loop(outside, prometheus.instant, query)
    return QueryOutcome(sample.outcome, sample.value, (), sample.message, query)


async def _measure(
    prometheus: Prometheus, request: MeasurementRequest, now: datetime, outside: Executor | None
) -> Measurement:
    outcomes = await asyncio.gather(
        *(_query(prometheus, q, request, now, outside) for q in request.queries.values())
    )
    return Measurement(request, dict(zip(request.queries, outcomes, strict=True)), now)


async def _query(
    prometheus: Prometheus, query: str, request: MeasurementRequest, now: datetime, outside: Executor | None
) -> QueryOutcome:
    if request.window is None:
        return await _instant(prometheus, query, outside)
    start = now - request.window
    series = await off_loop(outside, prometheus.range, query, start, now, sample_step(request.window))
    return QueryOutcome(series.outcome, None, tuple(series.values), series.message, query)


async def _check(prometheus: Prometheus, check: QueryCheck, outside: Executor | None) -> QueryCheckResult:
    try:
        error = await off_loop(outside, prometheus.syntax_error, check.query)
    except ConnectionError as unreachable:
        return QueryCheckResult(check, None, str(unreachable))
    return QueryCheckResult(check, error)


def _all_failed(needed: Needed, problem: str, now: datetime) -> Answers:
    def failed(query: str) -> QueryOutcome:
        return QueryOutcome("error", message=problem, query=query)

    measurements = tuple(
        Measurement(request, {role: failed(q) for role, q in request.queries.items()}, now)
        for request in needed.measurements
    )
    checks = tuple(QueryCheckResult(check, None, problem) for check in needed.query_checks)
    gate_samples = {name: failed(query) for name, query in needed.gate_queries}
    return Answers(measurements, checks, gate_samples)
