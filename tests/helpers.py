"""Helpers shared by the test suites: polling with a deadline, plain HTTP against an API server, and what
a test does when something it needs is missing."""

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import pytest

T = TypeVar("T")
POLL_INTERVAL = 0.02  # seconds between two looks at a condition that is not met yet


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, message: str = "the condition") -> T:
    """Return the first truthy result of `predicate`; fail the test if none comes within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}; last result: {result!r}")
        time.sleep(POLL_INTERVAL)
    return result


def in_ci() -> bool:
    """CI sets CI (GitHub Actions: CI=true)."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def unavailable(reason: str) -> NoReturn:
    """Something a test needs is missing (`reason` says what, and how to get it): in CI, where everything is
    built and nothing may be skipped, the test fails; elsewhere it is skipped, saying why."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: nothing may be skipped)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def request_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    accept: str | None = None,
) -> tuple[int, Any]:
    """Send one HTTP request with a JSON body (if any); return the status code and the decoded answer."""
    headers = {"Content-Type": content_type} | ({"Accept": accept} if accept else {})
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def stream_events(url: str, timeout: float = 10.0) -> Iterator[dict[str, Any]]:
    """The events of a watch stream as they arrive, until the server ends it."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        for line in response:
            yield json.loads(line)
