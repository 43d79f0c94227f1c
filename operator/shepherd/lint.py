"""Offline checks of Release manifests: the CRD schema first, then the operator's own parser."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from shepherd import crdschema
from shepherd.core.replica_traffic import inexact_weights
from shepherd.core.spec import SpecError, parse_release_name, parse_spec

SHEPHERD_KINDS = ("Release", "ReleaseApproval", "ReleasePolicy")


def lint_documents(documents: Iterable[Any]) -> Iterator[str]:
    """One line per problem, naming the Release and the field."""
    crd = crdschema.load_crd("release")
    for index, document in enumerate(documents):
        if not isinstance(document, Mapping) or not _meant_as_a_release(document):
            continue
        name = (document.get("metadata") or {}).get("name") or f"document {index + 1}"
        violations = crdschema.validate(crd, document)
        for violation in violations:
            yield f"Release {name}: {violation.field}: {violation.message}"
        if violations:
            continue
        try:
            parse_release_name(str(name))
            parse_spec(document.get("spec"))
        except SpecError as error:
            yield f"Release {name}: {error}"


def warn_documents(documents: Iterable[Any]) -> Iterator[str]:
    """One line per warning about a valid Release: it does what it says, but perhaps not what was meant.

    With replica routing (the default) a setWeight step gives the canary ceil(replicas * weight / 100)
    pods, so a weight that a component's replica count cannot represent gives it another share of the
    pods, hence of the requests."""
    for document in documents:
        if not isinstance(document, Mapping) or not _meant_as_a_release(document):
            continue
        if any(lint_documents([document])):
            continue  # its problems are reported
        spec = parse_spec(document.get("spec"))
        if spec.routing is not None:
            continue  # Gateway API routing gives every weight exactly
        name = (document.get("metadata") or {}).get("name")
        for inexact in inexact_weights(spec):
            yield f"Release {name}: {inexact.field}: {inexact.describe()}"


def _meant_as_a_release(document: Mapping[str, Any]) -> bool:
    """A Release, or a document of Shepherd's API group of no kind it has: linted as a Release, so a
    misspelt kind is reported (as the API server would) instead of passing unchecked."""
    group = str(document.get("apiVersion") or "").split("/", 1)[0]
    kind = document.get("kind")
    return kind == "Release" or (group == "shepherd.dev" and kind not in SHEPHERD_KINDS)
