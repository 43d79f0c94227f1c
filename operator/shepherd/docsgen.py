"""The reference pages of the documentation site, generated from the sources of truth, never written by hand.

- the fields of Release, ReleaseApproval and ReleasePolicy: from the CRDs in crds/;
- the `shepherd` and `kubectl release` commands: from their click definitions;
- the operator's metrics: from the registry of OperatorMetrics;
- reasons and Events: from shepherd.core.reasons and the phases;
- the Helm chart's values: from charts/shepherd/values.schema.json, defaults from values.yaml;
- the examples: each file of examples/ included as it is, under its opening comment.

`python -m shepherd.docsgen` (`make docs-reference`) rewrites them under docs/reference/; `--check` only says
which are stale. It lives in the package so that it imports what it documents like any module, and ruff and
mypy check it with the rest.
"""

from __future__ import annotations

import html
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import click
import yaml

from shepherd import cli, plugin
from shepherd.core.machine import WARNING_PHASES
from shepherd.core.reasons import CATALOGUE
from shepherd.core.status import Phase
from shepherd.metrics import OperatorMetrics

REFERENCE = Path("docs/reference")
CRDS = {
    "release.md": "crds/release.yaml",
    "releaseapproval.md": "crds/releaseapproval.yaml",
    "releasepolicy.md": "crds/releasepolicy.yaml",
}
VALUES_SCHEMA = "charts/shepherd/values.schema.json"
VALUES = "charts/shepherd/values.yaml"


def banner(source: str) -> str:
    return (
        f"<!-- Generated from {source} by `make docs-reference` (shepherd/docsgen.py). Do not edit: "
        "change the source and run it again. -->\n\n"
    )


# --- Markdown helpers --------------------------------------------------------------------------------


def code(text: str) -> str:
    """An inline code span that holds any text, backticks included."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    return f"{fence}{padded}{fence}"


def prose(text: str) -> str:
    """Text from a schema or a help string, shown as written: nothing in it is taken for Markdown or HTML."""
    escaped = html.escape(" ".join(text.split()), quote=False)
    return re.sub(r"([\\`*_\[\]|#])", r"\\\1", escaped)


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def anchor(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.replace("[]", "").replace("{}", "").lower()).strip("-")


# --- custom resources --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    path: str
    schema: Mapping[str, Any]
    required: bool


def fields(schema: Mapping[str, Any], path: str = "") -> Iterator[Field]:
    """Every field under `schema`, depth first in the schema's own order: lists as [], maps as {}."""
    required = set(schema.get("required") or ())
    for name, sub in (schema.get("properties") or {}).items():
        here = f"{path}.{name}" if path else name
        yield Field(here, sub, name in required)
        yield from nested(sub, here)


def nested(schema: Mapping[str, Any], path: str) -> Iterator[Field]:
    yield from fields(schema, path)
    items = schema.get("items")
    if isinstance(items, Mapping):
        yield from nested(items, f"{path}[]")
    values = schema.get("additionalProperties")
    if isinstance(values, Mapping):
        yield from nested(values, f"{path}{{}}")


def type_of(schema: Mapping[str, Any]) -> str:
    kind = str(schema.get("type") or "any")
    if schema.get("x-kubernetes-int-or-string"):
        kind = "integer or string"
    if kind == "array" and isinstance(schema.get("items"), Mapping):
        return f"array of {type_of(schema['items'])}"
    values = schema.get("additionalProperties")
    if kind == "object" and isinstance(values, Mapping) and not schema.get("properties"):
        return f"map of {type_of(values)}"
    if schema.get("format"):
        kind += f" ({schema['format']})"
    return kind


LIMITS = (
    ("minimum", "minimum"),
    ("maximum", "maximum"),
    ("exclusiveMinimum", "exclusive minimum"),
    ("exclusiveMaximum", "exclusive maximum"),
    ("minLength", "min length"),
    ("maxLength", "max length"),
    ("minItems", "min items"),
    ("maxItems", "max items"),
    ("minProperties", "min properties"),
    ("maxProperties", "max properties"),
)


def constraints(schema: Mapping[str, Any]) -> list[str]:
    said = [f"{label} {code(json.dumps(schema[key]))}" for key, label in LIMITS if key in schema]
    if "pattern" in schema:
        said.append(f"pattern {code(str(schema['pattern']))}")
    if schema.get("uniqueItems"):
        said.append("items unique")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = ", ".join(code(k) for k in schema.get("x-kubernetes-list-map-keys") or ())
        said.append(f"a list keyed by {keys}")
    elif list_type == "set":
        said.append("a set: no item twice")
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        said.append("any fields are kept")
    return said


def facts(schema: Mapping[str, Any]) -> list[str]:
    said = []
    if "default" in schema:
        said.append(f"default {code(json.dumps(schema['default']))}")
    if "enum" in schema:
        said.append("one of " + ", ".join(code(str(v)) for v in schema["enum"]))
    return said + constraints(schema)


def members(schema: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The schemas of a list's items and a map's values, which have no field of their own."""
    return [
        (label, schema[key])
        for key, label in (("items", "each item"), ("additionalProperties", "each value"))
        if isinstance(schema.get(key), Mapping)
    ]


def field_block(field: Field, level: int = 3) -> str:
    schema = field.schema
    said = [code(type_of(schema)), *(["**required**"] if field.required else []), *facts(schema)]
    for label, member in members(schema):
        said += [f"{label}: {fact}" for fact in facts(member)]
    parts = [f"{'#' * level} {field.path} {{ #{anchor(field.path)} }}\n", " · ".join(said) + "\n"]
    if schema.get("description"):
        parts.append(prose(str(schema["description"])) + "\n")
    rules = [*(schema.get("x-kubernetes-validations") or [])]
    for _label, member in members(schema):
        rules += member.get("x-kubernetes-validations") or []
    if rules:
        parts.append("Validation rules (CEL), with the message `kubectl apply` shows:\n")
        for rule in rules:
            message = rule.get("message") or rule.get("messageExpression") or ""
            parts.append(f"- {prose(str(message))}  \n  {code(' '.join(str(rule['rule']).split()))}")
        parts[-1] += "\n"
    return "\n".join(parts)


def crd_page(root: Path, source: str) -> str:
    crd = yaml.safe_load((root / source).read_text())
    names = crd["spec"]["names"]
    kind = names["kind"]
    out = [banner(source), f"# {kind}\n"]
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        scope = crd["spec"]["scope"].lower()
        short = ", ".join(code(n) for n in names.get("shortNames") or ()) or "none"
        out.append(
            f"`{crd['spec']['group']}/{version['name']}`, {scope}; plural {code(names['plural'])}, "
            f"short names {short}.\n"
        )
        if schema.get("description"):
            out.append(prose(str(schema["description"])) + "\n")
        whole = schema.get("x-kubernetes-validations") or []
        if whole:
            out.append(f"Rules across the whole {kind} (CEL), with the message `kubectl apply` shows:\n")
            out.append(
                "\n".join(f"- {prose(r['message'])}  \n  {code(' '.join(r['rule'].split()))}" for r in whole)
            )
            out[-1] += "\n"
        columns = version.get("additionalPrinterColumns") or []
        if columns:
            out.append("## Columns of `kubectl get`\n")
            out.append(
                table(
                    ["Column", "Type", "Value", "Description"],
                    [
                        [c["name"], c["type"], code(c["jsonPath"]), prose(c.get("description", ""))]
                        for c in columns
                    ],
                )
            )
        groups: dict[str, list[Field]] = {}  # by top-level field
        for field in fields(schema):
            if field.path in ("apiVersion", "kind"):
                continue
            groups.setdefault(field.path.split(".")[0].split("[")[0], []).append(field)
        for top_level, *below in groups.values():  # a top-level field first, then what it holds
            out += [field_block(top_level, level=2), *(field_block(f) for f in below)]
    return "\n".join(out)


# --- commands ----------------------------------------------------------------------------------------


def subcommands(group: click.Group) -> list[tuple[str, click.Command, list[str]]]:
    """Each subcommand once, by its own name, with the other names it is registered under."""
    names: dict[int, list[str]] = {}
    for name, sub in group.commands.items():
        names.setdefault(id(sub), []).append(name)
    chosen = []
    for name, sub in sorted(group.commands.items()):
        registered = names[id(sub)]
        if name == (sub.name if sub.name in registered else registered[0]):
            chosen.append((name, sub, [n for n in registered if n != name]))
    return chosen


def commands(
    command: click.Command, name: str, parent: click.Context | None = None, aliases: Sequence[str] = ()
) -> Iterator[tuple[click.Context, Sequence[str]]]:
    """Every command under `command`, depth first."""
    ctx = click.Context(command, info_name=name, parent=parent, **command.context_settings)
    yield ctx, aliases
    if isinstance(command, click.Group):
        for sub_name, sub, other_names in subcommands(command):
            yield from commands(sub, sub_name, ctx, other_names)


def command_section(ctx: click.Context, aliases: Sequence[str]) -> str:
    command = ctx.command
    title = ctx.command_path
    out = [
        f"## {title} {{ #{anchor(title)} }}\n",
        f"```\nUsage: {' '.join([title, *command.collect_usage_pieces(ctx)])}\n```\n",
    ]
    if aliases and ctx.parent is not None:
        out.append("Also: " + ", ".join(code(f"{ctx.parent.command_path} {a}") for a in aliases) + ".\n")
    if command.help:
        out.append(prose(inspect.cleandoc(command.help).replace("\b", "")) + "\n")
    rows = []
    for param in command.get_params(ctx):
        record = None if isinstance(param, click.Argument) else param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        rows.append([code(names), prose(help_text)])
    if rows:
        out.append(table(["Option", "Description"], rows))
    if isinstance(command, click.Group):
        listed = [
            f"[{ctx.command_path} {n}](#{anchor(ctx.command_path + ' ' + n)})"
            for n, _, _ in subcommands(command)
        ]
        out.append("Commands: " + ", ".join(listed) + ".\n")
    return "\n".join(out)


def cli_page(group: click.Command, name: str, source: str, intro: str) -> str:
    sections = [command_section(ctx, aliases) for ctx, aliases in commands(group, name)]
    return banner(source) + f"# {name}\n\n{intro}\n\n" + "\n".join(sections)


# --- metrics ----------------------------------------------------------------------------------------

SERIES_SUFFIX = {"counter": "_total", "histogram": "_bucket, _sum, _count"}


def metrics_page() -> str:
    rows = []
    for family in OperatorMetrics().registry.collect():
        labels = getattr(family, "_labelnames", None)
        if labels is None:  # a plain prometheus_client metric: its labels are those of its samples
            labels = sorted({k for s in family.samples for k in s.labels if k not in ("le", "quantile")})
        exposed = family.name + ("_total" if family.type == "counter" else "")
        rows.append(
            [
                code(exposed),
                family.type,
                ", ".join(code(label) for label in labels) or "none",
                prose(family.documentation),
            ]
        )
    intro = (
        "What the operator serves on `/metrics` (`shepherd run --metrics-port`). A histogram's series are "
        "`<name>_bucket` (label `le`), `<name>_sum` and `<name>_count`. See "
        "[Metrics and alerts](../operations/metrics.md) for what to chart and alert on.\n"
    )
    return (
        banner("operator/shepherd/metrics.py (OperatorMetrics)")
        + "# Metrics\n\n"
        + intro
        + "\n"
        + table(["Metric", "Type", "Labels", "Help"], rows)
    )


# --- reasons ----------------------------------------------------------------------------------------


def reasons_page() -> str:
    reasons = [d for d in CATALOGUE if d.kind == "reason"]
    events = [d for d in CATALOGUE if d.kind == "event"]
    phase_rows = [
        [
            code(phase.value),
            "Warning" if phase in WARNING_PHASES else "Normal",
            f"The Release entered phase {phase.value}; the message starts with the reason (the table above).",
        ]
        for phase in Phase
    ]
    return (
        banner("operator/shepherd/core/reasons.py and the phases of core/status.py")
        + "# Reasons and Events\n\n"
        + "What `status.reason`, the conditions' `reason` and the Events on a Release "
        + "(`kubectl describe release`, `kubectl get events --field-selector involvedObject.name=shop`) "
        + "can say. While a revision is in flight, `Ready` and `Reconciling` carry the phase as their "
        + "reason; when it stops (`RolledBack`, `Failed`) or the spec is invalid, `Ready=False` and "
        + "`Stalled=True` carry the reason below. See [Status and conditions](../concepts/status.md).\n\n"
        + "## Reasons\n\n"
        + table(["Reason", "Where", "Meaning"], [[code(d.name), d.where, d.meaning] for d in reasons])
        + "\n## Events\n\n"
        + "Every phase transition posts an Event whose reason is the phase entered:\n\n"
        + table(["Reason", "Type", "When"], phase_rows)
        + "\nAnd these:\n\n"
        + table(["Reason", "Type", "When"], [[code(d.name), d.where, d.meaning] for d in events])
    )


# --- Helm values ------------------------------------------------------------------------------------


def resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """`$ref` to #/definitions/... merged under the schema's own keywords (its description wins)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return schema
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**resolve(target, root), **{k: v for k, v in schema.items() if k != "$ref"}}


def json_type(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    schema = resolve(schema, root)
    if "oneOf" in schema or "anyOf" in schema:
        return " or ".join(json_type(s, root) for s in schema.get("oneOf") or schema.get("anyOf") or ())
    kind = schema.get("type", "any")
    kind = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if kind == "array" and isinstance(schema.get("items"), Mapping):
        return f"array of {json_type(schema['items'], root)}"
    values = schema.get("additionalProperties")
    if kind == "object" and isinstance(values, Mapping) and not schema.get("properties"):
        return f"map of {json_type(values, root)}"
    return kind


def json_rules(schema: Mapping[str, Any], root: Mapping[str, Any]) -> list[str]:
    schema = resolve(schema, root)
    said = []
    if "enum" in schema:
        said.append("one of " + ", ".join(code(json.dumps(v)) for v in schema["enum"]))
    said += constraints(schema)
    for choice in schema.get("oneOf") or schema.get("anyOf") or ():
        rules = json_rules(choice, root)
        if rules:
            said.append(f"as {json_type(choice, root)}: " + ", ".join(rules))
    if isinstance(schema.get("items"), Mapping):
        said += [f"items: {r}" for r in json_rules(schema["items"], root)]
    return said


def values(schema: Mapping[str, Any], root: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Any]]:
    for name, sub in (resolve(schema, root).get("properties") or {}).items():
        here = f"{path}.{name}" if path else name
        yield here, sub
        yield from values(sub, root, here)


def default_of(defaults: Any, path: str) -> str:
    for part in path.split("."):
        if not isinstance(defaults, Mapping) or part not in defaults:
            return ""
        defaults = defaults[part]
    if isinstance(defaults, Mapping) and defaults:
        return "" if all(isinstance(v, Mapping) for v in defaults.values()) else code(json.dumps(defaults))
    return code(json.dumps(defaults))


def values_page(root: Path) -> str:
    schema = json.loads((root / VALUES_SCHEMA).read_text())
    defaults = yaml.safe_load((root / VALUES).read_text())
    rows = []
    for path, sub in values(schema, schema):
        resolved = resolve(sub, schema)
        rows.append(
            [
                code(path),
                json_type(sub, schema),
                default_of(defaults, path),
                ", ".join(json_rules(sub, schema)),
                prose(str(resolved.get("description", ""))),
            ]
        )
    intro = (
        "Every value the chart takes, as `values.schema.json` defines it: `helm install` and `helm upgrade` "
        "refuse anything else, naming the value. Defaults are those of `values.yaml`. See "
        "[Installing with Helm](../getting-started/install.md).\n"
    )
    return (
        banner(f"{VALUES_SCHEMA} and {VALUES}")
        + "# Helm values\n\n"
        + intro
        + "\n"
        + table(["Value", "Type", "Default", "Allowed", "Description"], rows)
    )


# --- examples -------------------------------------------------------------------------------------

EXAMPLES = "examples"


def summary(text: str) -> str:
    """An example's opening comment up to its first blank comment line, as Markdown: its prose, and the
    lines it indents (`#   kubectl ...`) as code blocks, in their order."""
    runs: list[tuple[bool, list[str]]] = []  # (indented, lines)
    for line in text.splitlines():
        if not line.startswith("#") or not line.strip("# "):
            break
        body = line[1:]
        indented = body.startswith("   ")
        if not runs or runs[-1][0] != indented:
            runs.append((indented, []))
        runs[-1][1].append(body[3:].rstrip() if indented else body.strip())
    return "\n\n".join(
        "```\n" + "\n".join(lines) + "\n```" if indented else commented(" ".join(lines))
        for indented, lines in runs
    )


def commented(text: str) -> str:
    """A comment's own Markdown (its `code` spans), with nothing outside them taken for HTML."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else html.escape(p, quote=False) for p in parts)


def examples_page(root: Path) -> str:
    out = [
        banner("the opening comment of each file in examples/"),
        "# Examples\n",
        "Every manifest of `examples/`, shown from the file itself: `shepherd lint examples/*.yaml` accepts "
        "them all (a unit test runs it). Copy one and change its names, images and durations.\n",
    ]
    for path in sorted((root / EXAMPLES).rglob("*.yaml"), key=lambda p: (len(p.parts), p)):
        name = path.relative_to(root / EXAMPLES).as_posix()
        out.append(f"## {name}\n\n{summary(path.read_text())}\n")
        out.append(f'```yaml\n--8<-- "{EXAMPLES}/{name}"\n```\n')
    return "\n".join(out)


# --- the pages --------------------------------------------------------------------------------------


def pages(root: Path) -> dict[str, str]:
    """Every generated page, by its path under docs/reference/."""
    made: dict[str, Callable[[], str]] = {
        name: partial(crd_page, root, source) for name, source in CRDS.items()
    }
    made["shepherd.md"] = lambda: cli_page(
        cli.main,
        "shepherd",
        "operator/shepherd/cli.py",
        "The operator's command: `shepherd run` is what the chart's Deployment runs.",
    )
    made["kubectl-release.md"] = lambda: cli_page(
        plugin.main,
        "kubectl release",
        "operator/shepherd/plugin.py",
        "The kubectl plugin, installed as the `kubectl-release` executable. `-n`, `--context` and "
        "`--kubeconfig` may also be given after the subcommand, as with kubectl.",
    )
    made["metrics.md"] = metrics_page
    made["reasons.md"] = reasons_page
    made["helm-values.md"] = partial(values_page, root)
    made["examples.md"] = partial(examples_page, root)
    return {name: page().rstrip("\n") + "\n" for name, page in made.items()}


def stale(root: Path) -> list[str]:
    return [
        name
        for name, text in pages(root).items()
        if not (root / REFERENCE / name).exists() or (root / REFERENCE / name).read_text() != text
    ]


@click.command()
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
@click.option("--check", is_flag=True, help="Write nothing; fail if a page differs from what is generated.")
def main(root: Path, check: bool) -> None:
    """Write the generated reference pages under docs/reference/."""
    if check:
        outdated = stale(root)
        if outdated:
            click.echo(f"stale: {', '.join(outdated)}: run `make docs-reference`", err=True)
            sys.exit(1)
        return
    (root / REFERENCE).mkdir(parents=True, exist_ok=True)
    for name, text in pages(root).items():
        (root / REFERENCE / name).write_text(text)
        click.echo(f"wrote {REFERENCE / name}")


if __name__ == "__main__":
    main()
