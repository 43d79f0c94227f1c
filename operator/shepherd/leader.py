"""Leader election for `shepherd run --leader-elect`: of all replicas, only the Lease's holder acts.

A candidate stands by until it takes the Lease; only then does it start Kopf (no watch, no write before).
The leader renews the Lease every retry period. When someone else holds it, or no renewal succeeded for the
renew deadline, leadership is lost: the KubeAPI fence refuses writes from that moment, Kopf is stopped and
`shepherd run` exits, to come back as a standby. Stopping on purpose releases the Lease for a standby to
take at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from shepherd.core.leadership import LeaseRecord, LeaseTiming, Sighting, claim, released, sighted
from shepherd.kube import KubeAPI

_T = TypeVar("_T")

logger = logging.getLogger(__name__)


def default_identity() -> str:
    """The pod's name (or the host's) and a random suffix: two processes never share an identity."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class LeaderElection:
    namespace: str
    name: str = "shepherd"
    identity: str = field(default_factory=default_identity)
    timing: LeaseTiming = field(default_factory=LeaseTiming)


class LeadershipLost(RuntimeError):
    """The leader could not keep its Lease: it has stopped acting."""


class LeaderElector:
    def __init__(
        self,
        api: KubeAPI,
        election: LeaderElection,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.election = election
        self._api, self._clock, self._now = api, clock, now
        self._lease: dict[str, Any] | None = None  # the Lease as last read or written
        self._seen: Sighting | None = None
        self._renewed_at: float | None = None  # when the last successful take or renewal began
        self._contact_at: float | None = None  # when the Lease was last read
        # A thread of its own: behind a queue of the Releases' writes, a renewal would miss its deadline.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shepherd-lease")

    @property
    def holder(self) -> str | None:
        """Who holds the Lease, as last seen."""
        return self._seen.record.holder if self._seen and self._seen.record else None

    def leading(self) -> bool:
        """Read off the clock, not off the renewal loop: a stuck renewal cannot keep a leader acting."""
        deadline = self.election.timing.renew_deadline
        return self._renewed_at is not None and self._clock() < self._renewed_at + deadline

    def in_contact(self) -> bool:
        """The Lease was read within one lease duration: a standby that could take over."""
        duration = self.election.timing.lease_duration
        return self._contact_at is not None and self._clock() < self._contact_at + duration

    async def acquire(self, stop: asyncio.Event, standing_by: Callable[[], None]) -> bool:
        """Wait until this candidate holds the Lease (True) or `stop` is set (False)."""
        announced = None
        while not stop.is_set():
            if await self._attempt():
                logger.info("%s holds the lease %s: acting", self.election.identity, self._where())
                return True
            if self.in_contact():
                standing_by()
                if announced != self.holder:
                    announced = self.holder
                    logger.info("standing by: the lease %s is held by %s", self._where(), self.holder)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.election.timing.retry_period)
        return False

    async def hold(self) -> None:
        """Renew the Lease until it is lost, then return (the caller stops acting).

        The renewals run on an event loop of their own thread: thousands of Releases starting at once keep
        the operator's loop busy for seconds, which must not make a leader miss its renew deadline. The
        fence (`leading()`) reads the clock, so it closes on time whichever thread renews."""
        stop = threading.Event()
        try:
            await asyncio.to_thread(asyncio.run, self._hold(stop))
        finally:  # also when cancelled: the renewals end within a retry period
            stop.set()

    async def _hold(self, stop: threading.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.election.timing.retry_period)
            if stop.is_set():
                break
            renewed = await self._attempt()
            if not renewed and self.holder not in (None, "", self.election.identity):
                logger.error("the lease %s was taken by %s: stopping", self._where(), self.holder)
                break
            if not self.leading():
                logger.error("could not renew the lease %s in time: stopping", self._where())
                break
        self._renewed_at = None

    async def release(self) -> None:
        """Give the Lease up (if still held) so that a standby takes over without waiting for it to expire."""
        if not self.leading() or self._seen is None or self._seen.record is None:
            return
        self._renewed_at = None  # the fence closes before the write
        record = released(self._seen.record, self._now())
        try:
            done = await self._write(record)
        except Exception as error:  # the standby then waits for the lease to expire
            logger.warning("could not release the lease %s: %s", self._where(), error)
            return
        if done:
            logger.info("released the lease %s", self._where())
        else:
            logger.warning("did not release the lease %s: it changed meanwhile", self._where())

    async def _attempt(self) -> bool:
        """One look at the Lease, and a take or renewal if it is ours to have."""
        began, timing = self._clock(), self.election.timing
        try:
            lease = await asyncio.wait_for(
                self._call(
                    self._api.get_lease, self.election.namespace, self.election.name, timing.retry_period
                ),
                timing.renew_deadline,
            )
            self._lease, self._contact_at = lease, self._clock()
            record = LeaseRecord.from_spec(lease.get("spec") or {}) if lease else None
            self._seen = sighted(self._seen, record, self._clock())
            wanted = claim(self._seen, self.election.identity, self._clock(), self._now(), timing)
            if wanted is None or not await self._write(wanted):
                return False
        except Exception as error:  # the API is unreachable or answers badly: try again next period
            logger.warning("could not read or write the lease %s: %s", self._where(), error)
            return False
        self._renewed_at = began
        return True

    async def _write(self, record: LeaseRecord) -> bool:
        timing = self.election.timing
        written = await asyncio.wait_for(
            self._call(
                self._api.write_lease,
                self.election.namespace,
                self.election.name,
                self._lease,
                record.to_spec(),
                timing.retry_period,
            ),
            timing.renew_deadline,
        )
        if written is None:  # another candidate wrote first
            return False
        self._lease = written
        self._seen = sighted(self._seen, LeaseRecord.from_spec(written.get("spec") or {}), self._clock())
        return True

    def _call(self, function: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        return asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def _where(self) -> str:
        return f"{self.election.namespace}/{self.election.name}"
