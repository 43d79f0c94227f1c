"""A webhook receiver on 127.0.0.1 for the notification stories of every tier, and the Secret naming it."""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml


@dataclass
class Receiver:
    """A webhook on 127.0.0.1: records every POST and answers with `answers` in turn, then 200."""

    answers: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)  # the JSON bodies, in arrival order
    accepted: list[dict[str, Any]] = field(default_factory=list)  # those answered 2xx
    token: str = field(default_factory=lambda: f"T0{secrets.token_hex(8)}")  # the URL's secret part

    def __post_init__(self) -> None:
        receiver, lock = self, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    code = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.requests.append(body)
                    if code < 300:
                        receiver.accepted.append(body)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads what arrived from `requests`."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/{self.token}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def phases(self) -> list[tuple[int, str]]:
        return [(body["revision"], body["phase"]) for body in self.accepted]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.close()


def secret(name: str, url: str, namespace: str = "default") -> str:
    """Like `kubectl create secret generic NAME --from-literal=url=URL`, with the trailing newline of a
    URL pasted into a file."""
    data = {"url": base64.b64encode(f"{url}\n".encode()).decode()}
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": data,
        }
    )
