"""kstatus, the library Flux's health checks use (sigs.k8s.io/cli-utils, built into `kstatus`), on
Releases as the real API server serves them: live while a story runs, and on every captured status of
tests/fixtures/release_status, which the Argo CD health tests and the Python port (tests/kstatus.py) read
too. The port and the library must agree on each."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kstatus import compute
from shepherd.lab.controlplane import ControlPlane
from story import Story, quickstart_release

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "release_status"


def kstatus(control_plane: ControlPlane, obj: dict[str, Any]) -> dict[str, str]:
    result = subprocess.run(
        [str(control_plane.bin_dir / "kstatus")],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    verdict: dict[str, str] = json.loads(result.stdout)
    return verdict


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.yaml")))
def test_the_library_and_the_port_agree_on_every_captured_release(
    control_plane: ControlPlane, name: str
) -> None:
    release = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text(encoding="utf-8"))
    verdict = kstatus(control_plane, release)
    port = compute(release)
    assert (verdict["status"], verdict["message"]) == (str(port.status), port.message)


def test_kstatus_follows_a_release_from_in_progress_to_current_to_failed(
    story: Story, control_plane: ControlPlane
) -> None:
    story.apply(quickstart_release("1.0.0", postRelease={"bake": "3s"}))
    story.wait("baking", lambda s: s.get("phase") == "Baking")
    assert kstatus(control_plane, story.release())["status"] == "InProgress"
    story.wait_phase("Succeeded", revision=1)
    assert kstatus(control_plane, story.release()) == {"status": "Current", "message": "Resource is Ready"}

    story.apply(
        quickstart_release("1.1.0", strategy={"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}})
    )
    story.wait("the canary", lambda s: s.get("phase") == "Paused" and s.get("revision") == 2)
    assert kstatus(control_plane, story.release())["status"] == "InProgress"
    story.kubectl("annotate", "release", "shop", "shepherd.dev/abort=true")
    story.wait_phase("RolledBack", revision=2)
    verdict = kstatus(control_plane, story.release())
    assert verdict["status"] == "Failed" and "aborted by shepherd.dev/abort" in verdict["message"]
