"""`make floors` runs this in .venv-floors: is every direct dependency installed at the floor declared?

uv's lowest-direct resolution installs a later version where another package needs one (kubernetes 37.0
needs PyYAML 6.0.3): the tests there would then vouch for a floor that was never installed. Exits 1
naming each such floor.
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def declared(pyproject: Path) -> list[Requirement]:
    """The project's direct dependencies, its extras' included, without the project itself."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {}).values()
    listed = [*project["dependencies"], *(line for extra in extras for line in extra)]
    return [r for r in map(Requirement, listed) if r.name != project["name"]]


def floors_not_installed(requirements: list[Requirement]) -> list[str]:
    problems = []
    for requirement in requirements:
        for floor in (s.version for s in requirement.specifier if s.operator == ">="):
            installed = version(requirement.name)
            if Version(installed) != Version(floor):
                problems.append(f"{requirement.name}: floor {floor}, installed {installed}")
    return problems


if __name__ == "__main__":
    problems = floors_not_installed(declared(PYPROJECT))
    for problem in problems:
        print(f"pyproject.toml: {problem}: raise the floor to the version installed", file=sys.stderr)
    sys.exit(1 if problems else 0)
