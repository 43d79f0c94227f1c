"""The functional core: pure decisions over plain data, no I/O and no clock."""

from shepherd.core.evidence import needed
from shepherd.core.machine import decide
from shepherd.core.model import Decision, Observations, ReleaseObject

__all__ = ["Decision", "Observations", "ReleaseObject", "decide", "needed"]
