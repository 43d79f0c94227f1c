"""How long anything that leaves the process may take: the operator's deadlines, all in one place.

Every API request, watch, pass and call to the outside world has one, so that nothing waits forever: a
connection that is never answered costs one deadline, then the work is tried again. `shepherd run` takes
each as a flag and the chart as a value (`limits:`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    # One API request (get, list, create, patch, delete): connecting, then each read of its answer.
    request_seconds: float = 30.0
    # A watch with neither an event nor a bookmark (the API server sends one about every minute) for this
    # long is dropped and opened again.
    watch_idle_seconds: float = 90.0
    # One pass over one Release; past it the pass is abandoned, its worker freed, and the Release retried.
    pass_seconds: float = 120.0
    # Threads for calls to the outside world (Prometheus queries, webhook gates), apart from the API's.
    outside_workers: int = 16
    # An informer that has not listed successfully for this long turns /readyz to 503, and past the longer
    # limit /healthz too, so that the kubelet restarts the pod and a standby takes over.
    unready_after_seconds: float = 60.0
    unhealthy_after_seconds: float = 300.0

    def problems(self) -> Iterator[tuple[str, str]]:
        """(field, message) for each limit that cannot work."""
        for item in fields(self):
            if getattr(self, item.name) <= 0:
                yield item.name, "must be more than 0"
        if self.unhealthy_after_seconds <= self.unready_after_seconds:
            yield "unhealthy_after_seconds", "must be longer than the unready limit"
