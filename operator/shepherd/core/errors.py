"""The error every parser of the core raises for what a spec says, naming the field as the API server does."""

from __future__ import annotations


class SpecError(ValueError):
    """A spec the operator cannot act on; `field` is the Kubernetes-style path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
