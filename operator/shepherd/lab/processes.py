"""The processes the lab starts end with it, however it ends: Ctrl-C, SIGTERM, SIGHUP, an exception, SIGKILL.

`spawn` starts each child in a process group of its own, so a terminal's Ctrl-C or hangup reaches only the
lab, which then stops its children in order, and `stop_process` signals the whole group, so whatever a child
started goes with it. On Linux each child also has the kernel send it SIGKILL when its parent dies
(PR_SET_PDEATHSIG): a lab killed with SIGKILL, which runs no cleanup, leaves nothing running either.
`signals_raise` makes SIGTERM and SIGHUP raise `Stopped`, as SIGINT raises KeyboardInterrupt, so every
`with` block unwinds and stops what it started.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Loaded once here: a child runs die_with_parent between fork and exec, where importing or loading is unsafe.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """The process was asked to stop by a signal; a BaseException, like KeyboardInterrupt, so that no
    `except Exception` swallows it on its way up."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def die_with_parent(signum: int, parent: int | None = None) -> None:
    """On Linux, have the kernel send `signum` to this process when the thread that started it ends (for a
    process started from the main thread: when its parent exits, even by SIGKILL); elsewhere nothing.
    `parent`: the PID the parent had, to catch a parent that died before the request took effect."""
    if _LIBC is None:
        return
    if _LIBC.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signum)


def spawn(command: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `command`, its output appended to `log`, in a new session and process group, set to be killed
    when this process dies. Start it from the thread that lives as long as the child (the main thread):
    the kernel counts a parent's death when the thread that started the child ends."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            list(command),
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, signal.SIGKILL, os.getpid()),
        )


def signal_group(popen: subprocess.Popen[bytes], signum: int) -> None:
    """Send `signum` to the process group `spawn` made for the child (it is the group's leader)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signum)


def stop_process(popen: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM to the child's group; SIGKILL to it if the child still runs after `grace` seconds, and to
    whatever of its group outlived it. Nothing for a child already waited for: its PID, and so its
    group's ID, may be another process's by now."""
    if popen.poll() is not None:
        return
    signal_group(popen, signal.SIGTERM)
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        signal_group(popen, signal.SIGKILL)
        popen.wait()
    signal_group(popen, signal.SIGKILL)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within: SIGINT raises KeyboardInterrupt, SIGTERM or SIGHUP Stopped, in the main thread. After the
    first, all three are ignored until the block ends, so that stopping every process runs to its end."""
    stopping = (signal.SIGINT, *STOP_SIGNALS)
    previous = {signum: signal.getsignal(signum) for signum in stopping}

    def handle(signum: int, frame: FrameType | None) -> None:
        for other in stopping:
            signal.signal(other, signal.SIG_IGN)
        raise KeyboardInterrupt() if signum == signal.SIGINT else Stopped(signum)

    for signum in stopping:
        signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler set outside Python, which cannot be put back
                signal.signal(signum, handler)
