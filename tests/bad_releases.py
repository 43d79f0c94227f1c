"""A corpus of bad Releases: valid quickstart Releases each broken in one way, with the field the error must
name and a part of its message. The CRD's schema and CEL rules must reject every one: the offline validator
(tests/unit/test_crdschema.py), `shepherd lint`, and the real API server (tests/controlplane) alike."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

Mutation = Callable[[dict[str, Any]], None]


def quickstart_release() -> dict[str, Any]:
    docs = yaml.safe_load_all((EXAMPLES / "quickstart.yaml").read_text(encoding="utf-8"))
    release: dict[str, Any] = next(doc for doc in docs if doc["kind"] == "Release")
    return release


# Mutations of a valid Release, addressed by Kubernetes-style paths such as "spec.components[0].name".


def _steps(path: str) -> list[str | int]:
    return [int(index) if index else name for index, name in re.findall(r"\[(\d+)\]|([^.\[\]]+)", path)]


def _parent(obj: dict[str, Any], path: str) -> tuple[Any, str | int]:
    *parents, last = _steps(path)
    node: Any = obj
    for step in parents:
        node = node[step]
    return node, last


def setting(path: str, value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        node, last = _parent(obj, path)
        node[last] = copy.deepcopy(value)

    return mutate


def removing(path: str) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        node, last = _parent(obj, path)
        del node[last]

    return mutate


def appending(path: str, value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        node, last = _parent(obj, path)
        node[last].append(copy.deepcopy(value))

    return mutate


def component(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "template": {"spec": {"containers": [{"name": name, "image": f"example/{name}:1"}]}},
    }


def applying(*mutations: Mutation) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(obj)

    return mutate


ANALYSIS = {
    "prometheus": {"address": "http://prometheus.monitoring:9090"},
    "metrics": [
        {"name": "error-rate", "query": 'sum(rate(http_requests_total{code=~"5.."}[1m]))', "max": 0.01},
        {
            "name": "latency",
            "query": 'histogram_quantile(0.99, sum by (le) (rate(latency_bucket{role="{{role}}"}[1m])))',
            "compare": {"baseline": "stable", "maxIncrease": "10%"},
        },
    ],
}


def with_analysis(*mutations: Mutation) -> Mutation:
    """The quickstart with spec.analysis (two valid metrics), then `mutations`."""
    return applying(setting("spec.analysis", ANALYSIS), *mutations)


MIGRATION_JOB = {
    "spec": {
        "backoffLimit": 1,
        "template": {
            "spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "migrate", "image": "example/shop-migrate:1", "args": ["up"]}],
            }
        },
    }
}
MIGRATIONS = [
    {
        "name": "schema",
        "timeout": "15m",
        "backoffLimit": 2,
        "template": MIGRATION_JOB,
        "rollbackTemplate": MIGRATION_JOB,
    },
    {"name": "backfill", "template": {"metadata": {"labels": {"team": "shop"}}, **MIGRATION_JOB}},
]


def with_migrations(*mutations: Mutation) -> Mutation:
    """The quickstart with spec.migrations (one with a down migration, one without), then `mutations`."""
    return applying(setting("spec.migrations", MIGRATIONS), *mutations)


GATES = [
    {"name": "two-approvals", "timeout": "72h", "approval": {"count": 2}},
    {
        "name": "office-hours",
        "window": {
            "days": ["Mon", "Tue", "Wed"],
            "start": "09:00",
            "end": "16:00",
            "timeZone": "Europe/Berlin",
        },
    },
    {"name": "after-backend", "release": {"name": "backend", "namespace": "prod", "version": "3.1.0"}},
    {
        "name": "ci-green",
        "webhook": {
            "url": "https://ci.example/status/{{release}}/{{version}}",
            "method": "POST",
            "headersSecretRef": {"name": "ci-token"},
            "timeout": "5s",
            "interval": "1m",
        },
    },
    {
        "name": "smoke",
        "job": {
            "template": {
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "smoke", "image": "curlimages/curl:8.10.1"}],
                        }
                    },
                }
            }
        },
    },
]


def with_gates(*mutations: Mutation) -> Mutation:
    """The quickstart with spec.gates (one valid gate of each kind), then `mutations`."""
    return applying(setting("spec.gates", GATES), *mutations)


NOTIFICATIONS = [
    {
        "webhook": {"urlSecretRef": {"name": "slack-webhook", "key": "url"}, "format": "slack"},
        "events": ["RolledBack"],
    },
    {
        "webhook": {"urlSecretRef": {"name": "deploy-log", "key": "url"}},
        "events": ["NewRevision", "Succeeded"],
    },
]


def with_notifications(*mutations: Mutation) -> Mutation:
    """The quickstart with spec.notifications (a slack and a json webhook), then `mutations`."""
    return applying(setting("spec.notifications", NOTIFICATIONS), *mutations)


CONFIG = [
    {"name": "shop-config", "data": {"LOG_LEVEL": "info", "app.yaml": "port: 8080\n"}},
    {"name": "shop.certs", "binaryData": {"cert": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"}},
]


def with_config(*mutations: Mutation) -> Mutation:
    """The quickstart with spec.config (a data and a binaryData entry), then `mutations`."""
    return applying(setting("spec.config", CONFIG), *mutations)


class BadRelease(NamedTuple):
    """One bad Release and how it is rejected.

    Offline (`shepherd.crdschema.validate`, `shepherd lint`) there is a violation at `field` whose message
    contains `message`. The API server, asked for strict field validation as `kubectl apply` does
    (fieldValidation=Strict), names `server_field` among the causes of its 422 and has `message` in its
    message, with the same words: where `server_field` is None, its answer has no causes and only its message
    is checked (`field` is then a field its message names).
    """

    id: str
    mutate: Mutation
    field: str
    """The field the error names: the API server's path ("spec.config[0].data.KEY" for a schema error of a
    map value, "spec.gates[1]" for a list-type or CEL error)."""
    message: str
    """A part of the message, in the API server's words."""
    per_field_cause: bool = True
    """False where the API server answers without a cause per field: a 400 "strict decoding error: unknown
    field" (an unknown field, kubectl's default), or a body of an apiVersion it cannot decode."""

    @property
    def server_field(self) -> str | None:
        """The field among the causes of the API server's 422; None where its answer (a 400) has no causes."""
        return self.field if self.per_field_cause else None


STEPS = "spec.strategy.canary.steps"
CONTAINER = "spec.components[0].template.spec.containers[0]"
PROMETHEUS = "spec.analysis.prometheus"
METRIC = "spec.analysis.metrics[0]"
COMPARE = "spec.analysis.metrics[1].compare"
APPROVAL = "spec.gates[0].approval"
WINDOW = "spec.gates[1].window"
DEPENDENCY = "spec.gates[2].release"
WEBHOOK = "spec.gates[3].webhook"
JOB = "spec.gates[4].job"
HOOK = "spec.notifications[0]"

BAD_RELEASES = [
    BadRelease("missing-version", removing("spec.version"), "spec.version", "Required value"),
    BadRelease(
        "empty-version", setting("spec.version", ""), "spec.version", "should be at least 1 chars long"
    ),
    BadRelease("version-with-space", setting("spec.version", "1.0 beta"), "spec.version", "should match"),
    BadRelease(
        "version-64-chars",
        setting("spec.version", "1" * 64),
        "spec.version",
        "Too long: may not be more than 63 bytes",
    ),
    BadRelease(
        "version-not-a-string", setting("spec.version", 1.0), "spec.version", "must be of type string"
    ),
    BadRelease(
        "paused-not-a-boolean", setting("spec.paused", "yes"), "spec.paused", "must be of type boolean"
    ),
    BadRelease(
        "malformed-progress-deadline",
        setting("spec.progressDeadline", "10 minutes"),
        "spec.progressDeadline",
        "should match",
    ),
    BadRelease("missing-components", removing("spec.components"), "spec.components", "Required value"),
    BadRelease("no-components", setting("spec.components", []), "spec.components", "at least 1 items"),
    BadRelease(
        "21-components",
        setting("spec.components", [component(f"c{i}") for i in range(21)]),
        "spec.components",
        "at most 20 items",
    ),
    BadRelease(
        "component-name-uppercase",
        setting("spec.components[0].name", "API"),
        "spec.components[0].name",
        "should match",
    ),
    BadRelease(
        "duplicate-component-names",
        setting("spec.components[1].name", "api"),
        "spec.components",
        "names must be unique",
    ),
    BadRelease(
        "component-depends-on-itself",
        setting("spec.components[0].dependsOn", ["api"]),
        "spec.components",
        "names the component itself",
    ),
    BadRelease(
        "component-depends-on-an-unknown-component",
        setting("spec.components[1].dependsOn", ["api", "db"]),
        "spec.components",
        "names a component that is not defined",
    ),
    BadRelease(
        "component-depends-on-a-component-twice",
        setting("spec.components[1].dependsOn", ["api", "api"]),
        "spec.components[1].dependsOn",
        "must not name a component twice",
    ),
    BadRelease(
        "depends-on-a-malformed-name",
        setting("spec.components[1].dependsOn", ["API"]),
        "spec.components[1].dependsOn[0]",
        "should match",
    ),
    BadRelease(
        "component-without-name",
        removing("spec.components[1].name"),
        "spec.components[1].name",
        "Required value",
    ),
    BadRelease(
        "replicas-0",
        setting("spec.components[0].replicas", 0),
        "spec.components[0].replicas",
        "greater than or equal to 1",
    ),
    BadRelease(
        "replicas-1001",
        setting("spec.components[0].replicas", 1001),
        "spec.components[0].replicas",
        "less than or equal to 1000",
    ),
    BadRelease(
        "missing-template",
        removing("spec.components[0].template"),
        "spec.components[0].template",
        "Required value",
    ),
    BadRelease(
        "template-without-containers",
        removing("spec.components[0].template.spec.containers"),
        "spec.components[0].template.spec.containers",
        "Required value",
    ),
    BadRelease(
        "template-with-no-containers",
        setting("spec.components[0].template.spec.containers", []),
        "spec.components[0].template.spec.containers",
        "at least 1 items",
    ),
    BadRelease(
        "container-without-image", removing(f"{CONTAINER}.image"), f"{CONTAINER}.image", "Required value"
    ),
    BadRelease(
        "pod-label-not-a-string",
        setting("spec.components[0].template.metadata", {"labels": {"app.kubernetes.io/part-of": 1}}),
        "spec.components[0].template.metadata.labels.app.kubernetes.io/part-of",
        'must be of type string: "integer"',
    ),
    BadRelease(
        "weight-101",
        setting(f"{STEPS}[0].setWeight", 101),
        f"{STEPS}[0].setWeight",
        "less than or equal to 100",
    ),
    BadRelease(
        "weight-minus-1",
        setting(f"{STEPS}[0].setWeight", -1),
        f"{STEPS}[0].setWeight",
        "greater than or equal to 0",
    ),
    BadRelease("decreasing-weights", setting(f"{STEPS}[2].setWeight", 10), STEPS, "must not decrease"),
    BadRelease(
        "step-with-setWeight-and-pause",
        setting(f"{STEPS}[0].pause", {}),
        f"{STEPS}[0]",
        "exactly one of setWeight, pause, analysis, setCanaryScale or setHeaderRoute",
    ),
    BadRelease(
        "empty-step",
        appending(STEPS, {}),
        f"{STEPS}[5]",
        "exactly one of setWeight, pause, analysis, setCanaryScale or setHeaderRoute",
    ),
    BadRelease("51-steps", setting(STEPS, [{"setWeight": 100}] * 51), STEPS, "at most 50 items"),
    BadRelease(
        "malformed-pause-duration",
        setting(f"{STEPS}[1].pause.duration", "10 minutes"),
        f"{STEPS}[1].pause.duration",
        "should match",
    ),
    BadRelease(
        "trafficRouting-with-no-kind",
        setting("spec.strategy.canary.trafficRouting", {}),
        "spec.strategy.canary.trafficRouting",
        "exactly one routing kind: replicas",
    ),
    BadRelease(
        "trafficRouting-with-both-kinds",
        setting("spec.strategy.canary.trafficRouting", {"replicas": {}, "gatewayAPI": {"httpRoute": "shop"}}),
        "spec.strategy.canary.trafficRouting",
        "exactly one routing kind: replicas or gatewayAPI",
    ),
    BadRelease(
        "gatewayAPI-without-a-route",
        setting("spec.strategy.canary.trafficRouting", {"gatewayAPI": {}}),
        "spec.strategy.canary.trafficRouting.gatewayAPI",
        "exactly one of httpRoute",
    ),
    BadRelease(
        "gatewayAPI-weightScale-0",
        setting(
            "spec.strategy.canary.trafficRouting", {"gatewayAPI": {"httpRoute": "shop", "weightScale": 0}}
        ),
        "spec.strategy.canary.trafficRouting.gatewayAPI.weightScale",
        "greater than or equal to 1",
    ),
    BadRelease(
        "setCanaryScale-with-two-kinds",
        setting(f"{STEPS}[0]", {"setCanaryScale": {"replicas": 1, "weight": 10}}),
        f"{STEPS}[0].setCanaryScale",
        "exactly one of replicas, weight, matchTrafficWeight",
    ),
    BadRelease(
        "headerValue-with-two-kinds",
        setting(
            f"{STEPS}[0]",
            {
                "setHeaderRoute": {
                    "name": "beta",
                    "match": [{"headerName": "X-Beta", "headerValue": {"exact": "1", "regex": "1"}}],
                }
            },
        ),
        f"{STEPS}[0].setHeaderRoute.match[0].headerValue",
        "exactly one of exact, prefix, regex",
    ),
    BadRelease(
        "bad-bake-duration", setting("spec.postRelease.bake", "5"), "spec.postRelease.bake", "should match"
    ),
    BadRelease(
        "revisionHistoryLimit-0",
        setting("spec.rollback", {"revisionHistoryLimit": 0}),
        "spec.rollback.revisionHistoryLimit",
        "greater than or equal to 1",
    ),
    BadRelease(
        "revisionHistoryLimit-101",
        setting("spec.rollback", {"revisionHistoryLimit": 101}),
        "spec.rollback.revisionHistoryLimit",
        "less than or equal to 100",
    ),
    BadRelease(
        "unknown-field-in-step",
        setting(f"{STEPS}[0].setweight", 30),
        f"{STEPS}[0].setweight",
        f'unknown field "{STEPS}[0].setweight"',
        per_field_cause=False,
    ),
    BadRelease(
        "unknown-field-in-spec",
        setting("spec.replicas", 3),
        "spec.replicas",
        'unknown field "spec.replicas"',
        per_field_cause=False,
    ),
    # spec.analysis and the steps and bake that refer to it
    BadRelease(
        "analysis-without-prometheus",
        with_analysis(removing(PROMETHEUS)),
        PROMETHEUS,
        "Required value",
    ),
    BadRelease(
        "analysis-without-metrics",
        with_analysis(removing("spec.analysis.metrics")),
        "spec.analysis.metrics",
        "Required value",
    ),
    BadRelease(
        "prometheus-address-without-scheme",
        with_analysis(setting(f"{PROMETHEUS}.address", "prometheus.monitoring:9090")),
        f"{PROMETHEUS}.address",
        "should match '^https?://'",
    ),
    BadRelease(
        "prometheus-address-2049-chars",
        with_analysis(setting(f"{PROMETHEUS}.address", "http://" + "p" * 2042)),
        f"{PROMETHEUS}.address",
        "Too long: may not be more than 2048 bytes",
    ),
    BadRelease(
        "secretRef-without-name",
        with_analysis(setting(f"{PROMETHEUS}.secretRef", {})),
        f"{PROMETHEUS}.secretRef.name",
        "Required value",
    ),
    BadRelease(
        "caSecretRef-and-insecureSkipVerify",
        with_analysis(
            setting(f"{PROMETHEUS}.caSecretRef", {"name": "prometheus-ca"}),
            setting(f"{PROMETHEUS}.insecureSkipVerify", True),
        ),
        f"{PROMETHEUS}.insecureSkipVerify",
        "verify the server with the CA, or skip verification, not both",
    ),
    BadRelease(
        "header-value-not-a-string",
        with_analysis(setting(f"{PROMETHEUS}.headers", {"X-Scope-OrgID": 42})),
        f"{PROMETHEUS}.headers.X-Scope-OrgID",
        'must be of type string: "integer"',
    ),
    BadRelease(
        "malformed-query-timeout",
        with_analysis(setting(f"{PROMETHEUS}.timeout", "10")),
        f"{PROMETHEUS}.timeout",
        "should match",
    ),
    BadRelease(
        "malformed-analysis-interval",
        with_analysis(setting("spec.analysis.interval", "30 seconds")),
        "spec.analysis.interval",
        "should match",
    ),
    BadRelease(
        "no-metrics",
        with_analysis(setting("spec.analysis.metrics", [])),
        "spec.analysis.metrics",
        "at least 1 items",
    ),
    BadRelease(
        "21-metrics",
        with_analysis(
            setting("spec.analysis.metrics", [{"name": f"m{i}", "query": "up", "min": 1} for i in range(21)])
        ),
        "spec.analysis.metrics",
        "at most 20 items",
    ),
    BadRelease(
        "duplicate-metric-names",
        with_analysis(setting("spec.analysis.metrics[1].name", "error-rate")),
        "spec.analysis.metrics",
        "names must be unique",
    ),
    BadRelease(
        "metric-name-with-underscore",
        with_analysis(setting(f"{METRIC}.name", "error_rate")),
        f"{METRIC}.name",
        "should match",
    ),
    BadRelease(
        "metric-without-query",
        with_analysis(removing(f"{METRIC}.query")),
        f"{METRIC}.query",
        "Required value",
    ),
    BadRelease(
        "empty-query",
        with_analysis(setting(f"{METRIC}.query", "")),
        f"{METRIC}.query",
        "should be at least 1 chars long",
    ),
    BadRelease(
        "metric-without-criterion",
        with_analysis(removing(f"{METRIC}.max")),
        METRIC,
        "at least one of min, max or compare",
    ),
    BadRelease(
        "min-above-max",
        with_analysis(setting(f"{METRIC}.min", 0.5)),
        f"{METRIC}.min",
        "min must be less than or equal to max",
    ),
    BadRelease(
        "max-not-a-number",
        with_analysis(setting(f"{METRIC}.max", "1%")),
        f"{METRIC}.max",
        "must be of type number",
    ),
    BadRelease(
        "count-0",
        with_analysis(setting(f"{METRIC}.count", 0)),
        f"{METRIC}.count",
        "greater than or equal to 1",
    ),
    BadRelease(
        "failureLimit-101",
        with_analysis(setting(f"{METRIC}.failureLimit", 101)),
        f"{METRIC}.failureLimit",
        "less than or equal to 100",
    ),
    BadRelease(
        "inconclusiveLimit-minus-1",
        with_analysis(setting(f"{METRIC}.inconclusiveLimit", -1)),
        f"{METRIC}.inconclusiveLimit",
        "greater than or equal to 0",
    ),
    BadRelease(
        "consecutiveErrorLimit-not-an-integer",
        with_analysis(setting(f"{METRIC}.consecutiveErrorLimit", 2.5)),
        f"{METRIC}.consecutiveErrorLimit",
        "must be of type integer",
    ),
    BadRelease(
        "malformed-metric-interval",
        with_analysis(setting(f"{METRIC}.interval", "1 minute")),
        f"{METRIC}.interval",
        "should match",
    ),
    BadRelease(
        "dryRun-not-a-boolean",
        with_analysis(setting(f"{METRIC}.dryRun", "true")),
        f"{METRIC}.dryRun",
        "must be of type boolean",
    ),
    BadRelease(
        "compare-with-two-kinds",
        with_analysis(setting(f"{COMPARE}.maxDecrease", "5%")),
        COMPARE,
        "exactly one of maxIncrease, maxDecrease or test",
    ),
    BadRelease(
        "compare-with-no-kind",
        with_analysis(removing(f"{COMPARE}.maxIncrease")),
        COMPARE,
        "exactly one of maxIncrease, maxDecrease or test",
    ),
    BadRelease(
        "compare-without-baseline",
        with_analysis(removing(f"{COMPARE}.baseline")),
        f"{COMPARE}.baseline",
        "Required value",
    ),
    BadRelease(
        "compare-with-canary-baseline",
        with_analysis(setting(f"{COMPARE}.baseline", "canary")),
        f"{COMPARE}.baseline",
        'supported values: "stable"',
    ),
    BadRelease(
        "percent-without-percent-sign",
        with_analysis(setting(f"{COMPARE}.maxIncrease", "10")),
        f"{COMPARE}.maxIncrease",
        "should match",
    ),
    BadRelease(
        "unknown-test",
        with_analysis(setting(COMPARE, {"baseline": "stable", "test": "t-test"})),
        f"{COMPARE}.test",
        'supported values: "mann-whitney"',
    ),
    BadRelease(
        "alpha-1.5",
        with_analysis(setting(COMPARE, {"baseline": "stable", "test": "mann-whitney", "alpha": 1.5})),
        f"{COMPARE}.alpha",
        "in body should be less than 1",
    ),
    BadRelease(
        "alpha-without-test",
        with_analysis(setting(f"{COMPARE}.alpha", 0.01)),
        f"{COMPARE}.alpha",
        "only to the statistical test",
    ),
    BadRelease(
        "direction-without-test",
        with_analysis(setting(f"{COMPARE}.direction", "decrease")),
        f"{COMPARE}.direction",
        "only to the statistical test",
    ),
    BadRelease(
        "unknown-direction",
        with_analysis(setting(COMPARE, {"baseline": "stable", "test": "mann-whitney", "direction": "up"})),
        f"{COMPARE}.direction",
        '"increase", "decrease"',
    ),
    BadRelease(
        "step-with-analysis-and-pause",
        with_analysis(setting(f"{STEPS}[1].analysis", {})),
        f"{STEPS}[1]",
        "exactly one of setWeight, pause, analysis, setCanaryScale or setHeaderRoute",
    ),
    BadRelease(
        "analysis-step-without-spec-analysis",
        setting(f"{STEPS}[1]", {"analysis": {}}),
        STEPS,
        "an analysis step needs spec.analysis",
    ),
    BadRelease(
        "analysis-step-with-no-metrics",
        with_analysis(setting(f"{STEPS}[1]", {"analysis": {"metrics": []}})),
        f"{STEPS}[1].analysis.metrics",
        "at least 1 items",
    ),
    BadRelease(
        "analysis-step-with-unknown-metric",
        with_analysis(setting(f"{STEPS}[1]", {"analysis": {"metrics": ["error-rate", "latncy"]}})),
        STEPS,
        "every name must be the name of one of spec.analysis.metrics",
    ),
    BadRelease(
        "bake-metrics-without-spec-analysis",
        setting("spec.postRelease.metrics", ["error-rate"]),
        "spec.postRelease.metrics",
        "spec.analysis is not",
    ),
    BadRelease(
        "bake-metrics-with-unknown-metric",
        with_analysis(setting("spec.postRelease.metrics", ["errors"])),
        "spec.postRelease.metrics",
        "every name must be the name of one of spec.analysis.metrics",
    ),
    BadRelease(
        "unknown-field-in-metric",
        with_analysis(setting(f"{METRIC}.threshold", 0.01)),
        f"{METRIC}.threshold",
        f'unknown field "{METRIC}.threshold"',
        per_field_cause=False,
    ),
    # spec.config
    BadRelease(
        "duplicate-config-names",
        with_config(setting("spec.config[1].name", "shop-config")),
        "spec.config",
        "names must be unique",
    ),
    BadRelease(
        "config-name-uppercase",
        with_config(setting("spec.config[0].name", "Shop-Config")),
        "spec.config[0].name",
        "should match",
    ),
    BadRelease(
        "config-name-243-chars",
        with_config(setting("spec.config[0].name", "c" * 243)),
        "spec.config[0].name",
        "Too long: may not be more than 242 bytes",
    ),
    BadRelease(
        "config-without-name",
        with_config(removing("spec.config[0].name")),
        "spec.config[0].name",
        "Required value",
    ),
    BadRelease(
        "config-value-not-a-string",
        with_config(setting("spec.config[0].data.PORT", 8080)),
        "spec.config[0].data.PORT",
        'must be of type string: "integer"',
    ),
    BadRelease(
        "binary-data-not-base64",
        with_config(setting("spec.config[1].binaryData.cert", "not base64!")),
        "spec.config[1].binaryData.cert",
        'must be of type byte: "not base64!"',
    ),
    BadRelease(
        "key-in-data-and-binaryData",
        with_config(setting("spec.config[1].data", {"cert": "text"})),
        "spec.config[1].binaryData",
        "a key may be in data or in binaryData, not in both",
    ),
    BadRelease(
        "1001-config-keys",
        with_config(setting("spec.config[0].data", {f"k{i}": "v" for i in range(1001)})),
        "spec.config[0].data",
        "at most 1000 items",
    ),
    BadRelease(
        "21-config-entries",
        setting("spec.config", [{"name": f"c{i}"} for i in range(21)]),
        "spec.config",
        "at most 20 items",
    ),
    BadRelease(
        "unknown-field-in-config",
        with_config(setting("spec.config[0].immutable", True)),
        "spec.config[0].immutable",
        'unknown field "spec.config[0].immutable"',
        per_field_cause=False,
    ),
    # spec.migrations
    BadRelease(
        "duplicate-migration-names",
        with_migrations(setting("spec.migrations[1].name", "schema")),
        "spec.migrations",
        "names must be unique",
    ),
    BadRelease(
        "11-migrations",
        setting("spec.migrations", [{**MIGRATIONS[1], "name": f"m{i}"} for i in range(11)]),
        "spec.migrations",
        "at most 10 items",
    ),
    BadRelease(
        "migration-name-not-a-dns-label",
        with_migrations(setting("spec.migrations[0].name", "Schema_v2")),
        "spec.migrations[0].name",
        "should match",
    ),
    BadRelease(
        "migration-without-template",
        with_migrations(removing("spec.migrations[0].template")),
        "spec.migrations[0].template",
        "Required value",
    ),
    BadRelease(
        "migration-without-containers",
        with_migrations(setting("spec.migrations[0].template.spec.template.spec.containers", [])),
        "spec.migrations[0].template.spec.template.spec.containers",
        "at least 1 items",
    ),
    BadRelease(
        "migration-pods-restart-always",
        with_migrations(setting("spec.migrations[0].template.spec.template.spec.restartPolicy", "Always")),
        "spec.migrations[0].template.spec.template.spec.restartPolicy",
        'Unsupported value: "Always": supported values: "Never", "OnFailure"',
    ),
    BadRelease(
        "down-migration-without-containers",
        with_migrations(setting("spec.migrations[0].rollbackTemplate.spec.template.spec", {})),
        "spec.migrations[0].rollbackTemplate.spec.template.spec.containers",
        "Required value",
    ),
    BadRelease(
        "migration-backoff-limit-11",
        with_migrations(setting("spec.migrations[0].backoffLimit", 11)),
        "spec.migrations[0].backoffLimit",
        "less than or equal to 10",
    ),
    BadRelease(
        "migration-backoff-limit-negative",
        with_migrations(setting("spec.migrations[0].backoffLimit", -1)),
        "spec.migrations[0].backoffLimit",
        "greater than or equal to 0",
    ),
    BadRelease(
        "malformed-migration-timeout",
        with_migrations(setting("spec.migrations[0].timeout", "15 minutes")),
        "spec.migrations[0].timeout",
        "should match",
    ),
    BadRelease(
        "unknown-field-in-migration",
        with_migrations(setting("spec.migrations[0].down", {})),
        "spec.migrations[0].down",
        'unknown field "spec.migrations[0].down"',
        per_field_cause=False,
    ),
    # spec.gates
    BadRelease(
        "gate-with-two-kinds",
        with_gates(setting("spec.gates[0].window", GATES[1]["window"])),
        "spec.gates[0]",
        "exactly one of approval, window, metric, webhook, job or release",
    ),
    BadRelease(
        "gate-with-no-kind",
        with_gates(removing(APPROVAL)),
        "spec.gates[0]",
        "exactly one of approval, window, metric, webhook, job or release",
    ),
    BadRelease(
        "metric-gate-without-bounds",
        with_gates(setting("spec.gates[0]", {"name": "no-alerts", "metric": {"query": "vector(0)"}})),
        "spec.gates[0].metric",
        "sets min, max or both",
    ),
    BadRelease(
        "metric-gate-min-above-max",
        with_gates(
            setting("spec.gates[0]", {"name": "budget", "metric": {"query": "vector(0)", "min": 2, "max": 1}})
        ),
        "spec.gates[0].metric.min",
        "must not be above its max",
    ),
    BadRelease(
        "duplicate-gate-names",
        with_gates(setting("spec.gates[2].name", "two-approvals")),
        "spec.gates",
        "names must be unique",
    ),
    BadRelease(
        "gate-without-name",
        with_gates(removing("spec.gates[0].name")),
        "spec.gates[0].name",
        "Required value",
    ),
    BadRelease(
        "21-gates",
        setting("spec.gates", [{"name": f"g{i}", "approval": {"count": 1}} for i in range(21)]),
        "spec.gates",
        "at most 20 items",
    ),
    BadRelease(
        "malformed-gate-timeout",
        with_gates(setting("spec.gates[0].timeout", "3 days")),
        "spec.gates[0].timeout",
        "should match",
    ),
    BadRelease(
        "unknown-field-in-gate",
        with_gates(setting("spec.gates[0].approvers", ["alice"])),
        "spec.gates[0].approvers",
        'unknown field "spec.gates[0].approvers"',
        per_field_cause=False,
    ),
    BadRelease(
        "webhook-url-without-scheme",
        with_gates(setting(f"{WEBHOOK}.url", "ci.example/status")),
        f"{WEBHOOK}.url",
        "should match",
    ),
    BadRelease(
        "webhook-method-put",
        with_gates(setting(f"{WEBHOOK}.method", "PUT")),
        f"{WEBHOOK}.method",
        'Unsupported value: "PUT": supported values: "GET", "POST"',
    ),
    BadRelease(
        "webhook-interval-zero",
        with_gates(setting(f"{WEBHOOK}.interval", "0")),
        f"{WEBHOOK}.interval",
        "should match",
    ),
    BadRelease(
        "webhook-secret-without-name",
        with_gates(setting(f"{WEBHOOK}.headersSecretRef", {})),
        f"{WEBHOOK}.headersSecretRef.name",
        "Required value",
    ),
    BadRelease(
        "job-without-template",
        with_gates(setting(JOB, {})),
        f"{JOB}.template",
        "Required value",
    ),
    BadRelease(
        "job-without-containers",
        with_gates(setting(f"{JOB}.template.spec.template.spec.containers", [])),
        f"{JOB}.template.spec.template.spec.containers",
        "at least 1 items",
    ),
    BadRelease(
        "approval-count-0",
        with_gates(setting(f"{APPROVAL}.count", 0)),
        f"{APPROVAL}.count",
        "greater than or equal to 1",
    ),
    BadRelease(
        "approval-count-11",
        with_gates(setting(f"{APPROVAL}.count", 11)),
        f"{APPROVAL}.count",
        "less than or equal to 10",
    ),
    BadRelease(
        "approval-with-neither-count-nor-from",
        with_gates(setting(APPROVAL, {})),
        APPROVAL,
        "an approval gate sets exactly one of count (approvals from anyone) or from (sign-off by role)",
    ),
    BadRelease(
        "approval-with-count-and-from",
        with_gates(setting(f"{APPROVAL}.from", [{"group": "qa"}])),
        APPROVAL,
        "an approval gate sets exactly one of count (approvals from anyone) or from (sign-off by role)",
    ),
    BadRelease(
        "approval-from-entry-without-group",
        with_gates(setting(APPROVAL, {"from": [{"group": "qa"}, {"count": 2}]})),
        f"{APPROVAL}.from[1].group",
        "Required value",
    ),
    BadRelease(
        "approval-from-count-0",
        with_gates(setting(APPROVAL, {"from": [{"group": "qa", "count": 0}]})),
        f"{APPROVAL}.from[0].count",
        "greater than or equal to 1",
    ),
    BadRelease(
        "approval-from-empty-group",
        with_gates(setting(APPROVAL, {"from": [{"group": ""}]})),
        f"{APPROVAL}.from[0].group",
        "at least 1 chars long",
    ),
    BadRelease(
        "approval-from-no-role",
        with_gates(setting(APPROVAL, {"from": []})),
        f"{APPROVAL}.from",
        "at least 1 items",
    ),
    BadRelease(
        "approval-from-a-group-twice",
        with_gates(setting(APPROVAL, {"from": [{"group": "qa"}, {"group": "qa", "count": 2}]})),
        f"{APPROVAL}.from",
        "an approval gate's from names each group once",
    ),
    BadRelease(
        "unknown-field-in-approval-role",
        with_gates(setting(APPROVAL, {"from": [{"group": "qa", "users": ["alice"]}]})),
        f"{APPROVAL}.from[0].users",
        'unknown field "spec.gates[0].approval.from[0].users"',
        per_field_cause=False,
    ),
    BadRelease(
        "gate-owner-empty",
        with_gates(setting("spec.gates[0].owner", "")),
        "spec.gates[0].owner",
        "at least 1 chars long",
    ),
    BadRelease(
        "gate-description-too-long",
        with_gates(setting("spec.gates[0].description", "x" * 1025)),
        "spec.gates[0].description",
        "may not be more than 1024 bytes",
    ),
    BadRelease(
        "unknown-time-zone",
        with_gates(setting(f"{WINDOW}.timeZone", "Mars/Olympus")),
        f"{WINDOW}.timeZone",
        'Unsupported value: "Mars/Olympus": supported values: "Africa/Abidjan"',
    ),
    BadRelease(
        "window-without-time-zone",
        with_gates(removing(f"{WINDOW}.timeZone")),
        f"{WINDOW}.timeZone",
        "Required value",
    ),
    BadRelease(
        "start-without-leading-zero",
        with_gates(setting(f"{WINDOW}.start", "9:00")),
        f"{WINDOW}.start",
        "should match",
    ),
    BadRelease(
        "start-24:00", with_gates(setting(f"{WINDOW}.start", "24:00")), f"{WINDOW}.start", "should match"
    ),
    BadRelease(
        "end-with-seconds",
        with_gates(setting(f"{WINDOW}.end", "16:00:00")),
        f"{WINDOW}.end",
        "may not be more than 5 bytes",
    ),
    BadRelease(
        "window-without-end", with_gates(removing(f"{WINDOW}.end")), f"{WINDOW}.end", "Required value"
    ),
    BadRelease(
        "empty-window",
        with_gates(setting(f"{WINDOW}.end", "09:00")),
        f"{WINDOW}.end",
        "window end must differ from start",
    ),
    BadRelease(
        "unknown-day",
        with_gates(setting(f"{WINDOW}.days[1]", "Funday")),
        f"{WINDOW}.days[1]",
        'Unsupported value: "Funday"',
    ),
    BadRelease(
        "lowercase-day",
        with_gates(setting(f"{WINDOW}.days[0]", "mon")),
        f"{WINDOW}.days[0]",
        '"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"',
    ),
    BadRelease(
        "duplicate-days",
        with_gates(setting(f"{WINDOW}.days", ["Mon", "Tue", "Mon"])),
        f"{WINDOW}.days",
        "must not repeat a day",
    ),
    BadRelease("no-days", with_gates(setting(f"{WINDOW}.days", [])), f"{WINDOW}.days", "at least 1 items"),
    BadRelease(
        "release-gate-without-name",
        with_gates(removing(f"{DEPENDENCY}.name")),
        f"{DEPENDENCY}.name",
        "Required value",
    ),
    BadRelease(
        "release-gate-namespace-uppercase",
        with_gates(setting(f"{DEPENDENCY}.namespace", "Prod")),
        f"{DEPENDENCY}.namespace",
        "should match",
    ),
    BadRelease(
        "release-gate-with-bad-version",
        with_gates(setting(f"{DEPENDENCY}.version", "3.1.0 final")),
        f"{DEPENDENCY}.version",
        "should match",
    ),
    BadRelease(
        "release-gate-naming-this-release",
        with_gates(setting(DEPENDENCY, {"name": "shop"})),
        "spec.gates",
        "names this Release itself",
    ),
    # spec.notifications
    BadRelease(
        "notification-without-webhook",
        with_notifications(removing(f"{HOOK}.webhook")),
        f"{HOOK}.webhook",
        "Required value",
    ),
    BadRelease(
        "notification-without-events",
        with_notifications(removing(f"{HOOK}.events")),
        f"{HOOK}.events",
        "Required value",
    ),
    BadRelease(
        "notification-with-no-events",
        with_notifications(setting(f"{HOOK}.events", [])),
        f"{HOOK}.events",
        "at least 1 items",
    ),
    BadRelease(
        "notification-on-an-unknown-event",
        with_notifications(setting(f"{HOOK}.events", ["RolledBack", "Done"])),
        f"{HOOK}.events[1]",
        'Unsupported value: "Done": supported values: "Pending"',
    ),
    BadRelease(
        "notification-repeating-an-event",
        with_notifications(setting(f"{HOOK}.events", ["Failed", "Failed"])),
        f"{HOOK}.events",
        "notification events must not repeat",
    ),
    BadRelease(
        "notification-in-an-unknown-format",
        with_notifications(setting(f"{HOOK}.webhook.format", "teams")),
        f"{HOOK}.webhook.format",
        'supported values: "json", "slack"',
    ),
    BadRelease(
        "notification-url-in-the-spec",
        with_notifications(setting(f"{HOOK}.webhook.url", "https://hooks.example/T000")),
        f"{HOOK}.webhook.url",
        f'unknown field "{HOOK}.webhook.url"',
        per_field_cause=False,
    ),
    BadRelease(
        "notification-secret-without-key",
        with_notifications(removing(f"{HOOK}.webhook.urlSecretRef.key")),
        f"{HOOK}.webhook.urlSecretRef.key",
        "Required value",
    ),
    BadRelease(
        "notification-secret-in-another-namespace",
        with_notifications(setting(f"{HOOK}.webhook.urlSecretRef.namespace", "kube-system")),
        f"{HOOK}.webhook.urlSecretRef.namespace",
        f'unknown field "{HOOK}.webhook.urlSecretRef.namespace"',
        per_field_cause=False,
    ),
    BadRelease(
        "notification-secret-name-uppercase",
        with_notifications(setting(f"{HOOK}.webhook.urlSecretRef.name", "Slack")),
        f"{HOOK}.webhook.urlSecretRef.name",
        "should match",
    ),
    BadRelease(
        "two-notifications-to-one-secret-key",
        with_notifications(setting("spec.notifications[1].webhook.urlSecretRef.name", "slack-webhook")),
        "spec.notifications",
        "names the same Secret key twice",
    ),
    BadRelease(
        "11-notifications",
        setting(
            "spec.notifications",
            [
                {"webhook": {"urlSecretRef": {"name": f"s{i}", "key": "url"}}, "events": ["Failed"]}
                for i in range(11)
            ],
        ),
        "spec.notifications",
        "at most 10 items",
    ),
    BadRelease(
        "name-longer-than-63", setting("metadata.name", "s" * 64), "metadata.name", "at most 63 characters"
    ),
    BadRelease(
        "unserved-version",
        setting("apiVersion", "shepherd.dev/v1"),
        "apiVersion",
        'Release in version "v1" cannot be handled as a Release',
        per_field_cause=False,
    ),
    BadRelease("wrong-kind", setting("kind", "Rollout"), "kind", 'Invalid value: "Rollout": must be Release'),
    BadRelease("unknown-phase", setting("status", {"phase": "Done"}), "status.phase", '"Succeeded"'),
    BadRelease(
        "condition-time-not-rfc3339",
        setting(
            "status",
            {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Baked",
                        "message": "",
                        "lastTransitionTime": "now",
                    }
                ]
            },
        ),
        "status.conditions[0].lastTransitionTime",
        'must be of type date-time: "now"',
    ),
    BadRelease(
        "plan-start-not-a-time",
        setting("spec.plan", {"notBefore": "next tuesday"}),
        "spec.plan.notBefore",
        'must be of type date-time: "next tuesday"',
    ),
    BadRelease(
        "plan-start-without-a-time-zone",
        setting("spec.plan", {"notBefore": "2026-12-10T09:00:00"}),
        "spec.plan.notBefore",
        "should match",
    ),
    BadRelease(
        "plan-risk-unknown",
        setting("spec.plan", {"risk": "huge"}),
        "spec.plan.risk",
        'supported values: "low", "medium", "high"',
    ),
    BadRelease(
        "plan-summary-of-two-lines",
        setting("spec.plan", {"summary": "one\ntwo"}),
        "spec.plan.summary",
        "spec.plan.summary must be one line",
    ),
    BadRelease(
        "plan-change-without-title",
        setting("spec.plan", {"changes": [{"url": "https://tracker.example/SHOP-12"}]}),
        "spec.plan.changes[0].title",
        "Required value",
    ),
]
