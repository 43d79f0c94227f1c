"""A 409 from any of the operator's writes is a Conflict, retried at once (docs/concepts/rollback.md: failures
on the way), not a failure that backs off: seen on the real API server through the fault proxy, where a
409 on the status write or the annotation removal backed a promoted Release off for 30s at a time."""

from __future__ import annotations

import json
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from shepherd.core.actions import RemoveAnnotations
from shepherd.kube import Conflict, KubeAPI, ReleaseKey

KEY = ReleaseKey("shop", "shop")


def answering(code: int) -> Any:
    def call(*_: object, **__: object) -> None:
        error = ApiException(status=code, reason="Conflict" if code == 409 else "Error")
        error.body = json.dumps({"kind": "Status", "code": code, "message": "the object has been modified"})
        raise error

    return call


@pytest.fixture
def api() -> KubeAPI:
    return KubeAPI(kubernetes.client.Configuration())


def test_a_conflict_on_the_status_write_is_a_conflict(api: KubeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api._custom, "patch_namespaced_custom_object_status", answering(409))
    with pytest.raises(Conflict, match="Release shop status: the object has been modified"):
        api.patch_status(KEY, {"phase": "Succeeded"})


def test_a_conflict_on_an_annotation_removal_is_a_conflict(
    api: KubeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api._custom, "patch_namespaced_custom_object", answering(409))
    removal = RemoveAnnotations(keys=("shepherd.dev/promote",), values={"shepherd.dev/promote": "true"})
    with pytest.raises(Conflict, match=r"annotation shepherd\.dev/promote"):
        api.apply(KEY, removal, {})


def test_a_release_gone_since_it_was_read_is_a_conflict(
    api: KubeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleted while a pass decided on its cached copy: read it afresh (gone, or created anew), at once."""
    monkeypatch.setattr(api._custom, "patch_namespaced_custom_object_status", answering(404))
    with pytest.raises(Conflict, match="Release shop is gone since it was read"):
        api.patch_status(KEY, {"phase": "Succeeded"}, resource_version="41")


def test_a_status_write_without_a_version_keeps_its_not_found(
    api: KubeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api._custom, "patch_namespaced_custom_object_status", answering(404))
    with pytest.raises(ApiException) as raised:
        api.patch_status(KEY, {"phase": "Succeeded"})
    assert not isinstance(raised.value, Conflict) and raised.value.status == 404


@pytest.mark.parametrize("code", [429, 500])
def test_other_failures_stay_what_they_are(api: KubeAPI, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    monkeypatch.setattr(api._custom, "patch_namespaced_custom_object_status", answering(code))
    with pytest.raises(ApiException) as raised:
        api.patch_status(KEY, {"phase": "Succeeded"})
    assert not isinstance(raised.value, Conflict) and raised.value.status == code
