"""Which shard owns a Release: stable everywhere, balanced, exactly one owner; and the shard's Lease."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from shepherd.sharding import Shard, ShardError, shard_of

# The assignment the algorithm defines, worked out outside Python for each key K:
#   printf %s K | sha256sum  -> the first 16 hex digits, as an integer, modulo N.
# Changing the hash would move live Releases between shards on an upgrade: this table must not change.
ASSIGNED = {
    ("prod", "shop"): {2: 0, 3: 2, 4: 0, 7: 1},
    ("prod", "web"): {2: 1, 3: 1, 4: 1, 7: 0},
    ("staging", "shop"): {2: 0, 3: 2, 4: 0, 7: 2},
    ("default", "a"): {2: 0, 3: 2, 4: 2, 7: 6},
    ("team-a", "payments"): {2: 1, 3: 2, 4: 3, 7: 6},
    ("team-b", "payments"): {2: 0, 3: 1, 4: 0, 7: 1},
}
NAMES = [(f"team-{i % 37}", f"release-{i}") for i in range(10_000)]


@pytest.mark.parametrize(("namespace", "name"), ASSIGNED)
def test_the_owner_is_the_sha256_of_namespace_and_name(namespace: str, name: str) -> None:
    for count, index in ASSIGNED[namespace, name].items():
        assert shard_of(namespace, name, count) == index
        assert [i for i in range(count) if Shard(i, count).owns(namespace, name)] == [index]


def test_the_assignment_is_the_same_in_another_process_with_another_string_hash_seed() -> None:
    program = (
        "import json, sys\n"
        "from shepherd.sharding import shard_of\n"
        "keys = json.loads(sys.stdin.read())\n"
        "print(json.dumps([shard_of(ns, name, n) for ns, name, n in keys]))\n"
    )
    keys = [(ns, name, n) for ns, name in NAMES[:500] for n in (2, 3, 5)]
    here = [shard_of(ns, name, n) for ns, name, n in keys]
    for seed in ("1", "4242"):
        done = subprocess.run(
            [sys.executable, "-c", program],
            input=json.dumps(keys),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert json.loads(done.stdout) == here


@pytest.mark.parametrize("count", [2, 3, 4])
def test_ten_thousand_releases_spread_evenly_and_each_has_exactly_one_owner(count: int) -> None:
    shards = [Shard(i, count) for i in range(count)]
    owners: Counter[int] = Counter()
    for namespace, name in NAMES:
        (owner,) = [s.index for s in shards if s.owns(namespace, name)]
        owners[owner] += 1

    fair = len(NAMES) / count
    assert sorted(owners) == list(range(count))
    assert all(abs(owned - fair) < 0.05 * fair for owned in owners.values()), owners


def test_one_shard_owns_everything_and_keeps_the_lease_name() -> None:
    whole = Shard()

    assert (whole.index, whole.count) == (0, 1)
    assert all(whole.owns(namespace, name) for namespace, name in NAMES[:1000])
    assert whole.lease_name("shepherd") == "shepherd"


def test_each_shard_of_each_count_has_a_lease_of_its_own() -> None:
    names = [Shard(i, n).lease_name("shepherd") for n in (2, 3) for i in range(n)]

    assert names == [
        "shepherd-shard-0-of-2",
        "shepherd-shard-1-of-2",
        "shepherd-shard-0-of-3",
        "shepherd-shard-1-of-3",
        "shepherd-shard-2-of-3",
    ]


@pytest.mark.parametrize(
    ("index", "count", "flag", "message"),
    [
        pytest.param(0, 0, "--shards", "must be 1 or more, got 0", id="no-shards"),
        pytest.param(0, -2, "--shards", "must be 1 or more, got -2", id="negative-shards"),
        pytest.param(2, 2, "--shard-index", "must be 0 to 1 with --shards 2, got 2", id="index-too-high"),
        pytest.param(-1, 3, "--shard-index", "must be 0 to 2 with --shards 3, got -1", id="negative-index"),
        pytest.param(1, 1, "--shard-index", "must be 0 with --shards 1, got 1", id="one-shard"),
        pytest.param(True, 2, "--shard-index", "must be a whole number, got True", id="boolean"),
    ],
)
def test_a_shard_that_cannot_exist_is_refused_naming_the_flag(
    index: int, count: int, flag: str, message: str
) -> None:
    with pytest.raises(ShardError) as refused:
        Shard(index, count)

    assert (refused.value.flag, refused.value.message) == (flag, message)
    assert str(refused.value) == f"{flag}: {message}"


def test_shard_of_refuses_no_shards() -> None:
    with pytest.raises(ShardError, match="--shards: must be 1 or more, got 0"):
        shard_of("prod", "shop", 0)
