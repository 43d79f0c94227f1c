"""The Prometheus adapter: PromQL in, plain outcomes out; nothing here raises for a failed query.

Calls block; the operator runs them in worker threads. No call retries: analysis measures again at
its next interval anyway, and a retry with backoff would hold a reconcile far beyond its timeout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import requests
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from shepherd.core.promql import escape_string_literal

SHOWN_SERIES = 5
SHOWN_BODY_CHARACTERS = 300
_QUERY_PARAMETER_PREFIX = 'invalid parameter "query": '


@dataclass(frozen=True)
class Connection:
    """Where and how to reach Prometheus; the operator resolves Secrets before building it."""

    address: str
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. X-Scope-OrgID for Mimir/Thanos/Cortex
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    ca_file: str | None = None  # PEM path for a private CA
    insecure_skip_verify: bool = False
    timeout: float = 10.0  # seconds, per request


@dataclass(frozen=True)
class Sample:
    """The answer to an instant query that must yield one number."""

    outcome: Literal["value", "empty", "nan", "multiple", "error"]
    value: float | None
    message: str
    query: str


@dataclass(frozen=True)
class Series:
    """The answer to a range query that must yield one series; NaN samples are dropped."""

    outcome: Literal["values", "empty", "multiple", "error"]
    values: tuple[float, ...]
    message: str
    query: str


class _QueryFailed(Exception):
    """`error_type` is set when Prometheus itself rejected the query (its API's errorType)."""

    def __init__(self, message: str, error_type: str | None = None, error: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.error = error


class Prometheus:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._address = connection.address.rstrip("/")
        self._session = _session(connection)
        self._client = PrometheusConnect(
            url=self._address,
            headers=_headers(connection),
            session=self._session,
            retry=Retry(total=0, read=False),
            timeout=connection.timeout,  # type: ignore[arg-type]  # annotated int; requests takes seconds as float
        )

    def close(self) -> None:
        """Release the pooled connections."""
        self._session.close()

    def instant(self, query: str) -> Sample:
        try:
            sample: Sample = self._ask(lambda: _sample(self._client.custom_query(query), query))
        except _QueryFailed as failed:
            return Sample("error", None, failed.message, query)
        return sample

    def range(self, query: str, start: datetime, end: datetime, step_seconds: float) -> Series:
        """Samples from start to end, every step; the client rounds start and end to whole seconds."""
        step = f"{step_seconds:g}"
        try:
            series: Series = self._ask(
                lambda: _series(self._client.custom_query_range(query, start, end, step=step), query)
            )
        except _QueryFailed as failed:
            return Series("error", (), failed.message, query)
        return series

    def syntax_error(self, query: str) -> str | None:
        """Prometheus' parse error for the query, or None when it parses.

        Prometheus 2.42 has no parse-only endpoint: the query is evaluated once, and only a `bad_data`
        rejection means it does not parse. Raises ConnectionError when Prometheus cannot be asked.
        """
        try:
            self._ask(lambda: self._client.custom_query(query))
        except _QueryFailed as failed:
            if failed.error_type is None:
                raise ConnectionError(failed.message) from failed
            if failed.error_type == "bad_data":
                return failed.error.removeprefix(_QUERY_PARAMETER_PREFIX)
        return None

    def _ask(self, call: Callable[[], Any]) -> Any:
        """Run a client call and read its answer, turning every way that can fail into _QueryFailed."""
        try:
            return call()
        except requests.JSONDecodeError as error:
            raise _QueryFailed(f"{self._address} answered with something other than JSON: {error}") from error
        except requests.Timeout as error:
            timeout = self.connection.timeout
            raise _QueryFailed(f"timed out after {timeout:g}s waiting for {self._address}") from error
        except requests.RequestException as error:
            raise _QueryFailed(f"cannot reach {self._address}: {_innermost_reason(error)}") from error
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise _QueryFailed(f"{self._address} answered without a Prometheus query result") from error


def _headers(connection: Connection) -> dict[str, str]:
    headers = dict(connection.headers)
    if connection.bearer_token is not None:
        headers["Authorization"] = f"Bearer {connection.bearer_token}"
    return headers


def _session(connection: Connection) -> requests.Session:
    session = requests.Session()
    session.verify = False if connection.insecure_skip_verify else (connection.ca_file or True)
    session.auth = connection.basic_auth
    # PrometheusConnect reads only 200 answers and drops the rest into an exception text; this hook
    # keeps Prometheus' own errorType and error message instead.
    session.hooks["response"].append(_reject_error_answer)
    return session


def _reject_error_answer(response: requests.Response, *args: object, **kwargs: object) -> None:
    if response.status_code == 200:
        return
    try:
        body = response.json()
        error_type, error = str(body["errorType"]), str(body["error"])
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:SHOWN_BODY_CHARACTERS]
        raise _QueryFailed(f"HTTP {response.status_code} {response.reason}: {text}") from None
    raise _QueryFailed(f"HTTP {response.status_code} {error_type}: {error}", error_type, error)


def _innermost_reason(error: BaseException) -> str:
    """requests wraps urllib3 which wraps the socket error; the socket error says what went wrong."""
    inner = error.__cause__ or getattr(error, "reason", None)
    if inner is None and error.args and isinstance(error.args[0], BaseException):
        inner = error.args[0]
    if isinstance(inner, BaseException) and inner is not error:
        return _innermost_reason(inner)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def _sample(result: Any, query: str) -> Sample:
    if result and not isinstance(result[0], dict):
        return _number(result[1], query)  # a scalar: [timestamp, "value"]
    if not result:
        return Sample("empty", None, "query returned no data", query)
    if len(result) > 1:
        return Sample("multiple", None, _several_series(result), query)
    if "value" not in result[0]:
        return Sample("error", None, "query returned a range vector; analysis needs an instant vector", query)
    return _number(result[0]["value"][1], query)


def _number(text: str, query: str) -> Sample:
    try:
        value = float(text)
    except ValueError:
        return Sample("error", None, f"query returned the string {text!r}, not a number", query)
    if math.isnan(value):
        return Sample("nan", None, "query returned NaN", query)
    return Sample("value", value, f"{value:g}", query)


def _series(result: Any, query: str) -> Series:
    if not result:
        return Series("empty", (), "query returned no data", query)
    if len(result) > 1:
        return Series("multiple", (), _several_series(result), query)
    values = tuple(value for value in (float(v) for _, v in result[0]["values"]) if not math.isnan(value))
    if not values:
        return Series("empty", (), "query returned only NaN samples", query)
    return Series("values", values, f"{len(values)} samples", query)


def _several_series(result: Sequence[Mapping[str, Any]]) -> str:
    label_sets: list[Mapping[str, str]] = [series["metric"] for series in result]
    names = sorted({name for labels in label_sets for name in labels})
    differing = [name for name in names if len({labels.get(name) for labels in label_sets}) > 1]
    shown = [
        "{" + ", ".join(f'{name}="{escape_string_literal(labels.get(name, ""))}"' for name in differing) + "}"
        for labels in label_sets[:SHOWN_SERIES]
    ]
    more = ", ..." if len(label_sets) > SHOWN_SERIES else ""
    return (
        f"query returned {len(label_sets)} series that differ in {{{', '.join(differing)}}}: "
        f"{', '.join(shown)}{more}"
    )
