"""Leader election over a coordination.k8s.io/v1 Lease: who may act, decided on plain data.

The rules are client-go's (k8s.io/client-go/tools/leaderelection). A candidate takes a Lease that does not
exist, was released (no holder), or whose holder has not renewed it for its leaseDurationSeconds, counted on
the candidate's own clock from the moment it first saw the record as it is: clocks of different machines
never need to agree. The leader renews every retry period and stops acting once it could not renew for the
renew deadline; that is shorter than the lease duration, so it has stopped before anyone else may start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from shepherd.core.timefmt import format_micro

# client-go's JitterFactor: the renew deadline leaves room for at least one retry that comes late.
RETRY_JITTER = 1.2


@dataclass(frozen=True)
class LeaseTiming:
    lease_duration: float = 15.0  # seconds others wait after the leader's last renewal
    renew_deadline: float = 10.0  # seconds the leader keeps acting without a successful renewal
    retry_period: float = 2.0  # seconds between two attempts to take or renew the lease

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for every rule the timing breaks; empty when it is usable."""
        found = []
        if self.lease_duration < 1 or self.lease_duration != int(self.lease_duration):
            found.append(("lease_duration", "must be a whole number of seconds, at least 1s"))
        if self.renew_deadline >= self.lease_duration:
            found.append(("renew_deadline", "must be shorter than the lease duration"))
        if self.retry_period <= 0:
            found.append(("retry_period", "must be longer than 0s"))
        elif self.renew_deadline <= RETRY_JITTER * self.retry_period:
            found.append(("renew_deadline", f"must be longer than {RETRY_JITTER} times the retry period"))
        return found


@dataclass(frozen=True)
class LeaseRecord:
    """The spec of a Lease. Times stay the strings the API holds: decisions never compare them."""

    holder: str = ""
    duration: int = 0
    acquired: str = ""
    renewed: str = ""
    transitions: int = 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> LeaseRecord:
        duration, transitions = spec.get("leaseDurationSeconds"), spec.get("leaseTransitions")
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=duration if isinstance(duration, int) else 0,
            acquired=str(spec.get("acquireTime") or ""),
            renewed=str(spec.get("renewTime") or ""),
            transitions=transitions if isinstance(transitions, int) else 0,
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration,
            "acquireTime": self.acquired,
            "renewTime": self.renewed,
            "leaseTransitions": self.transitions,
        }


@dataclass(frozen=True)
class Sighting:
    """The Lease's record as this candidate sees it, and since when (on the candidate's monotonic clock)."""

    record: LeaseRecord | None
    since: float


def sighted(previous: Sighting | None, record: LeaseRecord | None, at: float) -> Sighting:
    """A record seen again unchanged keeps when it was first seen: a holder that stops renewing expires."""
    if previous is not None and previous.record == record:
        return previous
    return Sighting(record, at)


def claim(seen: Sighting, identity: str, at: float, now: datetime, timing: LeaseTiming) -> LeaseRecord | None:
    """The record that takes or renews the lease for `identity`, or None while another holder's lease runs."""
    current, stamp = seen.record, format_micro(now)
    if current is not None and current.holder == identity:
        return replace(current, duration=int(timing.lease_duration), renewed=stamp)
    if current is not None and current.holder and at < seen.since + current.duration:
        return None
    transitions = 0 if current is None else current.transitions + 1
    return LeaseRecord(identity, int(timing.lease_duration), stamp, stamp, transitions)


def released(record: LeaseRecord, now: datetime) -> LeaseRecord:
    """What a leader writes when it stops on purpose, so that a standby takes over at once (client-go's
    ReleaseOnCancel)."""
    stamp = format_micro(now)
    return LeaseRecord("", 1, stamp, stamp, record.transitions)
