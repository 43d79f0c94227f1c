"""The lab: what lets Shepherd run without a cluster, apart from what ships.

A local Kubernetes API emulator, a simulated kubelet, a Prometheus runner, a traffic exporter, the
real control plane built from Go modules with its pod simulator, and the demo that strings them
together. The operator never imports from here.
"""
