"""The webhook client's reading of answers and errors (the requests themselves run in the gate stories)."""

from __future__ import annotations

import requests

from shepherd.webhooks import MAX_LINE, first_line, root_cause


def test_the_first_line_is_trimmed_and_stripped_of_control_characters() -> None:
    assert first_line(b"  build 42 \x1b[32mpassed\x1b[0m \r\nsecond line") == "build 42 [32mpassed[0m"
    assert first_line(b"\n\n") == ""
    assert first_line(b"\xff\xfeok") == "\ufffd\ufffdok"


def test_a_long_first_line_is_cut_with_an_ellipsis() -> None:
    line = first_line(b"x" * 1000)
    assert line == "x" * MAX_LINE + "…"


def test_the_root_cause_drops_the_wrappers_and_object_reprs() -> None:
    inner = ConnectionRefusedError(111, "Connection refused")
    wrapper = OSError(
        "<urllib3.connection.HTTPConnection object at 0x7f00ff>: Failed to establish a new connection"
    )
    wrapper.__cause__ = inner
    error = requests.ConnectionError(wrapper)
    error.__context__ = wrapper
    assert root_cause(error) == "[Errno 111] Connection refused"
    assert root_cause(OSError(wrapper.args[0])) == "Failed to establish a new connection"
    assert root_cause(requests.ConnectionError()) == "ConnectionError"
