"""Versioned config: hashed ConfigMaps, rewritten references, and their life across revisions."""

from __future__ import annotations

import base64
import copy
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simulation import ABORT, PROMOTE, RETRY, ROLLBACK, World, release_spec

from shepherd.core.actions import ApplyConfigMap, ApplyDeployment, DeleteConfigMap
from shepherd.core.config import (
    CONFIG_HASH_LABEL,
    CONFIG_NAME_ANNOTATION,
    referenced_config_maps,
    render_config_map,
    rendered,
    rewrite_template,
    unused_config_maps,
    with_config,
)
from shepherd.core.spec import (
    MAX_CONFIG_BYTES,
    ConfigEntry,
    RevisionContent,
    SpecError,
    content_of,
    parse_spec,
)
from shepherd.core.workloads import ReleaseRef, WorkloadPlan

REF = ReleaseRef("shop", "prod", "uid-1")


def entry(name: str = "shop-config", **data: str) -> ConfigEntry:
    return ConfigEntry(name, data or {"LOG_LEVEL": "info"}, {})


def config_spec(version: str = "1.0.0", log_level: str = "info", **overrides: Any) -> dict[str, Any]:
    """The simulation's Release with `shop-config`, read by the api through a volume and an env var."""
    spec = release_spec(version, **overrides)
    spec["config"] = [{"name": "shop-config", "data": {"LOG_LEVEL": log_level}}]
    api = spec["components"][0]["template"]["spec"]
    api["volumes"] = [{"name": "config", "configMap": {"name": "shop-config"}}]
    api["containers"][0]["env"] = [
        {"name": "LOG_LEVEL", "valueFrom": {"configMapKeyRef": {"name": "shop-config", "key": "LOG_LEVEL"}}}
    ]
    return spec


def hashed(log_level: str) -> str:
    return ConfigEntry("shop-config", {"LOG_LEVEL": log_level}, {}).hashed_name


def config_of(world: World, deployment: str) -> str:
    """The ConfigMap a Deployment's pods mount (and read LOG_LEVEL from)."""
    spec = world.deployments[deployment]["spec"]["template"]["spec"]
    mounted = spec["volumes"][0]["configMap"]["name"]
    assert spec["containers"][0]["env"][0]["valueFrom"]["configMapKeyRef"]["name"] == mounted
    return str(mounted)


# --- the hashed name ---------------------------------------------------------------------------


def test_the_hashed_name_is_the_name_and_ten_hex_of_the_content() -> None:
    name = entry().hashed_name
    assert name.startswith("shop-config-") and len(name) == len("shop-config-") + 10
    assert int(name.rsplit("-", 1)[1], 16) >= 0
    assert entry().hashed_name == name, "deterministic"
    assert entry(LOG_LEVEL="debug").hashed_name != name
    assert ConfigEntry("shop-config", {}, {"LOG_LEVEL": "aW5mbw=="}).hashed_name != name, "binary is not text"


def test_the_hash_ignores_key_order_and_base64_spelling() -> None:
    ordered = ConfigEntry("c", {"a": "1", "b": "2"}, {})
    assert ConfigEntry("c", {"b": "2", "a": "1"}, {}).hashed_name == ordered.hashed_name
    # "AB==" and "AA==" decode to the same byte: the parser re-encodes it canonically.
    spelled = [
        parse_spec(release_spec(config=[{"name": "c", "binaryData": {"k": value}}])).config[0]
        for value in ("AA==", "AB==")
    ]
    assert spelled[0] == spelled[1] and spelled[0].binary_data == {"k": "AA=="}


# --- revision content --------------------------------------------------------------------------


def test_content_without_config_keeps_the_record_and_hash_it_had_before_config_existed() -> None:
    content = content_of(parse_spec(release_spec()))
    assert "config" not in content.to_dict()
    legacy = {"version": content.version, "components": content.to_dict()["components"]}
    assert RevisionContent.from_dict(legacy) == content
    assert RevisionContent.from_dict(legacy).hash == content.hash


def test_config_is_revision_content_and_survives_its_record() -> None:
    base = content_of(parse_spec(config_spec()))
    assert content_of(parse_spec(config_spec(log_level="debug"))).hash != base.hash
    assert RevisionContent.from_dict(base.to_dict()) == base
    assert RevisionContent.from_dict(base.to_dict()).hash == base.hash
    reordered = config_spec()
    reordered["config"] = [{"name": "z", "data": {}}, *reordered["config"], {"name": "a"}]
    content = content_of(parse_spec(reordered))
    reordered["config"].reverse()
    assert content_of(parse_spec(reordered)).hash == content.hash, "the order of entries is not content"


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field", "fragment"),
    [
        ({"name": "Shop"}, "spec.config[0].name", "DNS subdomain"),
        ({"name": "c" * 243}, "spec.config[0].name", "at most 242"),
        ({"name": "c", "data": {"a/b": "x"}}, "spec.config[0].data[a/b]", "a key must be"),
        ({"name": "c", "data": {"..a": "x"}}, "spec.config[0].data[..a]", "a key must be"),
        ({"name": "c", "data": {"PORT": 8080}}, "spec.config[0].data[PORT]", "must be a string"),
        ({"name": "c", "binaryData": {"k": "no!"}}, "spec.config[0].binaryData[k]", "base64"),
        (
            {"name": "c", "data": {"k": "x"}, "binaryData": {"k": "AA=="}},
            "spec.config[0].binaryData[k]",
            "also in data",
        ),
        (
            {"name": "c", "data": {"big": "x" * MAX_CONFIG_BYTES}},
            "spec.config[0]",
            f"at most {MAX_CONFIG_BYTES}",
        ),
        ({"data": {}}, "spec.config[0].name", "DNS subdomain"),
    ],
)
def test_bad_config_is_named_by_field(config: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(release_spec(config=[config]))
    assert caught.value.field == field
    assert fragment in caught.value.message


def test_config_names_are_unique_and_a_list() -> None:
    with pytest.raises(SpecError, match=r"spec\.config\[1\]\.name: duplicate"):
        parse_spec(release_spec(config=[{"name": "c"}, {"name": "c"}]))
    with pytest.raises(SpecError, match=r"spec\.config: must be a list"):
        parse_spec(release_spec(config={"name": "c"}))


def test_binary_data_counts_its_decoded_size() -> None:
    just_fits = base64.b64encode(b"\0" * (MAX_CONFIG_BYTES - 1)).decode()
    assert parse_spec(release_spec(config=[{"name": "c", "binaryData": {"k": just_fits}}])).config


# --- rewriting references ----------------------------------------------------------------------


def every_reference(name: str) -> dict[str, Any]:
    """A pod template naming `name` in each way a pod can use a ConfigMap."""
    return {
        "metadata": {"labels": {"team": name}},
        "spec": {
            "volumes": [
                {"name": "plain", "configMap": {"name": name}},
                {"name": "all", "projected": {"sources": [{"configMap": {"name": name}}, {"secret": {}}]}},
                {"name": "scratch", "emptyDir": {}},
            ],
            "initContainers": [{"name": "init", "envFrom": [{"configMapRef": {"name": name}}]}],
            "containers": [
                {
                    "name": "app",
                    "envFrom": [{"configMapRef": {"name": name}}, {"secretRef": {"name": name}}],
                    "env": [
                        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": name, "key": "a"}}},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": name, "key": "b"}}},
                        {"name": "C", "value": name},
                    ],
                }
            ],
        },
    }


def test_every_kind_of_reference_is_rewritten_and_nothing_else() -> None:
    template = every_reference("shop-config")
    original = copy.deepcopy(template)

    rewritten = rewrite_template(template, {"shop-config": "shop-config-0123456789"})

    assert template == original, "the spec's template is left as it was"
    assert rewritten == copy.deepcopy(original) | {"spec": rewritten["spec"]}
    spec = rewritten["spec"]
    assert spec["volumes"][0]["configMap"]["name"] == "shop-config-0123456789"
    assert spec["volumes"][1]["projected"]["sources"][0]["configMap"]["name"] == "shop-config-0123456789"
    assert spec["initContainers"][0]["envFrom"][0]["configMapRef"]["name"] == "shop-config-0123456789"
    app = spec["containers"][0]
    assert app["envFrom"][0]["configMapRef"]["name"] == "shop-config-0123456789"
    assert app["env"][0]["valueFrom"]["configMapKeyRef"]["name"] == "shop-config-0123456789"
    # Secrets, plain values and labels that happen to carry the same name are not ConfigMap references.
    assert app["envFrom"][1]["secretRef"]["name"] == "shop-config"
    assert app["env"][1]["valueFrom"]["secretKeyRef"]["name"] == "shop-config"
    assert app["env"][2]["value"] == "shop-config"
    assert rewritten["metadata"]["labels"]["team"] == "shop-config"


def test_configmaps_not_in_spec_config_are_left_alone() -> None:
    template = every_reference("platform-ca")
    assert rewrite_template(template, {"shop-config": "shop-config-0123456789"}) == template
    assert referenced_config_maps(template) == {"platform-ca"}


def test_optional_references_do_not_keep_pods_from_starting() -> None:
    template = {
        "spec": {
            "volumes": [{"name": "a", "configMap": {"name": "needed"}}],
            "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "extra", "optional": True}}]}],
        }
    }
    assert referenced_config_maps(template) == {"needed", "extra"}
    assert referenced_config_maps(template, required_only=True) == {"needed"}


def test_rendered_content_names_its_own_hashed_configmaps() -> None:
    content = content_of(parse_spec(config_spec()))
    api = rendered(content).templates["api"]["spec"]
    assert api["volumes"][0]["configMap"]["name"] == hashed("info")
    assert (rendered(content).version, rendered(content).config) == (content.version, content.config)
    plain = content_of(parse_spec(release_spec()))
    assert rendered(plain) is plain


# --- the ConfigMap and its life ----------------------------------------------------------------


def test_the_configmap_is_immutable_owned_and_says_where_it_comes_from() -> None:
    config = ConfigEntry("shop-config", {"LOG_LEVEL": "info"}, {"logo.png": "iVBORw0KGgo="})
    manifest = render_config_map(REF, config)
    assert manifest["metadata"]["name"] == config.hashed_name
    assert manifest["immutable"] is True
    assert manifest["data"] == {"LOG_LEVEL": "info"}
    assert manifest["binaryData"] == {"logo.png": "iVBORw0KGgo="}
    assert manifest["metadata"]["labels"] == {
        "app.kubernetes.io/instance": "shop",
        "app.kubernetes.io/managed-by": "shepherd",
        CONFIG_HASH_LABEL: config.content_hash,
    }
    assert manifest["metadata"]["annotations"] == {CONFIG_NAME_ANNOTATION: "shop-config"}
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_missing_configmaps_are_created_before_anything_else() -> None:
    deployment = ApplyDeployment({"metadata": {"name": "shop-api"}}, exists=False)
    plan = WorkloadPlan((deployment,), False, None, ("shop-api to be created",))
    info, debug = entry(), entry(LOG_LEVEL="debug")
    old = RevisionContent("1", {}, (info,))
    new = RevisionContent("2", {}, (debug, ConfigEntry("other", {}, {})))

    planned = with_config(plan, REF, [old, new, old], live={info.hashed_name})

    names = [a.name for a in planned.actions]
    assert names == [debug.hashed_name, ConfigEntry("other", {}, {}).hashed_name, "shop-api"]
    assert isinstance(planned.actions[0], ApplyConfigMap)
    assert with_config(plan, REF, [old], live={info.hashed_name}) is plan


def test_a_converged_plan_is_not_converged_while_a_configmap_is_missing() -> None:
    content = RevisionContent("1", {}, (entry(),))
    planned = with_config(WorkloadPlan((), True, None, ()), REF, [content], live=set())
    assert not planned.converged
    assert planned.waiting_on == (f"ConfigMap {entry().hashed_name} to be created",)


def test_garbage_is_what_no_retained_revision_and_no_live_deployment_names() -> None:
    kept, gone, running = entry(LOG_LEVEL="a"), entry(LOG_LEVEL="b"), entry(LOG_LEVEL="c")
    owned = {
        e.hashed_name: {"metadata": render_config_map(REF, e)["metadata"]} for e in (kept, gone, running)
    }
    owned["someone-elses"] = {"metadata": {"labels": {"app.kubernetes.io/instance": "shop"}}}
    live = {"shop-api": {"spec": {"template": every_reference(running.hashed_name)}}}

    deletes = unused_config_maps([RevisionContent("1", {}, (kept,))], owned, live)

    assert deletes == [DeleteConfigMap(gone.hashed_name)]


# --- through the phase machine -----------------------------------------------------------------


def promoted(world: World) -> None:
    world.annotations[PROMOTE] = "full"
    world.run_until("Succeeded")


def test_first_revision_creates_its_configmap_before_the_deployment_that_reads_it() -> None:
    world = World(config_spec())
    decision = world.reconcile()
    names = [getattr(a, "name", None) for a in decision.actions]
    assert names.index(hashed("info")) < names.index("shop-api")
    world.run_until("Succeeded")
    assert config_of(world, "shop-api") == hashed("info")
    assert world.config_maps[hashed("info")]["immutable"] is True
    assert world.config_maps[hashed("info")]["data"] == {"LOG_LEVEL": "info"}


def test_a_config_only_change_is_a_new_revision_with_a_canary() -> None:
    world = World(config_spec())
    world.run_until("Succeeded")

    world.set_spec(config_spec(log_level="debug"))
    world.settle()

    assert world.status["revision"] == 2 and world.phase == "Progressing"
    assert world.replicas("shop-api-canary") == 1
    assert config_of(world, "shop-api-canary") == hashed("debug")
    assert config_of(world, "shop-api") == hashed("info"), "stable keeps reading the old config"
    assert world.image("shop-api-canary") == world.image("shop-api") == "shop/api:1.0.0"
    assert {hashed("info"), hashed("debug")} <= set(world.config_maps)
    assert world.revisions[2].config[0].data == {"LOG_LEVEL": "debug"}

    promoted(world)
    assert config_of(world, "shop-api") == hashed("debug")
    assert hashed("info") in world.config_maps, "kept while revision 1 is in the history"


def test_rollback_after_promotion_restores_the_old_image_and_the_old_config() -> None:
    world = World(config_spec())
    world.run_until("Succeeded")
    world.set_spec(config_spec("1.1.0", log_level="debug"))
    world.annotations[PROMOTE] = "full"
    world.run_until("Baking")
    assert world.image("shop-api") == "shop/api:1.1.0" and config_of(world, "shop-api") == hashed("debug")

    world.annotations[ABORT] = "true"
    world.run_until("RolledBack")

    assert world.image("shop-api") == "shop/api:1.0.0"
    assert config_of(world, "shop-api") == hashed("info")
    assert world.ready_replicas("shop-api") == 4


def test_rollback_to_a_revision_number_brings_its_config_back_with_its_code() -> None:
    world = World(config_spec())
    world.run_until("Succeeded")
    for version, log_level in (("1.1.0", "debug"), ("1.2.0", "warn")):
        world.set_spec(config_spec(version, log_level=log_level))
        promoted(world)
    assert config_of(world, "shop-api") == hashed("warn")

    world.annotations[ROLLBACK] = "1"
    world.settle()
    assert world.status["revision"] == 4
    assert config_of(world, "shop-api-canary") == hashed("info"), "the canary reads revision 1's config"
    assert config_of(world, "shop-api") == hashed("warn")
    promoted(world)

    assert world.image("shop-api") == "shop/api:1.0.0"
    assert config_of(world, "shop-api") == hashed("info")
    assert world.config_maps[hashed("info")]["data"] == {"LOG_LEVEL": "info"}


def test_a_failure_after_promotion_rolls_config_back_with_the_code() -> None:
    world = World(config_spec(progressDeadline="2m"))
    world.run_until("Succeeded")
    world.set_spec(config_spec(log_level="debug", progressDeadline="2m"))
    world.annotations[PROMOTE] = "full"
    world.run_until("Baking")
    assert config_of(world, "shop-api") == hashed("debug")
    world.crashing.add("shop-api")  # the promoted pods start crash-looping during the bake
    world.run_until("RollingBack", step=timedelta(seconds=30))
    world.crashing.clear()
    world.run_until("RolledBack")
    assert config_of(world, "shop-api") == hashed("info")
    assert world.status["history"][-1]["reason"] == "ProgressDeadlineExceeded"


def test_trimmed_history_takes_its_configmaps_and_records_with_it() -> None:
    limit = {"rollback": {"revisionHistoryLimit": 2}}
    world = World(config_spec(log_level="l0", **limit))
    world.run_until("Succeeded")
    for level in ("l1", "l2", "l3"):
        world.set_spec(config_spec(log_level=level, **limit))
        promoted(world)

    assert sorted(world.revisions) == [3, 4]
    assert set(world.config_maps) == {hashed("l2"), hashed("l3")}


def test_configmaps_shared_by_revisions_stay_while_any_of_them_is_kept() -> None:
    limit = {"rollback": {"revisionHistoryLimit": 1}}
    world = World(config_spec("1.0.0", **limit))
    world.run_until("Succeeded")
    world.set_spec(config_spec("1.1.0", **limit))  # the same config, another version
    promoted(world)
    assert sorted(world.revisions) == [2]
    assert set(world.config_maps) == {hashed("info")}
    assert config_of(world, "shop-api") == hashed("info")


def test_config_dropped_from_the_spec_goes_with_the_last_revision_that_had_it() -> None:
    limit = {"rollback": {"revisionHistoryLimit": 2}}
    world = World(config_spec(**limit))
    world.run_until("Succeeded")
    for version in ("1.1.0", "1.2.0"):
        world.set_spec(release_spec(version, **limit))
        promoted(world)
        if version == "1.1.0":
            assert hashed("info") in world.config_maps, "revision 1 can still be rolled back to"
    assert world.config_maps == {}


def test_a_deleted_configmap_in_use_is_created_again() -> None:
    world = World(config_spec())
    world.run_until("Succeeded")
    del world.config_maps[hashed("info")]
    world.settle()
    assert hashed("info") in world.config_maps
    assert world.phase == "Succeeded"


def test_a_reference_to_a_configmap_nobody_created_keeps_pods_unready() -> None:
    spec = release_spec(progressDeadline="2m")
    spec["components"][0]["template"]["spec"]["volumes"] = [{"name": "c", "configMap": {"name": "missing"}}]
    world = World(spec)
    world.run_until("Failed")
    assert "shop-api" in world.status["message"]
    world.config_maps["missing"] = {"metadata": {"name": "missing"}}
    assert not unused_config_maps([], world.config_maps, {}), "not the operator's to delete"


changes = st.one_of(
    st.tuples(st.just("wait"), st.integers(min_value=1, max_value=600)),
    st.tuples(st.just("config"), st.sampled_from(["info", "debug", "warn"])),
    st.tuples(st.just("version"), st.sampled_from(["1.0.0", "1.1.0"])),
    st.tuples(st.just("crash"), st.sampled_from(["shop-api-canary", "shop-api"])),
    st.tuples(st.just("heal"), st.just("")),
    st.tuples(st.just("annotate"), st.sampled_from([PROMOTE, ABORT, RETRY])),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(changes, min_size=1, max_size=20))
def test_every_named_configmap_exists_and_only_kept_revisions_keep_theirs(sequence: list) -> None:
    limit = {"rollback": {"revisionHistoryLimit": 2}, "progressDeadline": "2m"}
    world = World(config_spec(**limit))
    world.run_until("Succeeded")
    for kind, value in sequence:
        if kind == "wait":
            world.now += timedelta(seconds=int(value))
        elif kind == "config":
            world.set_spec(config_spec(world.spec["version"], log_level=str(value), **limit))
        elif kind == "version":
            level = world.spec["config"][0]["data"]["LOG_LEVEL"]
            world.set_spec(config_spec(str(value), log_level=level, **limit))
        elif kind == "crash":
            world.crashing.add(str(value))
        elif kind == "heal":
            world.crashing.clear()
        else:
            world.annotations[str(value)] = "true"
        for _ in range(3):
            named_before = named_by_deployments(world)
            world.reconcile()
            named = named_by_deployments(world)
            assert named <= set(world.config_maps), "a Deployment names a ConfigMap that is not there"
            recorded = {e.hashed_name for content in world.revisions.values() for e in content.config}
            current = {e.hashed_name for e in content_of(parse_spec(world.spec)).config}
            # What the decision saw named is deleted by the next one: no revision kept, nothing named, gone.
            kept = recorded | current | named | named_before
            assert set(world.config_maps) <= kept, "garbage left behind"


def named_by_deployments(world: World) -> set[str]:
    return {n for d in world.deployments.values() for n in referenced_config_maps(d["spec"]["template"])}
