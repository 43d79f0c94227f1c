"""Story: the package as the image installs it. `make wheel-env` builds the wheel and installs it without
extras into .venv-wheel; from there, every module the operator ships imports, the commands answer, the
demo names the extra it needs, and `shepherd run` with the chart's arguments and ServiceAccount rolls a
Release out on the real API server.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shepherd.lab.cluster import InstalledChart, OperatorProcess
from shepherd.lab.controlplane import ControlPlane
from shepherd.lab.podsim import PodSimulator
from story import REPO, Story, quickstart_release

WHEEL_ENV = REPO / ".venv-wheel"

# Every module of the installed package but the lab's (the demo's and the tests'), imported one by one.
IMPORT_EVERY_MODULE = """
import importlib, importlib.util, pathlib, shepherd
root = pathlib.Path(shepherd.__file__).parent
names = sorted(
    ".".join(("shepherd", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
    for path in root.rglob("*.py")
    if path.relative_to(root).parts[0] != "lab"
)
for name in names:
    importlib.import_module(name)
print(root)
print(" ".join(names))
print("kmock" if importlib.util.find_spec("kmock") else "no kmock")
"""


@pytest.fixture(scope="module")
def shipped() -> Path:
    """The bin folder of .venv-wheel, where the wheel is installed without extras."""
    if not (WHEEL_ENV / ".installed").exists():
        pytest.fail(f"{WHEEL_ENV} is missing: `make wheel-env` installs the wheel there", pytrace=False)
    return WHEEL_ENV / "bin"


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Outside the checkout, so that nothing of it can be imported instead of the installed package."""
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture
def operator(
    control_plane: ControlPlane, chart: InstalledChart, pods: PodSimulator, shipped: Path, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The installed `shepherd run` with the chart's arguments and its ServiceAccount's token."""
    executable = shipped / "shepherd"
    with OperatorProcess(
        control_plane, chart, tmp_path, identity="shepherd-wheel", executable=executable
    ) as process:
        yield process


def test_every_module_of_the_operator_imports_without_extras(shipped: Path, tmp_path: Path) -> None:
    done = run([str(shipped / "python"), "-c", IMPORT_EVERY_MODULE], tmp_path)

    assert done.returncode == 0, done.stderr
    root, names, kmock = done.stdout.splitlines()
    assert Path(root).is_relative_to(WHEEL_ENV), "the wheel's copy, not the checkout's"
    assert {"shepherd.cli", "shepherd.plugin", "shepherd.runner", "shepherd.metrics"} <= set(names.split())
    assert "shepherd.core.machine" in names.split()
    assert kmock == "no kmock", "installed without extras"


@pytest.mark.parametrize("command", [["shepherd", "run", "--help"], ["kubectl-release", "--help"]])
def test_the_commands_answer(shipped: Path, tmp_path: Path, command: list[str]) -> None:
    done = run([str(shipped / command[0]), *command[1:]], tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: {' '.join(command[:-1])}")


def test_the_demo_names_the_extra_it_needs(shipped: Path, tmp_path: Path) -> None:
    done = run([str(shipped / "shepherd"), "demo"], tmp_path)

    assert done.returncode == 1
    assert "pip install 'release-shepherd[demo]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_installed_operator_rolls_a_release_to_succeeded(story: Story, shipped: Path) -> None:
    assert story.operator.popen is not None and story.operator.popen.args[0] == str(shipped / "shepherd")

    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    story.wait_event("Succeeded")

    assert set(story.images().values()) == {
        "ghcr.io/example/shop-api:1.0.0",
        "ghcr.io/example/shop-web:1.0.0",
    }
    assert "--leader-elect" in story.operator.args
