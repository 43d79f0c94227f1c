"""The Argo CD health check of charts/shepherd/argocd/health.lua, run as Argo CD runs it.

Argo CD executes a health script in gopher-lua (Lua 5.1) with `obj` set to the live object as a Lua table,
only the base, table and package libraries opened (util/lua/lua.go, unless useOpenLibs is set), and reads
the table the script returns. The cases follow Argo CD's health_test.yaml: an input captured from the
operator's own runs (tests/fixtures/capture_release_status.py), the status and part of the message expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa.lua51 import LuaError, LuaRuntime

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "charts" / "shepherd" / "argocd" / "health.lua"
ARGOCD_CM = ROOT / "examples" / "gitops" / "argocd" / "argocd-cm.yaml"
FIXTURES = ROOT / "tests" / "fixtures" / "release_status"
HEALTH_KEY = "resource.customizations.health.shepherd.dev_Release"
# What Argo CD accepts from a script; anything else becomes Unknown "Lua returned an invalid health status".
ARGOCD_HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
# Everything Argo CD does not open for a health script. Without the string library strings have no methods.
CLOSE_LIBRARIES = """
getmetatable("").__index = nil
string, math, io, os, coroutine, debug = nil, nil, nil, nil, nil, nil
"""


@dataclass(frozen=True)
class Case:
    input: str  # a file of tests/fixtures/release_status, without .yaml
    status: str
    message: str  # a part of the message


TESTS = [
    Case("succeeded", "Healthy", "revision 1 (1.0.0) serves all traffic"),
    Case("progressing", "Progressing", "canary at 25%: pause 1h"),
    Case("paused-step", "Suspended", "until promoted: annotate shepherd.dev/promote=true"),
    Case("paused-by-spec", "Suspended", "paused by spec.paused"),
    Case("pending-paused", "Suspended", "waiting to start: spec.paused is true"),
    Case("baking", "Progressing", "baking for 1h"),
    Case("migrating", "Progressing", "migration 1/1 schema: job/shop-migrate-schema-r2 running"),
    Case("migration-failed", "Degraded", "MigrationFailed: revision 2 (1.1.0) failed: migration 1/1 schema"),
    Case("rolling-back", "Progressing", "aborted by shepherd.dev/abort: waiting for shop-api"),
    Case("rolled-back", "Degraded", "Aborted: revision 2 (1.1.0) rolled back: aborted by shepherd.dev/abort"),
    Case("failed", "Degraded", "ProgressDeadlineExceeded: revision 1 failed: not ready within"),
    Case("invalid-spec", "Degraded", "InvalidSpec: invalid spec: spec.components[0].dependsOn: dependsOn"),
    Case("unobserved-spec", "Progressing", "waiting for the operator to observe the new spec"),
    Case("no-status", "Progressing", "waiting for the operator to observe the new spec"),
]


def fixture(name: str) -> dict[str, Any]:
    release: dict[str, Any] = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text(encoding="utf-8"))
    return release


def argocd_health(release: dict[str, Any], script: str | None = None) -> dict[str, str]:
    """Run the health script on `release` in a Lua 5.1 as closed as Argo CD's."""
    lua = LuaRuntime(register_eval=False, register_builtins=False)
    lua.execute(CLOSE_LIBRARIES)
    lua.globals().obj = lua.table_from(release, recursive=True)
    returned = lua.execute(SCRIPT.read_text(encoding="utf-8") if script is None else script)
    return {"status": returned["status"], "message": returned["message"]}


@pytest.mark.parametrize("case", TESTS, ids=[case.input for case in TESTS])
def test_health_of_a_captured_release(case: Case) -> None:
    health = argocd_health(fixture(case.input))
    assert health["status"] == case.status, health["message"]
    assert case.message in health["message"]


def test_every_captured_release_is_in_the_table() -> None:
    captured = {path.stem for path in FIXTURES.glob("*.yaml")}
    assert captured == {case.input for case in TESTS}


def test_a_succeeded_phase_is_healthy_only_with_ready_true() -> None:
    release = fixture("succeeded")
    ready = next(c for c in release["status"]["conditions"] if c["type"] == "Ready")
    ready["status"] = "Unknown"
    assert argocd_health(release)["status"] == "Progressing"


def test_the_script_returns_only_statuses_argo_cd_accepts() -> None:
    assert {argocd_health(fixture(case.input))["status"] for case in TESTS} <= ARGOCD_HEALTH


def test_the_sandbox_is_as_closed_as_argo_cds() -> None:
    """Guards the harness: a script that leaned on the string library would pass here and fail in Argo CD."""
    with pytest.raises(LuaError, match="string"):
        argocd_health({}, script='return {status = string.upper("healthy")}')


def test_the_argocd_cm_example_carries_the_script_byte_for_byte() -> None:
    config_map = yaml.safe_load(ARGOCD_CM.read_text(encoding="utf-8"))
    assert config_map["data"][HEALTH_KEY] == SCRIPT.read_text(encoding="utf-8")
