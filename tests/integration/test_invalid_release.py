"""Story: bad YAML never takes down running workloads, and one bad Release never stops the others."""

from __future__ import annotations

import pytest
from cluster import Cluster, quickstart_release


def test_kubectl_apply_of_a_bad_release_fails_naming_the_field(cluster: Cluster) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    bad = quickstart_release("1.1.0")
    bad["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 50}, {"setWeight": 20}]
    import yaml

    result = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert result.returncode != 0
    assert "spec.strategy.canary.steps" in result.stderr
    assert "must not decrease" in result.stderr
    assert cluster.status()["version"] == "1.0.0"
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}


@pytest.mark.local_api(validate_custom_object=None)
def test_a_release_the_schema_missed_stalls_as_invalid_spec_and_others_go_on(cluster: Cluster) -> None:
    """An API server without the CEL rules (an older CRD) lets a bad spec through: the operator holds it."""
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    bad = quickstart_release("1.1.0")
    bad["spec"]["components"][1]["name"] = bad["spec"]["components"][0]["name"]
    cluster.apply(bad)
    cluster.kubectl("wait", "--for=condition=Stalled", "release/shop", "--timeout=45s")
    status = cluster.status()
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "InvalidSpec"
    assert "spec.components[1].name" in stalled["message"]
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}, "running workloads untouched"
    cluster.wait_event("InvalidSpec")

    other = quickstart_release("2.0.0")
    other["metadata"]["name"] = "billing"
    cluster.apply(other)
    cluster.wait_phase("Succeeded", name="billing")
