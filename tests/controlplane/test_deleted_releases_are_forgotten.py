"""Story: a Release deleted while the operator's watch of Releases is cut is forgotten once a relist finds
it gone, and /metrics no longer names it.

The operator follows two Releases: shop, rolled out, and held, waiting for an approval (it owns nothing that
a deletion would take away, so nothing but the Releases' watch can tell of its end). The fault proxy keeps
every watch of Releases open and silent; held is deleted; the operator still names it. Then the proxy
answers those watches as the API server does when the version they resume from is compacted away (410 in
the stream): the operator lists the Releases again, finds held missing and forgets it. With the watches
given back, shop still rolls out.
"""

from __future__ import annotations

import urllib.request

from shepherd.lab.cluster import OperatorProcess
from shepherd.lab.faultproxy import FaultProxy, fault
from story import Story, quickstart_release

RELEASES = r"^/apis/shepherd\.dev/v1alpha1/releases$"  # the operator watches them in all namespaces
# Watches refused back off up to 30s; the relist that follows one finds the deletion.
FORGOTTEN_WITHIN = 60.0


def scrape(process: OperatorProcess) -> str:
    port = next(a.split("=", 1)[1] for a in process.args if a.startswith("--metrics-port="))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def test_a_release_deleted_while_the_watch_is_cut_is_forgotten_after_a_relist(
    fault_proxy: FaultProxy, proxied_operator: OperatorProcess, proxied_story: Story
) -> None:
    story = proxied_story

    def named(release: str) -> bool:
        return f'namespace="{story.namespace}",release="{release}"' in scrape(proxied_operator)

    held = quickstart_release("1.0.0", gates=[{"name": "sign-off", "approval": {"count": 1}}])
    held["metadata"]["name"] = "held"
    story.apply(quickstart_release("1.0.0"))
    story.apply(held)
    story.wait_phase("Succeeded", revision=1)
    story.wait("held waiting for its approval", lambda s: s.get("phase") == "Gating", name="held")
    story.wait_until("/metrics to name both", lambda: named("shop") and named("held"))

    fault_proxy.inject(fault("WATCH", path=RELEASES, silent=True))
    silent_before = fault_proxy.count("WATCH", RELEASES, injected=True)
    fault_proxy.cut_watches(RELEASES)
    # Kopf's watch of Releases and the operator's own informer's, both opened again, and silent.
    story.wait_until(
        "the watches of Releases open again, silent",
        lambda: fault_proxy.count("WATCH", RELEASES, injected=True) >= silent_before + 2,
    )
    story.kubectl("delete", "release", "held")  # waits until it is gone: no finalizer holds it
    assert named("held"), "the watch is cut: the operator has not heard of the deletion"

    lists_before = fault_proxy.count("LIST", RELEASES)
    fault_proxy.clear()
    fault_proxy.inject(fault("WATCH", path=RELEASES, expired=True))
    fault_proxy.cut_watches(RELEASES)  # the silent watches end; each one opened again is told it is too old
    story.wait_until("held forgotten: /metrics not naming it", lambda: not named("held"), FORGOTTEN_WITHIN)
    assert fault_proxy.count("LIST", RELEASES) > lists_before, "found gone by a list"
    assert named("shop"), "the Release next to it is still followed"

    fault_proxy.clear()
    fault_proxy.cut_watches(RELEASES)
    story.apply(quickstart_release("1.1.0"))
    story.wait_phase("Succeeded", revision=2)
    assert "shepherd/informers.py" not in proxied_operator.output(), "no traceback from a watch: all expected"
