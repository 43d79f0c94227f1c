"""The shell's side of webhook gates: make the requests the core asked for, off the event loop.

Header values come from the Secret a gate names and exist only inside the request: they are never
logged, put in an answer, or written to status.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from concurrent.futures import Executor

import requests

from shepherd.core.gates import WebhookAnswer, WebhookCall
from shepherd.kube import KubeAPI, secret_text
from shepherd.measure import off_loop

MAX_BODY_BYTES = 4096  # enough for a first line; a huge body is not read
MAX_LINE = 200
_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-f]+>: ")


async def call_webhooks(
    api: KubeAPI, namespace: str, calls: Sequence[WebhookCall], outside: Executor | None = None
) -> dict[str, WebhookAnswer]:
    """Every call at once, each bounded by its own timeout, on the `outside` threads."""
    answers = await asyncio.gather(*(off_loop(outside, call_webhook, api, namespace, c) for c in calls))
    return {call.gate: answer for call, answer in zip(calls, answers, strict=True)}


def call_webhook(api: KubeAPI, namespace: str, call: WebhookCall) -> WebhookAnswer:
    headers: dict[str, str] = {}
    if call.headers_secret:
        secret = api.read_secret(namespace, call.headers_secret)
        where = f"headersSecretRef: Secret {namespace}/{call.headers_secret}"
        if secret is None:
            return WebhookAnswer(None, error=f"{where} not found")
        try:
            headers = secret_text(secret)
        except ValueError as error:
            return WebhookAnswer(None, error=f"{where}: {error}")
    try:
        with requests.request(
            call.method,
            call.url,
            headers=headers,
            json=dict(call.body) if call.method == "POST" else None,
            timeout=call.timeout_seconds,
            stream=True,
        ) as response:
            body = response.raw.read(MAX_BODY_BYTES, decode_content=True)
            return WebhookAnswer(response.status_code, first_line(body))
    except requests.Timeout:
        return WebhookAnswer(None, error=f"no answer within {call.timeout_seconds:g}s")
    except requests.RequestException as error:
        return WebhookAnswer(None, error=f"cannot connect: {root_cause(error)}")


def first_line(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    line = text.splitlines()[0].strip() if text else ""
    printable = "".join(c for c in line if c.isprintable())
    return printable[:MAX_LINE] + ("…" if len(printable) > MAX_LINE else "")


def root_cause(error: BaseException) -> str:
    """The innermost reason, without urllib3's object reprs: "Connection refused", not a page of wrappers."""
    cause: BaseException = error
    while True:
        inner = getattr(cause, "reason", None) or cause.__cause__ or cause.__context__
        if not isinstance(inner, BaseException) or inner is cause:
            break
        cause = inner
    text = _OBJECT_REPR.sub("", str(cause))
    return text or type(cause).__name__
