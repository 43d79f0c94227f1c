"""The shell's status write: a merge patch of only what changed."""

from shepherd.reconcile import status_patch


def test_status_patch_sends_changes_and_nulls_for_removed_keys() -> None:
    old = {"phase": "Progressing", "canaryWeight": 25, "unreadySince": "t", "history": [1]}
    new = {"phase": "Progressing", "canaryWeight": 50, "unreadySince": None, "history": [1]}
    assert status_patch(old, new) == {"canaryWeight": 50, "unreadySince": None}


def test_no_patch_when_nothing_changed() -> None:
    same = {"phase": "Succeeded", "stepSince": None}
    assert status_patch({"phase": "Succeeded"}, same) == {}
