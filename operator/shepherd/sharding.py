"""Sharding: several operators act at once, each on its own share of the Releases.

A Release belongs to exactly one of `count` shards, chosen by a stable hash of "namespace/name": the first
8 bytes of its SHA-256 (UTF-8), read big-endian, modulo `count`. The assignment is the same in every
process, on every machine and in every version of Python (Python's own `hash()` of a string is salted per
process, so it would not be). Each shard has a leader Lease of its own, so each shard can have standbys.

Pure functions only: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SHARDS_FLAG = "--shards"
SHARD_INDEX_FLAG = "--shard-index"


class ShardError(ValueError):
    """A shard that cannot exist; `flag` names the command-line option at fault."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag
        self.message = message


def shard_of(namespace: str, name: str, count: int) -> int:
    """The index of the shard, of `count`, that owns Release namespace/name."""
    if count < 1:
        raise ShardError(SHARDS_FLAG, f"must be 1 or more, got {count}")
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based); Shard() is the whole: one shard that owns every Release."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        for flag, value in ((SHARDS_FLAG, self.count), (SHARD_INDEX_FLAG, self.index)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ShardError(flag, f"must be a whole number, got {value!r}")
        if self.count < 1:
            raise ShardError(SHARDS_FLAG, f"must be 1 or more, got {self.count}")
        if not 0 <= self.index < self.count:
            allowed = "0" if self.count == 1 else f"0 to {self.count - 1}"
            raise ShardError(
                SHARD_INDEX_FLAG, f"must be {allowed} with {SHARDS_FLAG} {self.count}, got {self.index}"
            )

    @property
    def whole(self) -> bool:
        """One shard for all Releases: no sharding."""
        return self.count == 1

    def owns(self, namespace: str, name: str) -> bool:
        return self.whole or shard_of(namespace, name, self.count) == self.index

    def lease_name(self, base: str) -> str:
        """The shard's leader Lease: `base` unsharded, else `<base>-shard-<index>-of-<count>`.

        The count is part of the name: shards of different counts split the Releases differently, so they
        never take each other's Lease (docs/guides/scaling.md, "Sharding")."""
        return base if self.whole else f"{base}-shard-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return "all Releases (one shard)" if self.whole else f"shard {self.index} of {self.count}"
