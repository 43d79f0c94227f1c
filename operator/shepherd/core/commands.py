"""Manual commands (annotations) acknowledged in status, so each one takes effect exactly once.

A command is acted on in the decision that sees it, and acknowledged in `status.commands` in the same
status write as its effect; the shell removes the annotation only after that write succeeded, and only if
it still holds the acknowledged value. So whatever write fails, or wherever the operator dies:

- the status write failed: nothing is acknowledged, the annotation is still there, the next pass acts on it;
- the removal failed: the annotation is still there but acknowledged (`open`), the next pass only removes it;
- the removal went through: the next pass sees the annotation gone and closes the acknowledgement.

An annotation whose key and value match an open acknowledgement is the command already done. The same key
and value given again once the acknowledgement is closed is a new command. `seq` numbers acknowledgements,
so a client that read the highest one before annotating knows which acknowledgement is its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from shepherd.core.timefmt import format_time, parse_time

KEPT_CLOSED = 10  # closed acknowledgements kept for clients waiting on them; open ones are always kept


@dataclass(frozen=True)
class CommandAck:
    annotation: str  # e.g. shepherd.dev/abort
    value: str
    seq: int
    at: datetime
    outcome: str
    revision: int  # the revision the command acted on
    open: bool = True  # the annotation is still to be removed

    def to_dict(self) -> dict[str, Any]:
        return {
            "annotation": self.annotation,
            "value": self.value,
            "seq": self.seq,
            "at": format_time(self.at),
            "outcome": self.outcome,
            "revision": self.revision,
            "open": self.open,
        }

    @classmethod
    def from_dict(cls, data: Any) -> CommandAck | None:
        if not isinstance(data, Mapping):
            return None
        at, seq = parse_time(data.get("at")), data.get("seq")
        if at is None or not isinstance(seq, int) or not data.get("annotation"):
            return None
        revision = data.get("revision")
        return cls(
            annotation=str(data["annotation"]),
            value=str(data.get("value", "")),
            seq=seq,
            at=at,
            outcome=str(data.get("outcome", "")),
            revision=revision if isinstance(revision, int) else 0,
            open=data.get("open") is not False,
        )


def read_acks(status: Mapping[str, Any]) -> tuple[CommandAck, ...]:
    read = (CommandAck.from_dict(raw) for raw in status.get("commands") or [])
    return tuple(a for a in read if a is not None)


def is_done(acks: Sequence[CommandAck], key: str, value: str) -> bool:
    """The annotation `key=value` is a command already acted on (its removal is pending)."""
    return any(a.open and a.annotation == key and a.value == value for a in acks)


def close_removed(acks: Sequence[CommandAck], annotations: Mapping[str, str]) -> tuple[CommandAck, ...]:
    """Acknowledgements whose annotation is gone, or holds another value now, are closed."""
    return tuple(
        replace(a, open=False) if a.open and annotations.get(a.annotation) != a.value else a for a in acks
    )


def acknowledge(
    acks: Sequence[CommandAck], key: str, value: str, outcome: str, revision: int, now: datetime
) -> tuple[CommandAck, ...]:
    seq = max((a.seq for a in acks), default=0) + 1
    return (*acks, CommandAck(key, value, seq, now, outcome, revision))


def bounded(acks: Sequence[CommandAck]) -> list[dict[str, Any]] | None:
    """Every open acknowledgement and the newest closed ones, oldest first; None when there are none."""
    closed = [a for a in acks if not a.open][-KEPT_CLOSED:]
    kept = sorted((*closed, *(a for a in acks if a.open)), key=lambda a: a.seq)
    return [a.to_dict() for a in kept] or None
