"""Component ordering: dependsOn parsed and checked, components grouped into waves, Deployments per wave."""

from __future__ import annotations

from typing import Any

import pytest
from simulation import container, ordered_spec, release_spec

from shepherd.core.spec import SpecError, content_of, parse_spec, waves
from shepherd.core.status import Phase, Rollout
from shepherd.core.workloads import desired_deployments


def components(**depends_on: list[str]) -> list[dict[str, Any]]:
    """One component per keyword, in that order, each depending on the listed ones."""
    return [
        {"name": name, "template": container(f"shop/{name}:1"), "dependsOn": needs}
        for name, needs in depends_on.items()
    ]


def spec_of(**depends_on: list[str]) -> dict[str, Any]:
    return release_spec(components=components(**depends_on))


def test_without_dependencies_every_component_is_in_one_wave_in_spec_order() -> None:
    assert waves(parse_spec(release_spec())) == (("api", "web"),)


def test_waves_are_topological_levels_each_in_spec_order() -> None:
    spec = parse_spec(
        spec_of(web=["api", "auth"], worker=["db"], api=["db"], auth=[], db=[], admin=["web", "worker"])
    )
    assert waves(spec) == (("auth", "db"), ("worker", "api"), ("web",), ("admin",))


def test_a_revision_s_components_decide_the_waves() -> None:
    """A recorded revision may lack a component the spec depends on, or hold one the spec dropped."""
    spec = parse_spec(spec_of(web=["api"], api=["db"], db=[]))
    assert waves(spec, ["web", "api"]) == (("api",), ("web",))
    assert waves(spec, ["web", "legacy"]) == (("web", "legacy"),)


@pytest.mark.parametrize(
    ("depends_on", "field", "fragment"),
    [
        ({"api": ["api"], "web": []}, "spec.components[0].dependsOn[0]", "cannot depend on itself"),
        ({"api": [], "web": ["api", "api"]}, "spec.components[1].dependsOn[1]", "'api' is listed twice"),
        ({"api": [], "web": ["db"]}, "spec.components[1].dependsOn[0]", "unknown component 'db'"),
        ({"api": ["web"], "web": ["api"]}, "spec.components[0].dependsOn", "cycle api -> web -> api"),
        (
            {"db": [], "api": ["web"], "web": ["auth"], "auth": ["api", "db"]},
            "spec.components[1].dependsOn",
            "cycle api -> web -> auth -> api",
        ),
    ],
)
def test_bad_dependencies_name_the_field(depends_on: dict[str, list[str]], field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec_of(**depends_on))
    assert caught.value.field == field
    assert fragment in caught.value.message


def test_depends_on_must_be_a_list_of_names() -> None:
    bad = spec_of(api=[], web=[])
    bad["components"][1]["dependsOn"] = "api"
    with pytest.raises(SpecError, match=r"spec\.components\[1\]\.dependsOn: must be a list of strings"):
        parse_spec(bad)


def test_ordering_is_not_content_changing_it_is_no_new_revision() -> None:
    assert content_of(parse_spec(spec_of(api=[], web=["api"]))) == content_of(
        parse_spec(spec_of(api=[], web=[]))
    )


SPEC = parse_spec(ordered_spec("1.1.0"))
CURRENT = content_of(SPEC)
STABLE = content_of(parse_spec(ordered_spec("1.0.0")))


def running(
    phase: Phase, wave: int, weight: int = 50, stable_revision: int = 1
) -> dict[str, tuple[int, int]]:
    """Deployment name -> (revision, replicas) that a rollout state of revision 2 calls for."""
    rollout = Rollout(
        phase=phase,
        revision=2,
        stable_revision=stable_revision,
        stable_version="1.0.0",
        canary_weight=weight,
        wave=wave,
    )
    desired = desired_deployments(rollout, SPEC, CURRENT, STABLE if stable_revision else None)
    assert desired is not None
    return {d.name("shop"): (d.revision, d.replicas or 0) for d in desired}


def test_the_first_wave_s_canary_leaves_the_later_waves_alone() -> None:
    assert running(Phase.PROGRESSING, wave=0) == {
        "shop-backend-canary": (2, 2),
        "shop-backend": (1, 2),
        "shop-frontend": (1, 2),
    }


def test_a_later_wave_s_canary_runs_beside_the_promoted_earlier_waves() -> None:
    assert running(Phase.PROGRESSING, wave=1) == {
        "shop-backend": (2, 4),
        "shop-frontend-canary": (2, 1),
        "shop-frontend": (1, 1),
    }


def test_promotion_puts_every_wave_on_the_new_revision() -> None:
    assert running(Phase.PROMOTING, wave=1, weight=100) == {"shop-backend": (2, 4), "shop-frontend": (2, 2)}


def test_a_rollback_returns_the_later_wave_before_the_earlier_one() -> None:
    assert running(Phase.ROLLING_BACK, wave=1, weight=0) == {"shop-backend": (2, 4), "shop-frontend": (1, 2)}
    assert running(Phase.ROLLING_BACK, wave=0, weight=0) == {"shop-backend": (1, 4), "shop-frontend": (1, 2)}
    assert running(Phase.ROLLED_BACK, wave=0, weight=0) == {"shop-backend": (1, 4), "shop-frontend": (1, 2)}


def test_the_first_revision_is_deployed_wave_after_wave() -> None:
    assert running(Phase.PROGRESSING, wave=0, stable_revision=0) == {"shop-backend": (2, 4)}
    assert running(Phase.PROGRESSING, wave=1, stable_revision=0) == {
        "shop-backend": (2, 4),
        "shop-frontend": (2, 2),
    }
