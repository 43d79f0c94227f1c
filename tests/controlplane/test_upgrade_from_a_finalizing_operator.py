"""Story: a Release that an earlier Shepherd put its finalizer on is let go by this one.

Earlier versions ran a Kopf daemon per Release, and Kopf keeps a Release with a daemon from being deleted
with the finalizer `shepherd.dev/finalizer`. This version runs no daemon and needs no finalizer: it takes
the earlier one away, so that deleting such a Release never waits for an operator.
"""

from __future__ import annotations

import kubernetes

from story import Story, quickstart_release

FINALIZER = "shepherd.dev/finalizer"


def test_an_earlier_versions_finalizer_is_taken_away_and_the_release_deletes(story: Story) -> None:
    release = quickstart_release("1.0.0")
    release["metadata"]["finalizers"] = [FINALIZER, "example.com/keep"]
    story.apply(release)
    story.wait_phase("Succeeded", revision=1)
    story.wait_until(
        "the earlier version's finalizer to be taken away",
        lambda: story.release()["metadata"].get("finalizers") == ["example.com/keep"],
    )

    story.kubectl("delete", "release", "shop", "--wait=false")
    story.wait_until(
        "the Release to be marked for deletion", lambda: "deletionTimestamp" in story.release()["metadata"]
    )
    assert story.release()["metadata"]["finalizers"] == ["example.com/keep"], "someone else's finalizer stays"
    story.kubectl(
        "patch", "release", "shop", "--type=json", "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]'
    )

    def gone() -> bool:
        try:
            story.release()
        except kubernetes.client.ApiException as error:
            return error.status == 404
        return False

    story.wait_until("the Release to be deleted", gone)
