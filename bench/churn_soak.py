"""A churn soak on the real control plane: Releases created and deleted in cycles, and what stays behind.

One operator replica (`shepherd run` with the chart's arguments and ServiceAccount token) and one steady
Release in a namespace of its own. Each cycle creates N Releases (gated by an approval nobody gives, so
each is decided and written once, and waits), waits until the operator has written every one's status,
deletes them all, and waits until /metrics names none of them. Before the first cycle and after each:
the operator's RSS and the size of /metrics. The soak goes on for --minutes; reported is how far RSS and
/metrics ended from where they started (both should return to within 10%), and how far RSS ended from
where the first cycle left it.

Needs `make cluster-binaries`. With --smoke: 20 Releases, 2 cycles.
Run: make bench   (or .venv/bin/python bench/churn_soak.py [--releases 2000] [--minutes 20])
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes

from benchlib import REPO, Process, admin_client, need_control_plane, parser, wait_for, wait_until_admitted
from shepherd.lab.cluster import OperatorProcess, install_chart
from shepherd.lab.controlplane import ControlPlane

GROUP, VERSION, PLURAL = "shepherd.dev", "v1alpha1", "releases"
NAMESPACES = 10
PREFIX = "churn-"
STEADY = "steady"  # the namespace of the one Release that stays


def release(name: str, namespace: str) -> dict[str, Any]:
    container = {"name": "app", "image": "registry.example/app:1"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Release",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "version": "1",
            "components": [{"name": "app", "replicas": 1, "template": {"spec": {"containers": [container]}}}],
            "gates": [{"name": "sign-off", "approval": {"count": 1}}],
        },
    }


def metrics_text(operator: OperatorProcess) -> str:
    """The operator's /metrics ("" while it does not serve them yet)."""
    port = next(a.split("=", 1)[1] for a in operator.args if a.startswith("--metrics-port="))
    try:
        return str(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode())
    except urllib.error.URLError:
        return ""


def all_written(custom: Any, count: int) -> bool:
    done = 0
    for index in range(NAMESPACES):
        items = custom.list_namespaced_custom_object(GROUP, VERSION, f"{PREFIX}{index}", PLURAL)["items"]
        done += sum(1 for item in items if (item.get("status") or {}).get("phase"))
    return done == count


def main() -> int:
    command = parser(__doc__)
    command.add_argument("--releases", type=int, help="Releases per cycle (default 2000)")
    command.add_argument("--minutes", type=float, help="how long the soak goes on (default 20)")
    options = command.parse_args()
    count = options.releases or (20 if options.smoke else 2000)
    minutes = options.minutes if options.minutes is not None else (0.0 if options.smoke else 20.0)
    least_cycles = 2 if options.smoke else 1
    workdir = Path(tempfile.mkdtemp(prefix="shepherd-churn-"))
    with (
        ControlPlane(need_control_plane(), workdir, audit=False) as plane,
        admin_client(plane.kubeconfig) as admin,
    ):
        chart = install_chart(plane, REPO / "charts" / "shepherd")
        core: Any = kubernetes.client.CoreV1Api(admin)
        custom: Any = kubernetes.client.CustomObjectsApi(admin)
        for index in range(NAMESPACES):
            core.create_namespace({"metadata": {"name": f"{PREFIX}{index}"}})
        names = [(f"{PREFIX}{i % NAMESPACES}", f"app-{i}") for i in range(count)]
        with OperatorProcess(plane, chart, workdir) as operator:
            assert operator.popen is not None
            process = Process(operator.popen.pid)
            core.create_namespace({"metadata": {"name": STEADY}})
            steady = release("steady", STEADY)
            wait_until_admitted(custom, steady)
            custom.create_namespaced_custom_object(GROUP, VERSION, STEADY, PLURAL, steady)
            wait_for("the steady Release's series", lambda: 'release="steady"' in metrics_text(operator), 60)
            rss = [process.rss_mib()]
            sizes = [len(metrics_text(operator))]
            started, cycles = time.monotonic(), 0
            while cycles < least_cycles or time.monotonic() - started < minutes * 60:
                with ThreadPoolExecutor(max_workers=8) as pool:
                    list(
                        pool.map(
                            lambda key: custom.create_namespaced_custom_object(
                                GROUP, VERSION, key[0], PLURAL, release(key[1], key[0])
                            ),
                            names,
                        )
                    )
                wait_for(f"{count} statuses written", lambda: all_written(custom, count), 120 + count)
                for index in range(NAMESPACES):
                    custom.delete_collection_namespaced_custom_object(
                        GROUP, VERSION, f"{PREFIX}{index}", PLURAL
                    )
                wait_for(
                    "the operator to forget them",
                    lambda: 'release="app-' not in metrics_text(operator),
                    120 + count / 10,
                )
                cycles += 1
                rss.append(process.rss_mib())
                sizes.append(len(metrics_text(operator)))
                print(f"cycle {cycles}: RSS {rss[-1]:.1f} MiB, /metrics {sizes[-1]} bytes", flush=True)
    figures = {
        "releases_per_cycle": count,
        "cycles": cycles,
        "minutes": (time.monotonic() - started) / 60,
        "rss_mib_before": rss[0],
        "rss_mib_after": rss[-1],
        "rss_mib_by_cycle": [round(r, 1) for r in rss],
        "rss_growth": rss[-1] / rss[0] - 1,
        # The first cycle raises the allocator's high-water mark; a leak shows as growth after it.
        "rss_growth_after_first_cycle": rss[-1] / rss[1] - 1,
        "metrics_bytes_before": sizes[0],
        "metrics_bytes_after": sizes[-1],
        "metrics_growth": sizes[-1] / sizes[0] - 1,
    }
    print(json.dumps(figures, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
