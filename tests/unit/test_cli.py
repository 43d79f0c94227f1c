"""`shepherd lint` and the argument checks of `shepherd run`."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import kubernetes
import pytest
import yaml
from click.testing import CliRunner
from simulation import ordered_spec, release_spec

from shepherd.cli import main
from shepherd.runner import OperatorOptions, run_operator
from shepherd.sharding import Shard

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_lint_accepts_the_examples() -> None:
    examples = sorted(EXAMPLES.glob("*.yaml"))
    result = CliRunner().invoke(main, ["lint", *map(str, examples)])
    assert result.exit_code == 0, result.output
    assert f"{len(examples)} file(s) OK" in result.output


def test_lint_names_the_field_and_fails(tmp_path: Path) -> None:
    spec = release_spec()
    spec["components"][0]["replicas"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "shepherd.dev/v1alpha1",
                "kind": "Release",
                "metadata": {"name": "shop"},
                "spec": spec,
            }
        )
    )
    result = CliRunner().invoke(main, ["lint", str(path)])
    assert result.exit_code == 1
    assert "Release shop: spec.components[0].replicas" in result.output


def test_lint_finds_a_dependency_cycle_the_crd_cannot_express(tmp_path: Path) -> None:
    spec = ordered_spec()
    spec["components"][1]["dependsOn"] = ["frontend"]
    path = tmp_path / "cycle.yaml"
    release = {"apiVersion": "shepherd.dev/v1alpha1", "kind": "Release", "metadata": {"name": "shop"}}
    path.write_text(yaml.safe_dump({**release, "spec": spec}))
    result = CliRunner().invoke(main, ["lint", str(path)])
    assert result.exit_code == 1
    assert "Release shop: spec.components[0].dependsOn: dependsOn forms a cycle frontend -> backend" in (
        result.output
    )


def release_document(name: str, replicas: int, weights: list[int]) -> dict:
    spec = release_spec()
    spec["components"][1]["replicas"] = replicas
    spec["strategy"]["canary"]["steps"] = [{"setWeight": weight} for weight in weights]
    return {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "Release",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_lint_warns_of_a_weight_the_replicas_cannot_represent_without_failing(tmp_path: Path) -> None:
    path = tmp_path / "coarse.yaml"
    path.write_text(
        yaml.safe_dump_all([release_document("shop", 2, [25, 50]), release_document("exact", 4, [25])])
    )
    result = CliRunner().invoke(main, ["lint", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.count("warning:") == 1, "api has 4 replicas, 50% of 2 is 1 pod: only one is inexact"
    warning = (
        "Release shop: spec.strategy.canary.steps[0].setWeight: setWeight 25 with 2 replicas of component "
        "web gives the canary 50% of the pods (1 of 2); set replicas to a multiple of 4, or route by "
        "Gateway API"
    )
    assert f"{path}: warning: {warning}" in result.output
    assert "1 file(s) OK, 1 warning(s)" in result.output


def test_lint_counts_only_problems_and_warns_nothing_of_an_invalid_release(tmp_path: Path) -> None:
    broken = release_document("broken", 2, [25])
    broken["spec"]["components"][0]["replicas"] = 0
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump_all([broken, release_document("coarse", 2, [25])]))
    result = CliRunner().invoke(main, ["lint", str(path)])
    assert result.exit_code == 1
    assert "1 problem(s) found" in result.output
    assert "Release broken: spec.components[0].replicas" in result.output
    assert "warning: Release coarse:" in result.output and "warning: Release broken" not in result.output


def test_lint_reports_broken_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("kind: [Release\n")
    result = CliRunner().invoke(main, ["lint", str(path)])
    assert result.exit_code == 1 and "not valid YAML" in result.output


def test_run_rejects_a_bad_resync() -> None:
    result = CliRunner().invoke(main, ["run", "-A", "--standalone", "--resync", "soon"])
    assert result.exit_code == 2
    assert "--resync" in result.output and "duration" in result.output


def test_run_rejects_a_renew_deadline_as_long_as_the_lease() -> None:
    result = CliRunner().invoke(main, ["run", "-A", "--leader-elect", "--lease-duration=10s"])
    assert result.exit_code == 2
    assert "--renew-deadline" in result.output and "shorter than the lease duration" in result.output


def test_run_rejects_a_lease_of_part_of_a_second() -> None:
    result = CliRunner().invoke(
        main, ["run", "-A", "--leader-elect", "--lease-duration=1500ms", "--renew-deadline=1s"]
    )
    assert result.exit_code == 2
    assert "--lease-duration" in result.output and "whole number of seconds" in result.output


def test_run_rejects_a_readiness_endpoint_without_a_port() -> None:
    result = CliRunner().invoke(main, ["run", "-A", "--standalone", "--readiness=http://0.0.0.0/readyz"])
    assert result.exit_code == 2
    assert "--readiness" in result.output and "http://0.0.0.0:8080/healthz" in result.output


def test_run_refuses_to_start_without_a_safe_mode_naming_both() -> None:
    result = CliRunner().invoke(main, ["run", "-A"])
    assert result.exit_code == 2
    assert "--leader-elect" in result.output and "--standalone" in result.output


def test_the_operator_refuses_options_without_a_safe_mode_naming_both() -> None:
    with pytest.raises(ValueError, match=r"leader_election.*standalone") as refused:
        asyncio.run(run_operator(kubernetes.client.Configuration(), OperatorOptions()))
    assert "--leader-elect" in str(refused.value) and "--standalone" in str(refused.value)


@pytest.mark.parametrize("mode", ["--standalone", "--leader-elect"])
def test_run_starts_in_either_safe_mode(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    options = started_options(monkeypatch, mode)

    assert options.standalone == (mode == "--standalone")
    assert (options.leader_election is not None) == (mode == "--leader-elect")


def test_lint_reports_a_misspelt_kind_of_shepherds_group_but_not_other_kinds(tmp_path: Path) -> None:
    documents = [
        {
            "apiVersion": "shepherd.dev/v1alpha1",
            "kind": "Relase",
            "metadata": {"name": "shop"},
            "spec": release_spec(),
        },
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop"}, "spec": {"ports": []}},
    ]
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    result = CliRunner().invoke(main, ["lint", str(path)])
    assert result.exit_code == 1
    assert 'Release shop: kind: Invalid value: "Relase": must be Release' in result.output
    assert "Service" not in result.output


@pytest.mark.parametrize(
    ("args", "flag", "message"),
    [
        pytest.param(["--shards=0"], "--shards", "must be 1 or more, got 0", id="no-shards"),
        pytest.param(["--shards=3"], "--shard-index", "is required with --shards 3", id="index-missing"),
        pytest.param(
            ["--shards=3", "--shard-index=3"],
            "--shard-index",
            "must be 0 to 2 with --shards 3",
            id="too-high",
        ),
        pytest.param(["--shard-index=1"], "--shard-index", "must be 0 with --shards 1", id="unsharded"),
        pytest.param(["--shards=two"], "--shards", "'two' is not a valid integer", id="not-a-number"),
    ],
)
def test_run_refuses_a_shard_that_cannot_exist_naming_the_flag(
    args: list[str], flag: str, message: str
) -> None:
    result = CliRunner().invoke(main, ["run", "-A", "--leader-elect", *args])
    assert result.exit_code == 2
    assert re.search(f"Invalid value for '?{flag}'?: ", result.output) and message in result.output


def started_options(monkeypatch: pytest.MonkeyPatch, *args: str) -> OperatorOptions:
    """The options `shepherd run` would start the operator with."""
    started: list[OperatorOptions] = []

    async def run_until_signalled(configuration: object, options: OperatorOptions) -> None:
        started.append(options)

    monkeypatch.setattr("shepherd.cli.load_configuration", lambda *_: kubernetes.client.Configuration())
    monkeypatch.setattr("shepherd.cli._run_until_signalled", run_until_signalled)
    result = CliRunner().invoke(main, ["run", "-A", *args])
    assert result.exit_code == 0, result.output
    (options,) = started
    return options


def test_run_leader_elects_a_shard_on_the_shards_own_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    options = started_options(
        monkeypatch, "--leader-elect", "--lease-name=ops", "--shards=3", "--shard-index=2"
    )

    assert options.shard == Shard(2, 3)
    assert options.leader_election is not None
    assert options.leader_election.name == "ops-shard-2-of-3"


def test_run_is_one_shard_on_the_named_lease_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    options = started_options(monkeypatch, "--leader-elect", "--lease-name=ops")

    assert options.shard == Shard(0, 1)
    assert options.leader_election is not None and options.leader_election.name == "ops"
