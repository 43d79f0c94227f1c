"""The documentation: the generated reference is what the sources say today, every field, command, reason
and example is there, and what the hand-written pages name (metrics, chart values, alert queries) exists."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from test_dashboard import exported, metric_names

from helpers import unavailable
from shepherd import cli, docsgen, plugin
from shepherd.core.reasons import CATALOGUE

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "operator" / "shepherd"


@pytest.mark.parametrize("name", sorted(docsgen.pages(ROOT)))
def test_each_generated_reference_page_is_what_the_sources_say_today(name: str) -> None:
    committed = DOCS / "reference" / name
    generated = docsgen.pages(ROOT)[name]
    assert committed.exists(), f"docs/reference/{name} is missing: run `make docs-reference`"
    assert committed.read_text() == generated, f"docs/reference/{name} is stale: run `make docs-reference`"


def test_the_check_mode_finds_a_stale_page(tmp_path: Path) -> None:
    for source in (*docsgen.CRDS.values(), docsgen.VALUES_SCHEMA, docsgen.VALUES):
        (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / source, tmp_path / source)
    result = CliRunner().invoke(docsgen.main, ["--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert docsgen.stale(tmp_path) == []
    page = tmp_path / "docs" / "reference" / "metrics.md"
    page.write_text(page.read_text().replace("shepherd_leader", "shepherd_leading"))
    result = CliRunner().invoke(docsgen.main, ["--root", str(tmp_path), "--check"])
    assert result.exit_code == 1
    assert "metrics.md" in result.output and "make docs-reference" in result.output


def schema_paths(schema: dict[str, object], path: str = "") -> Iterator[str]:
    properties = schema.get("properties")
    for name, sub in (properties if isinstance(properties, dict) else {}).items():
        here = f"{path}.{name}" if path else name
        yield here
        yield from nested_paths(sub, here)


def nested_paths(schema: dict[str, object], path: str) -> Iterator[str]:
    yield from schema_paths(schema, path)
    for key, mark in (("items", "[]"), ("additionalProperties", "{}")):
        sub = schema.get(key)
        if isinstance(sub, dict):
            yield from nested_paths(sub, path + mark)


@pytest.mark.parametrize("page", sorted(docsgen.CRDS))
def test_every_field_of_the_crd_has_its_section(page: str) -> None:
    crd = yaml.safe_load((ROOT / docsgen.CRDS[page]).read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = (DOCS / "reference" / page).read_text()
    headings = set(re.findall(r"^###? (\S+) \{ #", text, flags=re.MULTILINE))
    fields = {p for p in schema_paths(schema) if p not in ("apiVersion", "kind")}
    assert fields and fields == headings
    for rule in rules(schema):
        assert docsgen.prose(rule["message"]) in text


def rules(schema: object) -> Iterator[dict[str, str]]:
    """Every x-kubernetes-validations rule in a schema."""
    if isinstance(schema, dict):
        yield from schema.get("x-kubernetes-validations") or []
        for value in schema.values():
            yield from rules(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from rules(item)


@pytest.mark.parametrize(
    ("command", "name", "page"),
    [(cli.main, "shepherd", "shepherd.md"), (plugin.main, "kubectl release", "kubectl-release.md")],
)
def test_every_command_and_option_is_in_the_reference(command: click.Command, name: str, page: str) -> None:
    text = (DOCS / "reference" / page).read_text()
    for ctx, _aliases in docsgen.commands(command, name):
        assert f"## {ctx.command_path} {{" in text
        for param in ctx.command.params:
            if isinstance(param, click.Option):
                assert all(opt in text for opt in param.opts), (ctx.command_path, param.opts)


def test_every_reason_and_event_is_in_the_reference() -> None:
    text = (DOCS / "reference" / "reasons.md").read_text()
    assert CATALOGUE
    for documented in CATALOGUE:
        assert f"| `{documented.name}` |" in text


def reason_argument(call: ast.Call) -> ast.expr | None:
    """The reason given to Event(type, reason, message) or Condition(type, status, reason, message)."""
    name = call.func.id if isinstance(call.func, ast.Name) else None
    position = {"Event": 1, "Condition": 2}.get(name or "")
    if position is None or len(call.args) <= position:
        return None
    return call.args[position]


def test_the_operator_names_reasons_only_through_core_reasons() -> None:
    literal = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "lab" in path.relative_to(PACKAGE).parts or path.name == "reasons.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            argument = reason_argument(node) if isinstance(node, ast.Call) else None
            if isinstance(argument, ast.Constant | ast.JoinedStr):
                literal.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert literal == [], "reasons written as literals; name them in shepherd/core/reasons.py"


ALERTS = DOCS / "operations" / "shepherd-alerts.yaml"


def test_the_alert_rules_name_only_metrics_the_operator_exports() -> None:
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    series = exported()
    assert rules
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names and names <= set(series), (rule["alert"], names - set(series))


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (`make prometheus` installs it with the Prometheus server)")
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_hand_written_metrics_table_names_every_metric_and_no_other() -> None:
    text = (DOCS / "operations" / "metrics.md").read_text()
    table = text[: text.index("## What to chart")]
    named = set(re.findall(r"`(shepherd_[a-z_]+)", table))
    families = set(exported().values())
    assert {n.removesuffix("_total") for n in named} == families


def test_the_install_guide_names_only_values_the_chart_takes() -> None:
    schema = yaml.safe_load((ROOT / docsgen.VALUES_SCHEMA).read_text())
    values = {path for path, _ in docsgen.values(schema, schema)}
    text = (DOCS / "getting-started" / "install.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    named = set()
    for row in rows:
        first, *others = re.findall(r"`([a-zA-Z.]+)`", row.split("|")[1])
        parent = first.rpartition(".")[0]  # `leaderElection.leaseDuration` / `renewDeadline`: siblings
        named |= {first, *(o if "." in o or not parent else f"{parent}.{o}" for o in others)}
    assert rows and named <= values, named - values


def test_every_example_is_shown_from_its_file() -> None:
    text = (DOCS / "reference" / "examples.md").read_text()
    examples = {str(p.relative_to(ROOT)) for p in (ROOT / "examples").rglob("*.yaml")}
    assert examples == set(re.findall(r'--8<-- "(examples/[^"]+)"', text))


def test_the_readme_shows_examples_hello_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)
    assert block is not None
    example = (ROOT / "examples" / "hello.yaml").read_text()
    assert block.group(1) == "".join(line for line in example.splitlines(True) if not line.startswith("#"))
