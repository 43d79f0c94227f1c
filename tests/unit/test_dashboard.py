"""The chart's Grafana dashboard: valid JSON whose every query parses and asks only for what the operator
exports, with a panel for every metric it exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from shepherd.metrics import OperatorMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "shepherd" / "dashboards" / "shepherd.json"
# The series a metric family is exposed as, by type (the Prometheus text format); `_created` is left out.
SERIES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
# Grafana's own variables stand where PromQL has a duration; the dashboard's ($namespace) only in strings.
GRAFANA_DURATION = re.compile(r"\$__(rate_interval|interval|range)\b")


def exported() -> dict[str, str]:
    """Every series name the operator's registry exposes, to the name of its metric family."""
    return {
        family.name + suffix: family.name
        for family in OperatorMetrics().registry.collect()
        for suffix in SERIES[family.type]
    }


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)  # a collapsed row keeps its panels inside


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(GRAFANA_DURATION.sub("5m", expr)), visit)
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def test_every_query_parses_and_names_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    known = exported()
    queries = expressions(dashboard)

    assert queries, "the dashboard has queries"
    for expr in queries:
        assert metric_names(expr), f"a query without a metric: {expr}"
        assert metric_names(expr) <= set(known), f"not exported by the operator: {expr}"


def test_the_variables_query_an_exported_metric(dashboard: dict[str, Any]) -> None:
    queries = [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]

    assert [re.findall(r"label_values\((\w+)", q) for q in queries] == [
        ["shepherd_release_phase"],
        ["shepherd_release_phase"],
    ]
    assert "shepherd_release_phase" in exported()


def test_every_exported_metric_has_a_panel(dashboard: dict[str, Any]) -> None:
    known = exported()
    shown = {known[name] for expr in expressions(dashboard) for name in metric_names(expr)}

    assert shown == set(known.values())


def test_panels_have_unique_ids_and_titles_and_use_the_chosen_data_source(dashboard: dict[str, Any]) -> None:
    shown = [panel for panel in panels(dashboard) if panel["type"] != "row"]

    assert len({p["id"] for p in panels(dashboard)}) == len(list(panels(dashboard)))
    assert len({p["title"] for p in shown}) == len(shown)
    assert {json.dumps(p["datasource"]) for p in shown} == {
        json.dumps({"type": "prometheus", "uid": "${datasource}"})
    }
