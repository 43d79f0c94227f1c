from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from kubernetes.client.exceptions import ApiException

from shepherd.kube import Conflict, ReleaseKey
from shepherd.scheduler import CONFLICT_RETRIES, Scheduler, seconds_until

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SHOP = ReleaseKey("default", "shop")
CART = ReleaseKey("default", "cart")


@dataclass
class Decision:
    wake_at: datetime | None = None


@dataclass
class Passes:
    """A stand-in for a reconcile pass: records each pass, and does what the test tells it to."""

    log: list[tuple[ReleaseKey, bool, float]] = field(default_factory=list)  # key, fresh, when
    failures: dict[ReleaseKey, list[Exception]] = field(default_factory=dict)
    gates: dict[ReleaseKey, asyncio.Event] = field(default_factory=dict)  # a pass waits for its gate
    results: dict[ReleaseKey, Decision | None] = field(default_factory=dict)
    running: set[ReleaseKey] = field(default_factory=set)
    most_at_once: int = 0

    async def __call__(self, key: ReleaseKey, fresh: bool) -> Decision | None:
        assert key not in self.running, "two passes of one Release at once"
        self.running.add(key)
        self.most_at_once = max(self.most_at_once, len(self.running))
        self.log.append((key, fresh, time.monotonic()))
        try:
            if key in self.gates:
                await self.gates[key].wait()
            if self.failures.get(key):
                raise self.failures[key].pop(0)
            return self.results.get(key, Decision())
        finally:
            self.running.discard(key)

    def of(self, key: ReleaseKey) -> list[tuple[bool, float]]:
        return [(fresh, at) for k, fresh, at in self.log if k == key]


async def until(condition: Callable[[], bool], message: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.005)


def _set() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@pytest.fixture
def passes() -> Passes:
    return Passes()


def scheduler_for(
    passes: Passes,
    workers: int = 4,
    resync: float = 300.0,
    backoff: float = 0.2,
    pass_seconds: float = 60.0,
    unchanged: Callable[[ReleaseKey], Decision | None] = lambda _key: None,
) -> Scheduler:
    return Scheduler(
        passes,
        workers=workers,
        resync_seconds=resync,
        first_backoff_seconds=backoff,
        max_backoff_seconds=backoff * 4,
        pass_seconds=pass_seconds,
        unchanged=unchanged,
    )


@contextlib.asynccontextmanager
async def scheduling(passes: Passes, **options: float) -> AsyncIterator[Scheduler]:
    """A scheduler at work (its watches listed) for the block's length."""
    scheduler = scheduler_for(passes, **options)  # type: ignore[arg-type]
    task = asyncio.create_task(scheduler.run(_set()))
    try:
        yield scheduler
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest_asyncio.fixture
async def running(passes: Passes) -> AsyncIterator[Scheduler]:
    async with scheduling(passes) as scheduler:
        yield scheduler


def test_the_resync_comes_in_the_second_half_of_its_interval_and_a_due_decision_sooner() -> None:
    assert seconds_until(None, NOW, 30.0, draw=lambda low, high: low) == 15.0
    assert seconds_until(None, NOW, 30.0, draw=lambda low, high: high) == 30.0
    assert seconds_until(NOW + timedelta(seconds=4), NOW, 30.0, draw=lambda low, high: low) == 4.0
    assert seconds_until(NOW + timedelta(seconds=40), NOW, 30.0, draw=lambda low, high: high) == 30.0
    assert seconds_until(NOW - timedelta(seconds=1), NOW, 30.0) == 0.0, "overdue: at once"


def test_resyncs_are_spread_over_the_interval() -> None:
    delays = [seconds_until(None, NOW, 30.0) for _ in range(1000)]
    assert all(15.0 <= delay <= 30.0 for delay in delays)
    buckets = {int(delay) for delay in delays}
    assert len(buckets) >= 14, f"1000 resyncs fell into only {sorted(buckets)}"


@pytest.mark.asyncio
async def test_nothing_is_reconciled_before_the_watches_have_listed(passes: Passes) -> None:
    scheduler = scheduler_for(passes)
    listed = asyncio.Event()
    task = asyncio.create_task(scheduler.run(listed))
    scheduler.add(SHOP)
    await asyncio.sleep(0)  # let the scheduler run as far as it can
    assert passes.log == []
    listed.set()
    await until(lambda: len(passes.of(SHOP)) == 1, "the first pass once listed")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_a_wake_during_a_pass_runs_the_release_once_more_after_it_never_beside_it(
    passes: Passes, running: Scheduler
) -> None:
    passes.gates[SHOP] = asyncio.Event()
    running.add(SHOP)
    await until(lambda: SHOP in passes.running, "the first pass to begin")
    for _ in range(5):
        running.wake(SHOP)
    passes.gates[SHOP].set()
    await until(lambda: len(passes.of(SHOP)) == 2, "a second pass for the wakes during the first")
    await until(lambda: not passes.running, "the second pass to end")
    assert len(passes.of(SHOP)) == 2, "five wakes during one pass make one pass more, not five"


@pytest.mark.asyncio
async def test_a_due_decision_is_reconciled_when_due_and_not_before(
    passes: Passes, running: Scheduler
) -> None:
    passes.results[SHOP] = Decision(wake_at=datetime.now(UTC) + timedelta(seconds=0.3))
    running.add(SHOP)
    await until(lambda: len(passes.of(SHOP)) == 1, "the first pass")
    passes.results[SHOP] = Decision()  # then nothing is due: only the 300 s resync
    await until(lambda: len(passes.of(SHOP)) == 2, "the pass when the decision is due")
    (_, first), (_, second) = passes.of(SHOP)
    assert second - first >= 0.25


@pytest.mark.asyncio
async def test_no_more_passes_run_at_once_than_there_are_workers(passes: Passes) -> None:
    async with scheduling(passes, workers=3) as scheduler:
        keys = [ReleaseKey("default", f"r{i}") for i in range(20)]
        gate = asyncio.Event()
        for key in keys:
            passes.gates[key] = gate
            scheduler.add(key)
        await until(lambda: len(passes.running) == 3, "three passes under way")
        await asyncio.sleep(0.05)  # give a fourth worker, were there one, the chance to start
        assert len(passes.running) == 3
        gate.set()
        await until(lambda: len({k for k, _, _ in passes.log}) == 20, "every Release reconciled")
        assert passes.most_at_once == 3


@pytest.mark.asyncio
async def test_a_failing_release_backs_off_and_only_its_own_change_cuts_the_backoff_short(
    passes: Passes,
) -> None:
    async with scheduling(passes, backoff=30.0) as scheduler:
        passes.failures[SHOP] = [RuntimeError("API down"), RuntimeError("API down")]
        scheduler.add(SHOP)
        scheduler.add(CART)
        await until(lambda: len(passes.of(SHOP)) == 1 and len(passes.of(CART)) == 1, "a pass of each")
        for _ in range(3):
            scheduler.wake(SHOP)  # its Deployment changed, say: no reason to try before the backoff ends
        scheduler.wake(CART)
        await until(lambda: len(passes.of(CART)) == 2, "the healthy Release to go on")
        assert len(passes.of(SHOP)) == 1, "a wake that is not a change of the Release ended the backoff"
        scheduler.wake(SHOP, changed=True)
        await until(lambda: len(passes.of(SHOP)) == 2, "a change of the Release to end the backoff")


@pytest.mark.asyncio
async def test_the_backoff_grows_after_each_failure(passes: Passes) -> None:
    async with scheduling(passes, backoff=0.1) as scheduler:
        passes.failures[SHOP] = [RuntimeError("API down")] * 3
        scheduler.add(SHOP)
        await until(lambda: len(passes.of(SHOP)) == 4, "three retries", timeout=10)
        at = [when for _, when in passes.of(SHOP)]
        gaps = [later - earlier for earlier, later in itertools.pairwise(at)]
        assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4, gaps  # 0.1·2ⁿ, plus up to 0.1 of jitter


@pytest.mark.asyncio
async def test_a_conflict_is_retried_at_once_reading_the_release_afresh_then_backs_off(
    passes: Passes,
) -> None:
    async with scheduling(passes, backoff=30.0) as scheduler:
        passes.failures[SHOP] = [Conflict("the object has been modified")] * (CONFLICT_RETRIES + 1)
        scheduler.add(SHOP)
        await until(lambda: len(passes.of(SHOP)) == CONFLICT_RETRIES + 1, "the retries at once")
        assert [fresh for fresh, _ in passes.of(SHOP)] == [False] + [True] * CONFLICT_RETRIES
        await asyncio.sleep(0.05)  # a fifth try, were it at once, would have come by now
        assert len(passes.of(SHOP)) == CONFLICT_RETRIES + 1, "conflicts past the first few back off"
        scheduler.wake(SHOP, changed=True)
        await until(lambda: len(passes.of(SHOP)) == CONFLICT_RETRIES + 2, "the pass after the backoff")
        assert passes.of(SHOP)[-1][0] is True, "still read afresh: the last pass was a conflict"


@pytest.mark.asyncio
async def test_a_release_that_is_gone_or_forgotten_is_not_reconciled_again(
    passes: Passes, running: Scheduler
) -> None:
    passes.results[SHOP] = None  # the pass found it gone
    passes.gates[CART] = asyncio.Event()
    running.add(SHOP)
    running.add(CART)
    await until(lambda: len(passes.of(SHOP)) == 1 and CART in passes.running, "both passes")
    running.forget(CART)  # deleted during its pass
    running.wake(CART)
    passes.gates[CART].set()
    await until(lambda: not passes.running, "the pass to end")
    running.wake(SHOP)
    running.wake(CART)
    await asyncio.sleep(0.05)
    assert SHOP not in running and CART not in running
    assert len(passes.of(SHOP)) == 1 and len(passes.of(CART)) == 1


@pytest.mark.asyncio
async def test_stopping_lets_a_pass_under_way_end(passes: Passes) -> None:
    scheduler = scheduler_for(passes)
    task = asyncio.create_task(scheduler.run(_set()))
    passes.gates[SHOP] = asyncio.Event()
    scheduler.add(SHOP)
    await until(lambda: SHOP in passes.running, "the pass to begin")
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done(), "stopped in the middle of a pass"
    passes.gates[SHOP].set()
    await asyncio.gather(task, return_exceptions=True)
    assert not passes.running
    assert len(passes.of(SHOP)) == 1


@pytest.mark.asyncio
async def test_a_pass_past_its_deadline_is_abandoned_its_worker_freed_and_the_release_retried_afresh(
    passes: Passes, caplog: pytest.LogCaptureFixture
) -> None:
    async with scheduling(passes, workers=1, backoff=0.1, pass_seconds=0.2) as scheduler:
        passes.gates[SHOP] = asyncio.Event()  # its first pass waits for an answer that never comes
        scheduler.add(SHOP)
        await until(lambda: SHOP in passes.running, "the hung pass")
        scheduler.add(CART)
        await until(lambda: len(passes.of(CART)) == 1, "the other Release on the one worker")
        passes.gates[SHOP].set()  # answers from now on
        await until(lambda: len(passes.of(SHOP)) == 2, "the hung Release retried", timeout=10)
    assert passes.of(SHOP)[1][0] is True, "what the abandoned pass wrote last may be unseen: read afresh"
    assert passes.of(SHOP)[1][1] - passes.of(SHOP)[0][1] >= 0.2 + 0.1, "deadline, then backoff"
    assert "default/shop: reconcile failed" in caplog.text
    assert "did not end within 0.2s" in caplog.text


def _throttled(retry_after: str) -> ApiException:
    error = ApiException(status=429, reason="Too Many Requests")
    error.headers = {"Retry-After": retry_after}
    return error


@pytest.mark.asyncio
async def test_a_429_is_retried_when_its_retry_after_says_within_the_longest_backoff(passes: Passes) -> None:
    async with scheduling(passes, backoff=0.1) as scheduler:  # the longest backoff: 0.4s
        try:
            raise RuntimeError("patch failed") from _throttled("0.25")
        except RuntimeError as wrapped:
            passes.failures[SHOP] = [wrapped, _throttled("3600")]
        scheduler.add(SHOP)
        await until(lambda: len(passes.of(SHOP)) == 3, "both retries", timeout=10)
    first, second, third = (at for _, at in passes.of(SHOP))
    assert 0.25 <= second - first < 0.35, "Retry-After: 0.25 is more than the first backoff (0.1)"
    assert 0.4 <= third - second < 0.6, "an hour asked is bounded by the longest backoff"


@pytest.mark.asyncio
async def test_a_resync_of_a_release_whose_decision_still_stands_runs_no_pass(passes: Passes) -> None:
    asked: list[ReleaseKey] = []
    standing: dict[ReleaseKey, Decision] = {}

    def unchanged(key: ReleaseKey) -> Decision | None:
        asked.append(key)
        if key == CART:
            raise RuntimeError("a bug in the check")
        return standing.get(key)

    standing[SHOP] = Decision()
    async with scheduling(passes, resync=0.1, unchanged=unchanged) as scheduler:  # type: ignore[arg-type]
        scheduler.add(SHOP)  # a Release added has its first pass at once, without asking
        scheduler.add(CART)
        await until(lambda: asked.count(SHOP) >= 3, "three resyncs of SHOP", timeout=10)
        assert len(passes.of(SHOP)) == 1, "a resync whose decision stands runs no pass"
        await until(lambda: len(passes.of(CART)) >= 3, "a failing check lets the pass run", timeout=10)
        scheduler.wake(SHOP)
        await until(lambda: len(passes.of(SHOP)) >= 2, "a wake (a change) always runs a pass")
