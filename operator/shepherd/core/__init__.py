"""The functional core: pure decisions over plain data, no I/O and no clock."""

from shepherd.core.machine import Decision, Observations, ReleaseObject, decide

__all__ = ["Decision", "Observations", "ReleaseObject", "decide"]
