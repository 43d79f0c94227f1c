"""The pure parts of `kubectl release`: which revision `approve` approves, the approval's name, and what
`get` shows of the canary's real share of pods."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from shepherd.commands import approval_manifest, approval_name, revision_to_approve, role_mismatch
from shepherd.plugin import (
    _view,
    checklist_document,
    checklist_view,
    hoist_connection_options,
    replica_shares,
    route_weights,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
RELEASE_NAMES = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
REVISIONS = st.integers(min_value=1, max_value=10**12)


def test_a_plain_user_name_is_kept_as_it_is() -> None:
    assert approval_name("shop", 2, "alice") == "shop-r2-alice"


@pytest.mark.parametrize(
    ("user", "readable"),
    [
        ("alice@example.com", "shop-r2-alice-example-com-"),
        ("system:serviceaccount:ci:deployer", "shop-r2-system-serviceaccount-ci-deployer-"),
        ("Alice", "shop-r2-alice-"),
        ("oidc:https://id.example.com#bob", "shop-r2-oidc-https-id-example-com-bob-"),
    ],
)
def test_other_user_names_are_made_dns_safe_with_a_hash(user: str, readable: str) -> None:
    name = approval_name("shop", 2, user)

    assert name.startswith(readable) and len(name) == len(readable) + 8
    assert DNS_LABEL.match(name), name


def test_users_that_read_alike_get_different_names() -> None:
    names = {approval_name("shop", 2, user) for user in ("alice", "Alice", "alice.", "ALICE", "a-l-i-c-e")}
    assert len(names) == 5


def test_a_long_name_is_cut_to_63_characters_keeping_the_hash() -> None:
    release = "a" * 63
    first, second = approval_name(release, 7, "alice"), approval_name(release, 7, "bob")

    assert len(first) == len(second) == 63
    assert first != second, "the cut part is still told apart by the hash"
    assert first.startswith("a" * 54)


@given(release=RELEASE_NAMES, revision=REVISIONS, user=st.text(min_size=1, max_size=300))
def test_every_name_is_a_dns_label_and_the_same_every_time(release: str, revision: int, user: str) -> None:
    name = approval_name(release, revision, user)

    assert DNS_LABEL.match(name), name
    assert approval_name(release, revision, user) == name


@given(
    release=RELEASE_NAMES, revision=REVISIONS, users=st.lists(st.text(min_size=1), min_size=2, unique=True)
)
def test_distinct_users_get_distinct_names(release: str, revision: int, users: list[str]) -> None:
    assert len({approval_name(release, revision, user) for user in users}) == len(users)


def test_the_current_revision_is_approved_by_default() -> None:
    assert revision_to_approve("shop", 3, None) == 3
    assert revision_to_approve("shop", 3, 3) == 3


@pytest.mark.parametrize("requested", [2, 4])
def test_another_revision_than_the_current_one_is_refused(requested: int) -> None:
    with pytest.raises(ValueError, match=f"release shop is at revision 3, not {requested}"):
        revision_to_approve("shop", 3, requested)


@pytest.mark.parametrize("current", [None, "3", True])
def test_a_release_without_a_revision_cannot_be_approved(current: object) -> None:
    with pytest.raises(ValueError, match="release shop has no revision yet"):
        revision_to_approve("shop", current, None)


@pytest.mark.parametrize(
    ("typed", "parsed"),
    [
        (["status", "shop", "-n", "prod"], ["-n", "prod", "status", "shop"]),
        (["-n", "prod", "status", "shop"], ["-n", "prod", "status", "shop"]),
        (["list", "-nprod", "-A"], ["-nprod", "list", "-A"]),
        (
            ["approve", "shop", "--context=staging", "--comment", "ok", "--kubeconfig", "/k"],
            ["--context=staging", "--kubeconfig", "/k", "approve", "shop", "--comment", "ok"],
        ),
        (["approve", "shop", "--", "-n"], ["approve", "shop", "--", "-n"]),
        (["status", "shop", "-o", "json"], ["status", "shop", "-o", "json"]),
    ],
)
def test_connection_options_are_taken_anywhere_on_the_line_like_kubectl(
    typed: list[str], parsed: list[str]
) -> None:
    assert hoist_connection_options(typed) == parsed


PAUSED_AT_25 = {
    "phase": "Paused",
    "canaryWeight": 25,
    "message": "step 2/5, canary at 25%",
    "traffic": {
        "routing": "Replicas",
        "desiredWeight": 25,
        "components": [
            {"name": "api", "canaryPods": 1, "stablePods": 3, "canaryShare": 25},
            {"name": "web", "canaryPods": 1, "stablePods": 1, "canaryShare": 50},
            {"name": "worker", "canaryPods": 0, "stablePods": 3, "canaryShare": 0},
        ],
    },
}


def test_get_shows_each_components_real_share_of_pods_beside_the_weight_asked() -> None:
    assert replica_shares(PAUSED_AT_25) == [
        "api: canary 25% of pods (1/4), asked 25%",
        "web: canary 50% of pods (1/2), asked 25%",
        "worker: no canary pod (3 stable)",
    ]
    console = Console(record=True, width=200)
    console.print(_view("shop", {"spec": {"version": "1.1.0"}, "status": PAUSED_AT_25}))
    shown = console.export_text()
    assert "  web: canary 50% of pods (1/2), asked 25%" in shown
    assert shown.index("asked 25%") < shown.index("step 2/5"), "under the weight, before the message"


def test_get_shows_no_shares_at_rest_or_for_another_routing() -> None:
    assert replica_shares({"phase": "Succeeded", "canaryWeight": 100}) == []
    routed = {**PAUSED_AT_25, "traffic": {**PAUSED_AT_25["traffic"], "routing": "GatewayAPI"}}
    assert replica_shares(routed) == []


def test_get_shows_each_routes_weight_and_whether_the_gateway_accepted_it() -> None:
    routes = [
        {"name": "shop", "namespace": "prod", "weight": 20, "verified": True},
        {
            "name": "shop",
            "namespace": "edge",
            "weight": 0,
            "verified": False,
            "message": "is not Accepted by edge",
        },
    ]
    status = {
        "phase": "Progressing",
        "traffic": {"routing": "GatewayAPI", "desiredWeight": 20, "routes": routes},
    }

    assert route_weights(status) == [
        "HTTPRoute prod/shop: canary 20%, asked 20%, live",
        "HTTPRoute edge/shop: canary 0%, asked 20%, not live: is not Accepted by edge",
    ]
    assert route_weights(PAUSED_AT_25) == [], "replica routing shows pods, not routes"


def test_a_sign_off_for_a_role_gets_a_name_of_its_own() -> None:
    plain, qa, sre = (approval_name("shop", 2, "alice", group) for group in ("", "qa", "sre"))
    assert plain == "shop-r2-alice"
    assert qa.startswith("shop-r2-alice-for-qa-") and sre.startswith("shop-r2-alice-for-sre-")
    assert len({plain, qa, sre}) == 3 and all(DNS_LABEL.match(n) for n in (qa, sre))
    assert approval_name("shop", 2, "alice-for-qa") != qa, "a user named like a sign-off is another name"


@given(RELEASE_NAMES, REVISIONS, st.text(min_size=1, max_size=40), st.text(max_size=40))
def test_every_sign_off_name_is_a_dns_label(release: str, revision: int, user: str, group: str) -> None:
    assert DNS_LABEL.match(approval_name(release, revision, user, group))


def test_approve_with_a_group_signs_for_that_role() -> None:
    manifest = approval_manifest("prod", "shop", 2, "alice", "suite green", "uid-1", "qa")
    assert manifest["spec"] == {
        "release": "shop",
        "revision": 2,
        "approver": "alice",
        "group": "qa",
        "comment": "suite green",
    }
    assert "group" not in approval_manifest("prod", "shop", 2, "alice", "")["spec"]


CHECKLIST = [
    {
        "name": "sign-off",
        "group": "qa",
        "kind": "approval",
        "state": "Passed",
        "owner": "qa",
        "description": "QA has run the regression suite",
        "message": "1/1 sign-offs from qa: alice",
        "signedBy": [{"user": "alice", "group": "qa", "at": "2026-11-02T09:00:00.000Z"}],
        "passedAt": "2026-11-02T09:00:05Z",
    },
    {
        "name": "sign-off",
        "group": "sre",
        "kind": "approval",
        "state": "Pending",
        "owner": "sre",
        "message": "0/2 sign-offs from sre: nobody yet",
    },
    {"name": "smoke", "kind": "job", "state": "Pending", "owner": "team-shop", "message": "job/x is running"},
]


@pytest.mark.parametrize(
    ("items", "group", "warning"),
    [
        (
            CHECKLIST,
            "",
            "release shop needs sign-off by role (qa, sre): "
            "an approval without --group counts for none of them",
        ),
        (CHECKLIST, "dev", "no approval gate of release shop asks for group dev (they ask for qa, sre)"),
        (CHECKLIST, "sre", None),
        ([*CHECKLIST, {"name": "two", "kind": "approval", "state": "Pending"}], "", None),
        ([], "qa", None),
    ],
)
def test_approve_warns_when_the_sign_off_would_count_for_nothing(
    items: list[dict[str, object]], group: str, warning: str | None
) -> None:
    assert role_mismatch("shop", items, group) == warning


def test_checklist_shows_every_item_its_role_owner_signers_and_when_it_passed() -> None:
    console = Console(record=True, width=240)
    console.print(checklist_view("shop", {"revision": 2, "version": "1.1.0", "checklist": CHECKLIST}))
    shown = console.export_text()
    assert "checklist of release shop, revision 2 (1.1.0): 1/3 passed" in shown
    rows = [line.split() for line in shown.splitlines()]
    assert rows[2][:9] == ["sign-off", "qa", "approval", "Passed", "qa", "alice", "for", "qa", "at"]
    assert "2026-11-02T09:00:05Z" in rows[2]
    assert rows[3][:2] == ["QA", "has"], "the description under the item"
    assert rows[4][:5] == ["sign-off", "sre", "approval", "Pending", "sre"]
    assert rows[5][:5] == ["smoke", "job", "Pending", "team-shop", "job/x"]


def test_checklist_without_gates_says_so_and_json_keeps_the_revision() -> None:
    assert checklist_view("shop", {"revision": 1, "version": "1.0.0"}) == (
        "release shop, revision 1 (1.0.0): no gates, nothing to check"
    )
    release = {
        "metadata": {"namespace": "prod"},
        "status": {"revision": 2, "version": "1.1.0", "phase": "Gating", "checklist": CHECKLIST},
    }
    assert checklist_document("shop", release) == {
        "release": "shop",
        "namespace": "prod",
        "revision": 2,
        "version": "1.1.0",
        "phase": "Gating",
        "items": CHECKLIST,
    }
