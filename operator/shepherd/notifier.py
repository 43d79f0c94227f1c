"""Send notifications: POST each message to its webhook in the background, with retries.

The core picks the messages of a status write (core/notifications.py); the
reconcile hands them over here only once that write succeeded, and goes on at
once. Each message is a task on the operator's event loop: it reads the URL from
the Secret when it sends (the URL never reaches a log, the status or an Event:
they name the Secret), and retries connection errors, timeouts, 429 and 5xx
with exponential backoff and jitter (tenacity) within a bounded total time.
A receiver that is slow or down delays nothing but its own later messages,
which keep their order. One that never answers costs one Warning Event
(NotificationFailed) and the `failed` count of shepherd_notifications_total.

Delivery is at most once: nothing about it is stored, so a message still being
retried when the operator stops is lost, and a restarted operator never sends
again what it may already have sent. A graceful stop waits a few seconds for
messages in flight.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from kubernetes.client.exceptions import ApiException
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity import wait_exponential_jitter as exponential_jitter

from shepherd.core import reasons
from shepherd.core.actions import Event
from shepherd.core.notifications import Message
from shepherd.core.spec import SecretKeyRef
from shepherd.kube import KubeAPI, secret_text
from shepherd.metrics import OperatorMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryPolicy:
    attempts: int = 5
    first_backoff: float = (
        1.0  # seconds before the second attempt; doubles each time, plus up to as much jitter
    )
    max_backoff: float = 15.0
    attempt_timeout: float = 10.0  # one POST, connecting included
    deadline: float = 60.0  # every attempt and backoff of one message together
    stop_grace: float = 10.0  # how long a graceful stop waits for the messages in flight


class Undeliverable(Exception):
    """Trying again cannot help: the Secret or its URL is wrong, or the receiver refused the message."""


class Transient(Exception):
    """Worth another attempt: the receiver could not be reached, timed out, or answered 429 or 5xx."""


class Notifier:
    def __init__(
        self,
        api: KubeAPI,
        metrics: OperatorMetrics,
        policy: DeliveryPolicy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.policy = policy or DeliveryPolicy()
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._tails: dict[tuple[str, ...], asyncio.Task[None]] = {}  # the last message queued per target

    def send(self, release: Mapping[str, Any], messages: Sequence[Message]) -> None:
        """Queue the messages and return at once; must be called on the event loop."""
        meta = release["metadata"]
        for message in messages:
            ref = message.target.url
            key = (meta["namespace"], meta["name"], ref.namespace or meta["namespace"], ref.name, ref.key)
            previous = self._tails.get(key)
            task = asyncio.get_running_loop().create_task(self._in_turn(previous, release, message))
            self._tails[key] = task
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._done, key))

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        """On a graceful stop: give the messages in flight a last chance, for a while."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.policy.stop_grace)

    def _done(self, key: tuple[str, ...], task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _in_turn(
        self, previous: asyncio.Task[None] | None, release: Mapping[str, Any], message: Message
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # a target gets its messages in order
        await self._deliver(release, message)

    async def _deliver(self, release: Mapping[str, Any], message: Message) -> None:
        meta = release["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        target = message.target.url.describe(namespace)
        what = f"notification {message.summary} of {namespace}/{name} to {target} ({message.target.source})"
        policy = self.policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts),
            wait=exponential_jitter(
                multiplier=policy.first_backoff, max=policy.max_backoff, jitter=policy.first_backoff
            ),
            retry=retry_if_exception_type(Transient),
            before_sleep=functools.partial(_log_retry, what),
            reraise=True,
        )
        try:
            async with asyncio.timeout(policy.deadline):
                async for attempt in retrying:
                    with attempt:
                        await self._post(namespace, message)
        except (Undeliverable, Transient) as error:
            problem = str(error)
        except TimeoutError:
            problem = f"not delivered within {policy.deadline:g}s"
        except Exception as error:  # never let a traceback (which could show the URL) reach the logs
            problem = f"unexpected {type(error).__name__}"
        else:
            logger.info("%s delivered", what)
            self.metrics.notified(namespace, name, "delivered")
            return
        logger.warning("%s failed: %s", what, problem)
        self.metrics.notified(namespace, name, "failed")
        event = Event("Warning", reasons.NOTIFICATION_FAILED, f"{message.summary} to {target}: {problem}")
        try:
            await asyncio.to_thread(self.api.post_event, release, event, self.clock())
        except Exception as error:
            logger.warning("could not post event NotificationFailed for %s/%s: %s", namespace, name, error)

    async def _post(self, namespace: str, message: Message) -> None:
        url = await self._url(namespace, message.target.url)
        timeout = aiohttp.ClientTimeout(total=self.policy.attempt_timeout)
        try:
            async with (
                # trust_env: HTTPS_PROXY and NO_PROXY apply, as for any client behind an egress proxy
                aiohttp.ClientSession(timeout=timeout, trust_env=True) as session,
                session.post(url, json=message.body, allow_redirects=False) as response,
            ):
                status = response.status
        # Described here, never by str(error): aiohttp's messages name the URL.
        except aiohttp.ClientConnectorError as error:
            errno = error.os_error.errno
            raise Transient(f"cannot connect: {os.strerror(errno) if errno else 'unreachable'}") from None
        except TimeoutError:
            raise Transient(f"no answer within {self.policy.attempt_timeout:g}s") from None
        except aiohttp.ClientError as error:
            raise Transient(type(error).__name__) from None
        if status == 429 or status >= 500:
            raise Transient(f"HTTP {status}")
        if status >= 300:
            raise Undeliverable(f"the receiver refused it: HTTP {status}")

    async def _url(self, namespace: str, ref: SecretKeyRef) -> str:
        """Read at send time, so a Secret fixed while retrying takes effect at once."""
        try:
            secret = await asyncio.to_thread(self.api.read_secret, ref.namespace or namespace, ref.name)
        except ApiException as error:
            if error.status in (401, 403):
                raise Undeliverable(f"the operator may not read the Secret (HTTP {error.status})") from None
            raise Transient(f"cannot read the Secret: HTTP {error.status}") from None
        except Exception as error:
            raise Transient(f"cannot read the Secret: {type(error).__name__}") from None
        if secret is None:
            raise Undeliverable("the Secret does not exist")
        if ref.key not in (secret.get("data") or {}):
            raise Undeliverable(f"the Secret has no key {ref.key}")
        try:
            url = secret_text(secret, {ref.key})[ref.key].strip()
        except ValueError as error:
            raise Undeliverable(str(error)) from None
        try:
            parts = urlsplit(url)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            usable = False
        if not usable:
            raise Undeliverable(f"key {ref.key} of the Secret is not an http:// or https:// URL")
        return url


def _log_retry(what: str, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    logger.info(
        "%s: attempt %d failed (%s), next in %.1fs", what, state.attempt_number, error, state.upcoming_sleep
    )
