"""The Release, ReleaseApproval and ReleasePolicy CRDs and their offline validator: good examples pass, each
bad object fails on its own rule."""

from __future__ import annotations

import copy
import zoneinfo
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy.adapter import json_to_cel

from bad_releases import (
    BAD_RELEASES,
    COMPARE,
    DEPENDENCY,
    METRIC,
    STEPS,
    WINDOW,
    BadRelease,
    Mutation,
    appending,
    applying,
    quickstart_release,
    removing,
    setting,
    with_analysis,
    with_config,
    with_gates,
    with_migrations,
    with_notifications,
)
from shepherd.core.spec import NOTIFICATION_EVENTS
from shepherd.core.status import Phase
from shepherd.crdschema import RULES_NOT_CHECKED, Violation, apply_defaults, load_crd, validate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# Every CRD in crds/: the checks of the CRD itself run for each one.
CRDS = sorted(path.stem for path in (ROOT / "crds").glob("*.yaml"))


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return load_crd("release")


def example_objects(kind: str) -> list[Any]:
    return [
        pytest.param(doc, id=f"{path.relative_to(EXAMPLES)}[{index}]")
        for path in sorted(EXAMPLES.rglob("*.yaml"))
        for index, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        if doc and doc.get("kind") == kind
    ]


def example_releases() -> list[Any]:
    return example_objects("Release")


@pytest.mark.parametrize("release", example_releases())
def test_every_example_release_is_valid(crd: dict[str, Any], release: dict[str, Any]) -> None:
    assert validate(crd, release) == []


def test_the_examples_contain_releases() -> None:
    assert len(example_releases()) >= 2


@pytest.mark.parametrize("case", BAD_RELEASES, ids=[case.id for case in BAD_RELEASES])
def test_a_bad_release_is_rejected_at_the_offending_field(crd: dict[str, Any], case: BadRelease) -> None:
    release = quickstart_release()
    case.mutate(release)

    violations = validate(crd, release)

    matching = [v for v in violations if v.field == case.field and case.message in v.message]
    assert matching, f"no violation at {case.field} mentioning {case.message!r} in {violations}"


def test_the_corpus_has_at_least_one_bad_release_per_rule() -> None:
    assert len(BAD_RELEASES) >= 20
    assert len({case.id for case in BAD_RELEASES}) == len(BAD_RELEASES)


def test_cel_rules_are_skipped_after_a_type_error(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    setting("spec.components[0].replicas", "four")(release)
    setting(f"{STEPS}[2].setWeight", 10)(release)  # decreasing weights, which only a CEL rule reports

    assert validate(crd, release) == [
        Violation(
            "spec.components[0].replicas",
            'Invalid value: "string": spec.components[0].replicas in body must be of type integer: "string"',
        ),
        RULES_NOT_CHECKED,
    ]
    assert str(RULES_NOT_CHECKED).startswith(
        "<nil>: Invalid value: null: some validation rules were not checked"
    )


def test_a_violation_reads_like_kubectl(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    setting(f"{STEPS}[4].setWeight", 101)(release)

    assert [str(v) for v in validate(crd, release)] == [
        f"{STEPS}[4].setWeight: Invalid value: 101: "
        f"{STEPS}[4].setWeight in body should be less than or equal to 100"
    ]


def test_a_null_field_is_pruned_before_validation_as_the_api_server_does(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    setting(f"{STEPS}[1].pause", None)(release)

    assert validate(crd, release) == [
        Violation(
            f"{STEPS}[1]",
            "Invalid value: each canary step must set exactly one of setWeight, pause, analysis, "
            "setCanaryScale or setHeaderRoute",
        )
    ]


def test_a_repeated_list_map_key_is_a_duplicate_value_before_the_cel_rule(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    setting("spec.components[1].name", "api")(release)

    assert validate(crd, release) == [
        Violation("spec.components[1]", 'Duplicate value: {"name":"api"}'),
        Violation(
            "spec.components", "Invalid value: spec.components names must be unique within the Release"
        ),
    ]


def test_unknown_fields_are_reported_alone_and_sorted_as_strict_decoding_does(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    setting("spec.version", "not a version")(release)
    setting(f"{STEPS}[0].setweight", 30)(release)
    setting("spec.replicas", 3)(release)
    setting("spec.components[0].name", {"first": "api"})(release)  # keys where the schema has a string

    assert [v.field for v in validate(crd, release)] == [
        "spec.components[0].name.first",
        "spec.replicas",
        f"{STEPS}[0].setweight",
    ]
    assert validate(crd, release)[1] == Violation("spec.replicas", 'unknown field "spec.replicas"')


def test_only_the_first_failing_string_bound_is_reported(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    setting("spec.version", "not a version " * 5)(release)  # too long and off the pattern

    assert validate(crd, release) == [
        Violation("spec.version", "Too long: may not be more than 63 bytes"),
        RULES_NOT_CHECKED,
    ]


def test_a_fraction_where_an_integer_belongs_is_also_out_of_range(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    setting("spec.components[0].replicas", 2.5)(release)

    assert [str(v) for v in validate(crd, release)] == [
        'spec.components[0].replicas: Invalid value: "number": '
        'spec.components[0].replicas in body must be of type integer: "number"',
        '<nil>: Invalid value: "": Checked value must be of type integer (default format) in '
        "spec.components[0].replicas",
        str(RULES_NOT_CHECKED),
    ]


def test_an_api_version_of_another_group_does_not_match(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    setting("apiVersion", "argoproj.io/v1alpha1")(release)

    assert validate(crd, release) == [
        Violation(
            "apiVersion",
            "the API version in the data (argoproj.io/v1alpha1) does not match the expected API version "
            "(shepherd.dev/v1alpha1)",
        )
    ]


def test_defaults_are_filled_in_as_the_api_server_stores_them(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    removing("spec.components[0].replicas")(release)

    stored = apply_defaults(crd, release)

    assert stored["spec"]["paused"] is False
    assert stored["spec"]["progressDeadline"] == "1m"
    assert stored["spec"]["components"][0]["replicas"] == 1
    assert stored["spec"]["rollback"] == {"automatic": True, "revisionHistoryLimit": 10}
    assert "replicas" not in release["spec"]["components"][0], "the input is left unchanged"


def test_analysis_steps_and_bake_metrics_naming_defined_metrics_are_valid(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    with_analysis(
        setting(f"{STEPS}[1]", {"analysis": {}}),
        setting(f"{STEPS}[3]", {"analysis": {"metrics": ["latency"]}}),
        setting("spec.postRelease.metrics", ["error-rate"]),
        setting(f"{METRIC}.min", 0),  # a whole number beside a fractional max: both are numbers
        setting(
            COMPARE, {"baseline": "stable", "test": "mann-whitney", "alpha": 0.01, "direction": "decrease"}
        ),
    )(release)

    assert validate(crd, release) == []


def test_an_unknown_metric_without_spec_analysis_is_reported_once(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    setting(f"{STEPS}[1]", {"analysis": {"metrics": ["latency"]}})(release)

    assert [v.field for v in validate(crd, release)] == [STEPS]


def test_analysis_defaults_are_filled_in_but_alpha_and_direction_are_left_to_the_test(
    crd: dict[str, Any],
) -> None:
    release = quickstart_release()
    with_analysis()(release)

    analysis = apply_defaults(crd, release)["spec"]["analysis"]

    assert analysis["interval"] == "30s"
    assert analysis["prometheus"] == {
        "address": "http://prometheus.monitoring:9090",
        "insecureSkipVerify": False,
        "timeout": "10s",
    }
    error_rate, latency = analysis["metrics"]
    assert {key: error_rate[key] for key in error_rate if key not in ("name", "query", "max")} == {
        "count": 1,
        "failureLimit": 0,
        "inconclusiveLimit": 0,
        "consecutiveErrorLimit": 4,
        "dryRun": False,
    }
    assert "interval" not in error_rate, "a metric's interval only overrides spec.analysis.interval"
    # Schema defaults would put alpha and direction in every compare and break "only with test": the
    # operator applies 0.05 and increase itself.
    assert latency["compare"] == {"baseline": "stable", "maxIncrease": "10%"}


def test_the_quickstart_services_split_traffic_by_replica_ratio() -> None:
    docs = list(yaml.safe_load_all((EXAMPLES / "quickstart.yaml").read_text(encoding="utf-8")))
    release = next(doc for doc in docs if doc["kind"] == "Release")
    selectors = [doc["spec"]["selector"] for doc in docs if doc["kind"] == "Service"]

    assert selectors == [
        {"app.kubernetes.io/name": c["name"], "app.kubernetes.io/instance": release["metadata"]["name"]}
        for c in release["spec"]["components"]
    ]


def test_gates_of_every_kind_are_valid(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    with_gates(
        # Crosses midnight: from Friday 22:00 to Saturday 02:00.
        setting(WINDOW, {"days": ["Fri"], "start": "22:00", "end": "02:00", "timeZone": "UTC"}),
        # A namesake in another namespace is another Release.
        setting(DEPENDENCY, {"name": "shop", "namespace": "staging"}),
        appending("spec.gates", {"name": "sign-off", "approval": {"count": 10}}),
    )(release)

    assert validate(crd, release) == []


def test_sign_off_by_role_with_a_description_and_owner_is_valid_and_a_role_counts_one_by_default(
    crd: dict[str, Any], policy_crd: dict[str, Any]
) -> None:
    gate = {
        "name": "sign-off",
        "description": "QA and SRE have signed off",
        "owner": "team-shop",
        "approval": {"from": [{"group": "qa"}, {"group": "sre", "count": 2}]},
    }
    release = quickstart_release()
    setting("spec.gates", [gate])(release)

    assert validate(crd, release) == []
    stored = apply_defaults(crd, release)["spec"]["gates"][0]["approval"]["from"]
    assert stored == [{"group": "qa", "count": 1}, {"group": "sre", "count": 2}]
    policy = {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": "prod-rules"},
        "spec": {"gates": [gate]},
    }
    assert validate(policy_crd, policy) == []
    policy["spec"]["gates"][0]["approval"] = {"from": [{"group": "qa", "count": 0}]}
    assert [v.field for v in validate(policy_crd, policy)] == ["spec.gates[0].approval.from[0].count"]


def test_config_with_data_and_binary_data_is_valid(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    with_config()(release)
    assert validate(crd, release) == []


def test_migrations_with_and_without_down_migrations_are_valid(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    with_migrations()(release)

    assert validate(crd, release) == []


def test_an_empty_gate_list_is_valid(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    setting("spec.gates", [])(release)

    assert validate(crd, release) == []


def test_notifications_default_to_json_and_every_event_is_valid(crd: dict[str, Any]) -> None:
    release = quickstart_release()
    events = ["Pending", "Gating", "Progressing", "Paused", "Promoting", "Baking", "Succeeded"]
    events += [
        "RollingBack",
        "RolledBack",
        "Failed",
        "NewRevision",
        "AnalysisFailed",
        "GateFailed",
        "InvalidSpec",
    ]
    with_notifications(setting("spec.notifications[1].events", events))(release)

    assert validate(crd, release) == []
    stored = apply_defaults(crd, release)["spec"]["notifications"]
    assert [n["webhook"]["format"] for n in stored] == ["slack", "json"]


def test_a_window_names_a_time_zone_the_operator_can_load(crd: dict[str, Any]) -> None:
    window = openapi_schema(crd)["properties"]["spec"]["properties"]["gates"]["items"]["properties"]["window"]
    zones = window["properties"]["timeZone"]["enum"]

    assert zones == sorted(set(zones))
    assert {"Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC"} <= set(zones)
    assert "localtime" not in zones, "the host's own zone, not an IANA name"
    for zone in zones:
        zoneinfo.ZoneInfo(zone)


# The CRD itself


def openapi_schema(crd: Mapping[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def schema_nodes(node: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from schema_nodes(child, f"{path}.{name}" if path else name)
    if "items" in node:
        yield from schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from schema_nodes(node["additionalProperties"], f"{path}[*]")


@pytest.mark.parametrize("kind", CRDS)
def test_the_package_ships_the_top_level_crds(kind: str) -> None:
    assert load_crd(kind) == yaml.safe_load((ROOT / "crds" / f"{kind}.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("kind", CRDS)
def test_every_property_has_a_description(kind: str) -> None:
    schema = openapi_schema(load_crd(kind))
    undocumented = [
        path
        for path, node in schema_nodes(schema)
        # The API server forbids anything but name and generateName on the root metadata, a description
        # included; kubectl explain documents it as ObjectMeta.
        if path != "metadata" and "description" not in node and not path.endswith(("[]", "[*]"))
    ]
    assert undocumented == []


# How many rules each CRD has: a rule added or lost shows up here.
RULE_COUNTS = {"release": 37, "releaseapproval": 1, "releasepolicy": 16}


def test_every_crd_is_checked() -> None:
    assert {"release", "releaseapproval", "releasepolicy"} <= set(CRDS)
    assert set(RULE_COUNTS) == set(CRDS)


@pytest.mark.parametrize("kind", CRDS)
def test_every_cel_rule_compiles_and_explains_itself(kind: str) -> None:
    environment = celpy.Environment()
    rules = [
        rule
        for _, node in schema_nodes(openapi_schema(load_crd(kind)))
        for rule in node.get("x-kubernetes-validations", [])
    ]

    assert len(rules) == RULE_COUNTS[kind]
    for rule in rules:
        environment.compile(rule["rule"])
        assert rule["message"], rule
        assert "\n" not in rule["message"], "the API server rejects messages with line breaks"


@pytest.mark.parametrize("kind", CRDS)
def test_every_node_has_a_type_as_a_structural_schema_must(kind: str) -> None:
    assert [path for path, node in schema_nodes(openapi_schema(load_crd(kind))) if "type" not in node] == []


@pytest.mark.parametrize("kind", CRDS)
def test_every_list_a_cel_rule_iterates_is_bounded(kind: str) -> None:
    # The API server rejects a CRD whose rules' estimated cost is unbounded.
    for path, node in schema_nodes(openapi_schema(load_crd(kind))):
        items = node.get("items", {})
        if "x-kubernetes-validations" in node or "x-kubernetes-validations" in items:
            assert node.get("type") != "array" or "maxItems" in node, path


@pytest.mark.parametrize("kind", ["release", "releasepolicy"])
def test_the_schema_knows_every_phase_and_notification_event_of_the_operator(kind: str) -> None:
    spec = openapi_schema(load_crd(kind))["properties"]["spec"]["properties"]
    events = spec["notifications"]["items"]["properties"]["events"]
    assert events["items"]["enum"] == list(NOTIFICATION_EVENTS)
    assert events["maxItems"] == len(NOTIFICATION_EVENTS)
    if kind == "release":
        status = openapi_schema(load_crd(kind))["properties"]["status"]["properties"]
        assert status["phase"]["enum"] == [phase.value for phase in Phase]


def test_printer_columns(crd: dict[str, Any]) -> None:
    (version,) = crd["spec"]["versions"]
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]}

    assert columns == {
        "Version": ("string", ".spec.version"),
        "Phase": ("string", ".status.phase"),
        "Weight": ("integer", ".status.canaryWeight"),
        "Step": ("integer", ".status.currentStep"),
        "Ready": ("string", '.status.conditions[?(@.type=="Ready")].status'),
        "Age": ("date", ".metadata.creationTimestamp"),
    }
    assert list(columns) == ["Version", "Phase", "Weight", "Step", "Ready", "Age"]


def test_names(crd: dict[str, Any]) -> None:
    (version,) = crd["spec"]["versions"]
    assert crd["metadata"]["name"] == "releases.shepherd.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == ["rel"]
    assert crd["spec"]["names"]["categories"] == ["shepherd"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


# The ReleaseApproval CRD


@pytest.fixture(scope="module")
def approval_crd() -> dict[str, Any]:
    return load_crd("releaseapproval")


def approval() -> dict[str, Any]:
    return {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "ReleaseApproval",
        "metadata": {"name": "shop-3-alice"},
        "spec": {"release": "shop", "revision": 3, "approver": "alice@example.com", "comment": "looks good"},
    }


def test_an_approval_is_valid(approval_crd: dict[str, Any]) -> None:
    assert validate(approval_crd, approval()) == []


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        pytest.param(removing("spec.approver"), "spec.approver", "Required value", id="missing-approver"),
        pytest.param(
            setting("spec.approver", ""),
            "spec.approver",
            "should be at least 1 chars long",
            id="empty-approver",
        ),
        pytest.param(
            setting("spec.revision", 0), "spec.revision", "greater than or equal to 1", id="revision-0"
        ),
        pytest.param(removing("spec.revision"), "spec.revision", "Required value", id="missing-revision"),
        pytest.param(
            setting("spec.revision", "3"), "spec.revision", "must be of type integer", id="revision-a-string"
        ),
        pytest.param(removing("spec.release"), "spec.release", "Required value", id="missing-release"),
        pytest.param(
            setting("spec.release", "shop/prod"), "spec.release", "should match", id="release-not-a-name"
        ),
        pytest.param(
            setting("spec.comment", "x" * 1025),
            "spec.comment",
            "Too long: may not be more than 1024 bytes",
            id="long-comment",
        ),
        pytest.param(
            setting("spec.approvers", ["bob"]), "spec.approvers", "unknown field", id="unknown-field"
        ),
        pytest.param(removing("spec"), "spec", "Required value", id="missing-spec"),
    ],
)
def test_a_bad_approval_is_rejected_at_the_offending_field(
    approval_crd: dict[str, Any], mutate: Mutation, field: str, message: str
) -> None:
    bad = approval()
    mutate(bad)

    violations = validate(approval_crd, bad)

    assert [v for v in violations if v.field == field and message in v.message], violations


def test_an_approval_is_immutable(approval_crd: dict[str, Any]) -> None:
    (rule,) = openapi_schema(approval_crd)["properties"]["spec"]["x-kubernetes-validations"]
    environment = celpy.Environment()
    program = environment.program(environment.compile(rule["rule"]))
    old = approval()["spec"]

    def allowed(new: dict[str, Any]) -> bool:
        return bool(program.evaluate({"self": json_to_cel(new), "oldSelf": json_to_cel(old)}))

    assert allowed(copy.deepcopy(old))
    assert not allowed({**old, "approver": "mallory@example.com"})
    assert not allowed({**old, "revision": 4})
    assert not allowed({key: value for key, value in old.items() if key != "comment"})
    assert rule["message"] == "an approval cannot be changed; delete it and create a new one"


def test_approval_names_and_printer_columns(approval_crd: dict[str, Any]) -> None:
    (version,) = approval_crd["spec"]["versions"]
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]}

    assert approval_crd["metadata"]["name"] == "releaseapprovals.shepherd.dev"
    assert approval_crd["spec"]["scope"] == "Namespaced"
    assert approval_crd["spec"]["names"] == {
        "kind": "ReleaseApproval",
        "listKind": "ReleaseApprovalList",
        "plural": "releaseapprovals",
        "singular": "releaseapproval",
        "shortNames": ["rap"],
        "categories": ["shepherd"],
    }
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert columns == {
        "Release": ("string", ".spec.release"),
        "Revision": ("integer", ".spec.revision"),
        "Approver": ("string", ".spec.approver"),
        "Group": ("string", ".spec.group"),
        "Age": ("date", ".metadata.creationTimestamp"),
    }
    assert list(columns) == ["Release", "Revision", "Approver", "Group", "Age"]


# The ReleasePolicy CRD


@pytest.fixture(scope="module")
def policy_crd() -> dict[str, Any]:
    return load_crd("releasepolicy")


def example_policy() -> dict[str, Any]:
    docs = yaml.safe_load_all((EXAMPLES / "policy.yaml").read_text(encoding="utf-8"))
    policy: dict[str, Any] = next(doc for doc in docs if doc["kind"] == "ReleasePolicy")
    return policy


@pytest.mark.parametrize("policy", example_objects("ReleasePolicy"))
def test_every_example_policy_is_valid(policy_crd: dict[str, Any], policy: dict[str, Any]) -> None:
    assert validate(policy_crd, policy) == []


def test_the_examples_contain_a_policy() -> None:
    assert len(example_objects("ReleasePolicy")) >= 1


FREEZE = "spec.freezes[0]"
EXPRESSION = "spec.namespaceSelector.matchExpressions[0]"
POLICY_WINDOW = "spec.windows[0]"
OFFICE_HOURS = {"days": ["Mon"], "start": "09:00", "end": "17:00", "timeZone": "Europe/Berlin"}
POLICY_HOOK = {"name": "sre-incidents", "namespace": "shepherd-system", "key": "url"}


def selecting(*expressions: dict[str, Any]) -> Mutation:
    """The example policy selecting its namespaces by `expressions` instead of matchLabels."""
    return setting("spec.namespaceSelector", {"matchExpressions": list(expressions)})


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        pytest.param(
            setting(f"{FREEZE}.end", "2026-12-19T00:00:00Z"),
            f"{FREEZE}.end",
            "freeze end must be after its start",
            id="freeze-end-before-start",
        ),
        pytest.param(
            setting(f"{FREEZE}.end", "2026-12-20T00:00:00Z"),
            f"{FREEZE}.end",
            "freeze end must be after its start",
            id="freeze-end-equals-start",
        ),
        pytest.param(
            # 23:30 UTC on the 19th: later as a string, earlier as a time.
            setting(f"{FREEZE}.end", "2026-12-20T00:30:00+01:00"),
            f"{FREEZE}.end",
            "freeze end must be after its start",
            id="freeze-end-before-start-in-another-offset",
        ),
        pytest.param(
            removing(f"{FREEZE}.reason"), f"{FREEZE}.reason", "Required value", id="freeze-no-reason"
        ),
        pytest.param(
            setting(f"{FREEZE}.reason", ""),
            f"{FREEZE}.reason",
            "should be at least 1 chars long",
            id="freeze-empty-reason",
        ),
        pytest.param(
            setting(f"{FREEZE}.reason", "x" * 257),
            f"{FREEZE}.reason",
            "Too long: may not be more than 256 bytes",
            id="freeze-reason-257-chars",
        ),
        pytest.param(removing(f"{FREEZE}.end"), f"{FREEZE}.end", "Required value", id="freeze-without-end"),
        pytest.param(
            setting(f"{FREEZE}.start", "2026-12-20"),
            f"{FREEZE}.start",
            "must be of type date-time",
            id="freeze-start-without-time",
        ),
        pytest.param(
            setting(
                "spec.freezes",
                [{"start": "2026-12-20T00:00:00Z", "end": "2026-12-21T00:00:00Z", "reason": "r"}] * 51,
            ),
            "spec.freezes",
            "at most 50 items",
            id="51-freezes",
        ),
        pytest.param(
            selecting({"key": "environment", "operator": "In"}),
            f"{EXPRESSION}.values",
            "values must not be empty when the operator is In or NotIn",
            id="In-without-values",
        ),
        pytest.param(
            selecting({"key": "environment", "operator": "NotIn", "values": []}),
            f"{EXPRESSION}.values",
            "values must not be empty when the operator is In or NotIn",
            id="NotIn-with-no-values",
        ),
        pytest.param(
            selecting({"key": "environment", "operator": "Exists", "values": ["production"]}),
            f"{EXPRESSION}.values",
            "values must be empty when the operator is Exists or DoesNotExist",
            id="Exists-with-values",
        ),
        pytest.param(
            selecting({"key": "environment", "operator": "DoesNotExist", "values": ["test"]}),
            f"{EXPRESSION}.values",
            "values must be empty when the operator is Exists or DoesNotExist",
            id="DoesNotExist-with-values",
        ),
        pytest.param(
            selecting({"key": "environment", "operator": "Equals", "values": ["production"]}),
            f"{EXPRESSION}.operator",
            'Unsupported value: "Equals": supported values: "In", "NotIn", "Exists", "DoesNotExist"',
            id="bad-operator",
        ),
        pytest.param(
            selecting({"operator": "Exists"}),
            f"{EXPRESSION}.key",
            "Required value",
            id="expression-without-key",
        ),
        pytest.param(
            selecting({"key": "environment/", "operator": "Exists"}),
            f"{EXPRESSION}.key",
            "should match",
            id="key-not-a-label-key",
        ),
        pytest.param(
            selecting(*[{"key": f"k{i}", "operator": "Exists"} for i in range(21)]),
            "spec.namespaceSelector.matchExpressions",
            "at most 20 items",
            id="21-expressions",
        ),
        pytest.param(
            setting("spec.namespaceSelector.matchLabels.environment", 1),
            "spec.namespaceSelector.matchLabels.environment",
            "must be of type string",
            id="label-value-not-a-string",
        ),
        pytest.param(
            appending("spec.windows", {"name": "office-hours", **OFFICE_HOURS}),
            "spec.windows",
            "spec.windows names must be unique within the policy",
            id="duplicate-window-names",
        ),
        pytest.param(
            removing(f"{POLICY_WINDOW}.name"),
            f"{POLICY_WINDOW}.name",
            "Required value",
            id="window-without-name",
        ),
        pytest.param(
            setting(f"{POLICY_WINDOW}.name", "Office Hours"),
            f"{POLICY_WINDOW}.name",
            "should match",
            id="window-name-not-a-dns-label",
        ),
        pytest.param(
            setting(f"{POLICY_WINDOW}.timeZone", "Europe/Berlinn"),
            f"{POLICY_WINDOW}.timeZone",
            'Unsupported value: "Europe/Berlinn"',
            id="bad-time-zone",
        ),
        pytest.param(
            setting(f"{POLICY_WINDOW}.end", "09:00"),
            f"{POLICY_WINDOW}.end",
            "window end must differ from start",
            id="window-start-equals-end",
        ),
        pytest.param(
            setting(f"{POLICY_WINDOW}.days", ["Mon", "Mon"]),
            f"{POLICY_WINDOW}.days",
            "window days must not repeat a day",
            id="window-repeats-a-day",
        ),
        pytest.param(
            setting(f"{POLICY_WINDOW}.start", "9:00"),
            f"{POLICY_WINDOW}.start",
            "should match",
            id="window-start-H:MM",
        ),
        pytest.param(
            setting("spec.gates[0].window", OFFICE_HOURS),
            "spec.gates[0]",
            "each gate must set exactly one of approval, window, metric, webhook, job or release",
            id="gate-with-two-kinds",
        ),
        pytest.param(
            removing("spec.gates[0].approval"),
            "spec.gates[0]",
            "each gate must set exactly one of approval, window, metric, webhook, job or release",
            id="gate-with-no-kind",
        ),
        pytest.param(
            appending("spec.gates", {"name": "two-approvals", "release": {"name": "backend"}}),
            "spec.gates",
            "spec.gates names must be unique within the policy",
            id="duplicate-gate-names",
        ),
        pytest.param(
            appending("spec.gates", {"name": "never", "window": {**OFFICE_HOURS, "end": "09:00"}}),
            "spec.gates[1].window.end",
            "window end must differ from start",
            id="gate-window-start-equals-end",
        ),
        pytest.param(
            setting("spec.gates[0].approval.count", 11),
            "spec.gates[0].approval.count",
            "less than or equal to 10",
            id="approval-count-11",
        ),
        pytest.param(
            setting("spec.gates[0].timeout", "5 days"),
            "spec.gates[0].timeout",
            "should match",
            id="bad-gate-timeout",
        ),
        pytest.param(
            setting("spec.description", "x" * 1025),
            "spec.description",
            "Too long: may not be more than 1024 bytes",
            id="description-1025-chars",
        ),
        pytest.param(
            setting("spec.freeze", []),
            "spec.freeze",
            'unknown field "spec.freeze"',
            id="unknown-field-in-spec",
        ),
        pytest.param(
            setting(f"{FREEZE}.until", "2027-01-04T00:00:00Z"),
            f"{FREEZE}.until",
            "unknown field",
            id="unknown-field-in-freeze",
        ),
        pytest.param(
            removing("spec.notifications[0].webhook.urlSecretRef.namespace"),
            "spec.notifications[0].webhook.urlSecretRef.namespace",
            "Required value",
            id="notification-secret-without-namespace",
        ),
        pytest.param(
            setting("spec.notifications[0].events", ["Failed", "Failed"]),
            "spec.notifications[0].events",
            "notification events must not repeat",
            id="notification-repeating-an-event",
        ),
        pytest.param(
            appending(
                "spec.notifications", {"webhook": {"urlSecretRef": POLICY_HOOK}, "events": ["Succeeded"]}
            ),
            "spec.notifications",
            "names the same Secret key twice",
            id="two-notifications-to-one-secret-key",
        ),
        pytest.param(removing("spec"), "spec", "Required value", id="missing-spec"),
    ],
)
def test_a_bad_policy_is_rejected_at_the_offending_field(
    policy_crd: dict[str, Any], mutate: Mutation, field: str, message: str
) -> None:
    bad = example_policy()
    mutate(bad)

    violations = validate(policy_crd, bad)

    assert [v for v in violations if v.field == field and message in v.message], violations


def test_a_freeze_missing_an_end_is_reported_once(policy_crd: dict[str, Any]) -> None:
    policy = example_policy()
    removing(f"{FREEZE}.end")(policy)

    assert validate(policy_crd, policy) == [Violation(f"{FREEZE}.end", "Required value"), RULES_NOT_CHECKED]


def test_an_empty_policy_selects_every_namespace_and_is_valid(policy_crd: dict[str, Any]) -> None:
    policy = example_policy()
    policy["spec"] = {}
    assert validate(policy_crd, policy) == []

    setting("spec.namespaceSelector", {})(policy)
    assert validate(policy_crd, policy) == []


def test_selector_expressions_of_every_operator_and_freezes_with_offsets_are_valid(
    policy_crd: dict[str, Any],
) -> None:
    policy = example_policy()
    applying(
        setting(
            "spec.namespaceSelector.matchExpressions",
            [
                {"key": "environment", "operator": "In", "values": ["production", "staging"]},
                {"key": "example.com/tier", "operator": "NotIn", "values": ["experimental"]},
                {"key": "shepherd.dev/managed", "operator": "Exists"},
                {"key": "shepherd.dev/exempt", "operator": "DoesNotExist", "values": []},
            ],
        ),
        # One second long, in Berlin's winter offset.
        appending(
            "spec.freezes",
            {"start": "2026-12-31T23:59:59+01:00", "end": "2027-01-01T00:00:00+01:00", "reason": "midnight"},
        ),
        # Crosses midnight, like a Release's window.
        appending(
            "spec.windows",
            {"name": "night", "days": ["Fri"], "start": "22:00", "end": "02:00", "timeZone": "UTC"},
        ),
        appending(
            "spec.gates", {"name": "after-platform", "release": {"name": "platform", "namespace": "infra"}}
        ),
    )(policy)

    assert validate(policy_crd, policy) == []


def without_prose(node: Any) -> Any:
    """A schema without what only explains it (descriptions, rule messages): what it accepts."""
    if isinstance(node, Mapping):
        return {
            key: without_prose(value)
            for key, value in node.items()
            if not (key in ("description", "message") and isinstance(value, str))
        }
    if isinstance(node, list):
        return [without_prose(item) for item in node]
    return node


def test_policy_windows_and_gates_accept_exactly_what_release_gates_accept(
    crd: dict[str, Any], policy_crd: dict[str, Any]
) -> None:
    release_gates = openapi_schema(crd)["properties"]["spec"]["properties"]["gates"]
    policy_spec = openapi_schema(policy_crd)["properties"]["spec"]["properties"]

    assert without_prose(policy_spec["gates"]) == without_prose(release_gates)
    window = without_prose(policy_spec["windows"]["items"])
    name = window["properties"].pop("name")
    window["required"].remove("name")
    assert window == without_prose(release_gates["items"]["properties"]["window"])
    assert name == without_prose(release_gates["items"]["properties"]["name"])


def test_policy_notifications_accept_what_release_notifications_accept_with_a_secret_namespace(
    crd: dict[str, Any], policy_crd: dict[str, Any]
) -> None:
    release_notifications = without_prose(
        openapi_schema(crd)["properties"]["spec"]["properties"]["notifications"]
    )
    policy_notifications = without_prose(
        openapi_schema(policy_crd)["properties"]["spec"]["properties"]["notifications"]
    )
    ref = policy_notifications["items"]["properties"]["webhook"]["properties"]["urlSecretRef"]
    namespace = ref["properties"].pop("namespace")
    ref["required"].remove("namespace")

    assert policy_notifications == release_notifications
    assert namespace["pattern"] == "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def test_policy_names_and_printer_columns(policy_crd: dict[str, Any]) -> None:
    (version,) = policy_crd["spec"]["versions"]
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]}

    assert policy_crd["metadata"]["name"] == "releasepolicies.shepherd.dev"
    assert policy_crd["spec"]["scope"] == "Cluster"
    assert policy_crd["spec"]["names"] == {
        "kind": "ReleasePolicy",
        "listKind": "ReleasePolicyList",
        "plural": "releasepolicies",
        "singular": "releasepolicy",
        "shortNames": ["rpol"],
        "categories": ["shepherd"],
    }
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert columns == {
        "Description": ("string", ".spec.description"),
        "Age": ("date", ".metadata.creationTimestamp"),
    }
    assert list(columns) == ["Description", "Age"]
