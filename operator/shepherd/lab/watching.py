"""What the lab's stand-ins for cluster components share: a start/stop lifetime used as a `with` block, and
following a kind of object by list then watch, as client-go's informers do."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import kubernetes
import urllib3

WATCH_TIMEOUT = 300  # seconds a watch stays open before it is renewed

logger = logging.getLogger(__name__)


class Lifecycle:
    """`with` starts it and stops it; a start that fails halfway stops what it had started."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def follow(
    list_call: Callable[..., Any],
    handle: Callable[[str, dict[str, Any]], None],
    *,
    listed: threading.Event,
    stopping: threading.Event,
    what: str,
    reset: Callable[[], None] = lambda: None,
) -> None:
    """Until `stopping`: list with list_call, then watch from the list's resourceVersion; every object
    listed ("ADDED") or watched goes to handle(event type, object as JSON). Each list starts with reset();
    `listed` is set after the first. A watch too old (410) lists again; a failed or cut one watches again."""
    resource_version = ""
    while not stopping.is_set():
        try:
            if not resource_version:
                document = json.loads(list_call(_preload_content=False).data)
                reset()
                for item in document.get("items") or []:
                    handle("ADDED", item)
                resource_version = document["metadata"]["resourceVersion"]
                listed.set()
            stream = kubernetes.watch.Watch().stream(  # type: ignore[no-untyped-call]
                list_call,
                resource_version=resource_version,
                timeout_seconds=WATCH_TIMEOUT,
                allow_watch_bookmarks=True,
            )
            for event in stream:
                if stopping.is_set():
                    return
                item = event["raw_object"]
                resource_version = item["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    handle(event["type"], item)
        except kubernetes.client.ApiException as error:
            if error.status == 410:
                resource_version = ""
                continue
            logger.warning("%s watch failed: %s; watching again", what, error)
            stopping.wait(0.5)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            if stopping.is_set():
                return
            logger.warning("%s watch cut: %s; watching again", what, error)
            stopping.wait(0.5)


def start_thread(target: Callable[[], None], name: str, threads: list[threading.Thread]) -> None:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    threads.append(thread)
