"""When each Release is reconciled: one timer per Release and a bounded pool of workers.

A Release is reconciled when something it depends on changes (a wake), when its decision is due (a pause
ends, a deadline passes), or at its resync, which comes at a random point of the second half of its
interval so that the Releases' resyncs never arrive as one burst. One Release is never reconciled twice
at once: a wake during a pass runs it again right after.

A pass that fails is tried again: at once after a conflict (a write that lost a race), the next pass then
reading the Release from the API server; after a 429, when the server's Retry-After says (within the
backoff's maximum); otherwise after an exponential backoff with jitter (tenacity) that only a change of the
Release itself cuts short. The watch events of its Deployments and Jobs, or the echo of the operator's own
writes, do not. A pass has a deadline: one that outlasts it (a request never answered) is abandoned, its
worker freed for the others, and the Release backed off and tried again.

A timer that comes due first asks `unchanged`: a Release whose last decision still stands (nothing it
decided on has a new version, nothing is due) is only timed again, without a pass, a worker or a deadline.

The workers are few and fixed: thousands of Releases created at once hold only as many passes in memory
as there are workers, and a Release waiting for its time costs a timer, not a task.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from tenacity import AsyncRetrying, RetryCallState
from tenacity import wait_exponential_jitter as exponential_jitter

from shepherd.kube import Conflict, ReleaseKey, retry_after

CONFLICT_RETRIES = 3  # conflicts in a row retried at once; more back off like any failure
STOP_TIMEOUT_SECONDS = 10.0  # passes under way when the operator stops get this long to end

logger = logging.getLogger(__name__)


def seconds_until(
    due: datetime | None,
    now: datetime,
    resync_seconds: float,
    draw: Callable[[float, float], float] = random.uniform,
) -> float:
    """Until the decision is due, never longer than the resync safety net: a random point of the second
    half of its interval, so that Releases reconciled together do not resync together."""
    resync = resync_seconds * draw(0.5, 1.0)
    if due is None:
        return resync
    return min(resync, max(0.0, (due - now).total_seconds()))


class PassTimeout(Exception):
    """A pass outlasted its deadline: whatever it waited for (an answer that never came) is left behind."""


class Decided(Protocol):
    @property
    def wake_at(self) -> datetime | None: ...  # when the decision may change without any watch event


# One pass over a Release; `fresh` reads it from the API server. None: the Release is gone.
Pass = Callable[[ReleaseKey, bool], Awaitable[Decided | None]]


@dataclass(slots=True)
class _Entry:
    timer: asyncio.TimerHandle | None = None
    queued: bool = False
    running: bool = False
    again: bool = False  # woken during its pass: run once more right after
    changed: bool = False  # the Release itself changed during its pass
    backing_off: bool = False
    failures: int = 0  # failed passes in a row
    fresh: bool = False  # the next pass reads the Release from the API server


class Scheduler:
    def __init__(
        self,
        run: Pass,
        *,
        workers: int,
        resync_seconds: float,
        first_backoff_seconds: float,
        max_backoff_seconds: float,
        pass_seconds: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        unchanged: Callable[[ReleaseKey], Decided | None] = lambda _key: None,
    ) -> None:
        self._run = run
        self._unchanged = unchanged
        self._workers = workers
        self.resync_seconds = resync_seconds
        self._pass_seconds = pass_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._wait = exponential_jitter(
            multiplier=first_backoff_seconds, max=max_backoff_seconds, jitter=first_backoff_seconds
        )
        self._clock = clock
        self._entries: dict[ReleaseKey, _Entry] = {}
        self._queue: asyncio.Queue[ReleaseKey] = asyncio.Queue()
        self._stopping = False
        self._busy: set[asyncio.Task[None]] = set()  # workers in the middle of a pass

    def __contains__(self, key: ReleaseKey) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[ReleaseKey]:
        return iter(list(self._entries))

    def add(self, key: ReleaseKey) -> None:
        """A Release to look after from now on: its first pass comes at once."""
        if key not in self._entries:
            entry = self._entries[key] = _Entry()
            self._enqueue(key, entry)

    def wake(self, key: ReleaseKey, changed: bool = False) -> None:
        """Something the Release depends on changed; `changed`: the Release itself (this ends a backoff)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if entry.running:
            entry.again = True
            entry.changed = entry.changed or changed
        elif not entry.queued and (changed or not entry.backing_off):
            self._enqueue(key, entry)

    def forget(self, key: ReleaseKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.timer is not None:
            entry.timer.cancel()

    async def run(self, ready: asyncio.Event) -> None:
        """Reconcile once `ready` is set (every watch has listed), until cancelled; then let passes end."""
        await ready.wait()
        workers = {asyncio.create_task(self._work()) for _ in range(self._workers)}
        try:
            await asyncio.wait(workers)  # unlike gather, being cancelled leaves the workers running
        finally:
            self._stopping = True
            for worker in workers - self._busy:
                worker.cancel()
            if self._busy:
                await asyncio.wait(self._busy, timeout=STOP_TIMEOUT_SECONDS)
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            for entry in self._entries.values():
                if entry.timer is not None:
                    entry.timer.cancel()

    def _enqueue(self, key: ReleaseKey, entry: _Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        entry.queued = True
        self._queue.put_nowait(key)

    def _later(self, key: ReleaseKey, entry: _Entry, seconds: float) -> None:
        if seconds <= 0:
            self._enqueue(key, entry)
        else:
            entry.timer = asyncio.get_running_loop().call_later(seconds, self._due, key, entry)

    def _due(self, key: ReleaseKey, entry: _Entry) -> None:
        entry.timer = None
        if self._entries.get(key) is not entry or entry.queued or entry.running:
            return
        if not entry.fresh and not entry.failures:
            try:
                decided = self._unchanged(key)
            except Exception:  # never a lost timer: the pass finds out
                logger.exception("%s/%s: the check for changes failed", key.namespace, key.name)
                decided = None
            if decided is not None:
                # Nothing it decides on changed and nothing is due (a resync at rest): no pass at all.
                self._later(key, entry, seconds_until(decided.wake_at, self._clock(), self.resync_seconds))
                return
        self._enqueue(key, entry)

    def _backoff(self, entry: _Entry, error: Exception) -> float:
        if isinstance(error, Conflict) and entry.failures <= CONFLICT_RETRIES:
            return 0.0
        asked = retry_after(error)
        if asked is not None:
            return min(asked, self._max_backoff_seconds)
        state = RetryCallState(AsyncRetrying(), fn=None, args=(), kwargs={})
        state.attempt_number = entry.failures
        return float(self._wait(state))

    async def _work(self) -> None:
        while not self._stopping:
            key = await self._queue.get()
            entry = self._entries.get(key)
            if entry is None or not entry.queued:
                continue  # forgotten, or added again since, and queued anew
            entry.queued, entry.running = False, True
            entry.again = entry.changed = entry.backing_off = False
            worker = asyncio.current_task()
            assert worker is not None
            self._busy.add(worker)
            try:
                decided = await self._bounded(key, entry.fresh)
            except Exception as error:  # one bad object or a flaky API must not stop the others
                entry.running = False
                self._failed(key, entry, error)
            else:
                entry.running = False
                entry.failures, entry.fresh = 0, False
                if self._entries.get(key) is not entry:
                    continue
                if decided is None:
                    self.forget(key)
                elif entry.again:
                    self._enqueue(key, entry)
                else:
                    self._later(
                        key, entry, seconds_until(decided.wake_at, self._clock(), self.resync_seconds)
                    )
            finally:
                self._busy.discard(worker)

    async def _bounded(self, key: ReleaseKey, fresh: bool) -> Decided | None:
        deadline = asyncio.timeout(self._pass_seconds)
        try:
            async with deadline:
                return await self._run(key, fresh)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise PassTimeout(f"the pass did not end within {self._pass_seconds:g}s: abandoned") from None

    def _failed(self, key: ReleaseKey, entry: _Entry, error: Exception) -> None:
        entry.failures += 1
        entry.fresh = isinstance(error, Conflict | PassTimeout)  # what it wrote last may be unseen
        delay = 0.0 if entry.changed else self._backoff(entry, error)
        when = f"retrying in {delay:.1f}s" if delay else "retrying at once"
        # A conflict retried at once is the cache's ordinary race with another writer, not a failure.
        level = logging.INFO if isinstance(error, Conflict) and not delay else logging.WARNING
        logger.log(
            level,
            "%s/%s: reconcile failed (attempt %d, %s): %s",
            key.namespace,
            key.name,
            entry.failures,
            when,
            error,
            exc_info=error if entry.failures == 1 and not isinstance(error, Conflict | PassTimeout) else None,
        )
        if self._entries.get(key) is not entry:
            return
        entry.backing_off = delay > 0
        self._later(key, entry, delay)
