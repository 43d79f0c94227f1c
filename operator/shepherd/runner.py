"""Start the operator: in the foreground (`shepherd run`) or in a thread (the demo, the tests)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from types import TracebackType

import kopf
import kubernetes.client

from shepherd.handlers import REGISTRY, Runtime, operator_settings
from shepherd.kube import KubeAPI

DEFAULT_RESYNC_SECONDS = 30.0


@dataclass(frozen=True)
class OperatorOptions:
    namespaces: Collection[str] = ()  # empty: all namespaces
    standalone: bool = False
    liveness_endpoint: str | None = None
    resync_seconds: float = DEFAULT_RESYNC_SECONDS
    priority: int = 0
    metrics_port: int | None = None  # serve /metrics on this port (0: any free port)


async def run_operator(
    configuration: kubernetes.client.Configuration,
    options: OperatorOptions,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    runtime: Runtime | None = None,
) -> None:
    api = KubeAPI(configuration)
    runtime = runtime or Runtime(api=api, resync_seconds=options.resync_seconds)
    metrics_server = None if options.metrics_port is None else runtime.metrics.serve(options.metrics_port)
    try:
        await kopf.operator(
            registry=REGISTRY,
            settings=operator_settings(),
            clusterwide=not options.namespaces,
            namespaces=list(options.namespaces),
            standalone=options.standalone,
            priority=options.priority,
            liveness_endpoint=options.liveness_endpoint,
            memo=kopf.Memo(runtime=runtime),
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        api.close()


@dataclass
class OperatorThread:
    """The real operator in a background thread with its own event loop; stops cleanly on exit."""

    configuration: kubernetes.client.Configuration
    options: OperatorOptions = field(default_factory=lambda: OperatorOptions(standalone=True))
    startup_timeout: float = 30.0
    runtime: Runtime | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def __enter__(self) -> OperatorThread:
        self.runtime = self.runtime or Runtime(
            api=KubeAPI(self.configuration), resync_seconds=self.options.resync_seconds
        )
        self._thread = threading.Thread(target=self._main, name="shepherd-operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.startup_timeout):
            self.stop()
            raise RuntimeError(f"the operator did not start within {self.startup_timeout}s: {self._error!r}")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _main(self) -> None:
        try:
            asyncio.run(run_operator(self.configuration, self.options, self._stop, self._ready, self.runtime))
        except BaseException as error:
            self._error = error
            self._ready.set()
            raise
