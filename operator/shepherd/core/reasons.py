"""Every reason Shepherd gives: in `status.reason`, in its conditions, and on the Events it posts.

The operator names reasons only through these constants and functions, and the reference page of reasons
(docs/reference/reasons.md) is generated from CATALOGUE, so what a user reads is what the code says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Kind = Literal["reason", "event"]


@dataclass(frozen=True)
class Documented:
    name: str
    kind: Kind  # "reason": status.reason and the conditions; "event": an Event's reason
    where: str  # what carries it: the conditions, an Event's type
    meaning: str


CATALOGUE: list[Documented] = []


def _reason(name: str, where: str, meaning: str) -> str:
    CATALOGUE.append(Documented(name, "reason", where, meaning))
    return name


def _event(name: str, where: str, meaning: str) -> str:
    CATALOGUE.append(Documented(name, "event", where, meaning))
    return name


ROLLOUT = "status.reason (the conditions carry the phase while in flight)"
STALLING = "status.reason; Ready=False and Stalled=True once RolledBack or Failed"
HISTORY = "status.history[].reason"
GATES = "the GatesPassed condition"
ANALYSIS = "the Analysis condition"

# --- status.reason: why the Release is in its phase ---------------------------------------------------

NEW_REVISION: Final = _reason(
    "NewRevision", ROLLOUT, "A new revision was detected (new content, or a retry) and starts its rollout."
)
ROLLBACK_REQUESTED: Final = _reason(
    "RollbackRequested",
    ROLLOUT,
    "A new revision started by `shepherd.dev/rollback` with a recorded revision's content.",
)
REVERTED: Final = _reason(
    "Reverted",
    ROLLOUT,
    "The spec matches the stable revision again: the canary is cancelled and the stable restored.",
)
REVERTED_TO_STABLE: Final = _reason(
    "RevertedToStable", HISTORY, "The attempt was superseded because the spec returned to the stable content."
)
WAITING_FOR_GATES: Final = _reason("WaitingForGates", ROLLOUT, "The revision waits for its gates (`Gating`).")
STARTED: Final = _reason(
    "Started", ROLLOUT, "The revision has no gates: it starts its migrations or its rollout at once."
)
GATES_PASSED: Final = _reason(
    "GatesPassed", f"{ROLLOUT}; {GATES}", "Every gate passed: migrations, then traffic, may move."
)
MIGRATED: Final = _reason("Migrated", ROLLOUT, "Every migration Job succeeded: the rollout goes on.")
RESUMED: Final = _reason(
    "Resumed", ROLLOUT, "A hold ended (spec.paused set back, a window opened, a freeze ended)."
)
CANARY_PAUSE_STEP: Final = _reason(
    "CanaryPauseStep", ROLLOUT, "A `pause: {}` step without a duration waits for a promote (`Paused`)."
)
SPEC_PAUSED: Final = _reason("SpecPaused", ROLLOUT, "`spec.paused` is true: the rollout is held where it is.")
FREEZE: Final = _reason(
    "Freeze", ROLLOUT, "A ReleasePolicy freeze holds the canary at its weight (`Paused`) until it ends."
)
WINDOW: Final = _reason(
    "Window", ROLLOUT, "A window gate closed: the canary is held at its weight (`Paused`)."
)
STEPS_COMPLETED: Final = _reason(
    "StepsCompleted",
    ROLLOUT,
    "The canary finished its steps: the stable takes the new template (`Promoting`).",
)
PROMOTED: Final = _reason(
    "Promoted", ROLLOUT, "The stable runs the new revision: the bake begins, or a failed bake was overridden."
)
SUCCEEDED: Final = _reason(
    "Succeeded", "status.reason; Ready=True", "The revision is released, baked, and the new stable revision."
)
ABORTED: Final = _reason("Aborted", STALLING, "`shepherd.dev/abort` rolled the revision back (or failed it).")
PROGRESS_DEADLINE_EXCEEDED: Final = _reason(
    "ProgressDeadlineExceeded", STALLING, "Pods were not ready within `progressDeadline` after a change."
)
ANALYSIS_FAILED: Final = _reason(
    "AnalysisFailed", f"{STALLING}; {ANALYSIS}", "More failed measurements than a metric's `failureLimit`."
)
ANALYSIS_INCONCLUSIVE: Final = _reason(
    "AnalysisInconclusive",
    f"{STALLING}; {ANALYSIS}",
    "More empty or NaN results than a metric's `inconclusiveLimit`.",
)
ANALYSIS_ERROR: Final = _reason(
    "AnalysisError",
    f"{STALLING}; {ANALYSIS}",
    "More query errors in a row than a metric's `consecutiveErrorLimit`.",
)
BAKE_FAILED: Final = _reason("BakeFailed", STALLING, "A metric failed during `postRelease.bake`.")
GATE_FAILED: Final = _reason(
    "GateFailed",
    f"{STALLING}; {GATES}",
    "A gate failed (a job gate's Job failed) or did not pass in its timeout.",
)
MIGRATION_FAILED: Final = _reason(
    "MigrationFailed", STALLING, "A migration Job failed or ran past its timeout; no traffic had moved."
)
ROLLBACK_MIGRATION_FAILED: Final = _reason(
    "RollbackMigrationFailed", STALLING, "A down migration (`rollbackTemplate`) failed during a rollback."
)
INVALID_SPEC: Final = _reason(
    "InvalidSpec",
    "Ready=False and Stalled=True; a Warning Event",
    "The spec is invalid in a way the CRD schema cannot catch; the message names the field.",
)
INVALID_TEMPLATE: Final = _reason(
    "InvalidTemplate",
    "Ready=False and Stalled=True; a Warning Event",
    "The API server refused a write for the Release's content (HTTP 422 or 400); nothing running is touched.",
)
STATUS_REFUSED: Final = _reason(
    "StatusRefused",
    "Ready=False and Stalled=True; a Warning Event",
    "The API server refused a status write (HTTP 400 or 422): the status is held as last written.",
)

# Failures found by an analysis step or the bake, which notifications report as AnalysisFailed.
ANALYSIS_REASONS: Final = frozenset({ANALYSIS_FAILED, ANALYSIS_INCONCLUSIVE, ANALYSIS_ERROR, BAKE_FAILED})

# --- the GatesPassed and Analysis conditions ------------------------------------------------------------

WAITING: Final = _reason("Waiting", GATES, "Some gates have not passed yet; the message names them.")
NOT_STARTED: Final = _reason("NotStarted", ANALYSIS, "No analysis has run for this revision yet.")
RUNNING: Final = _reason("Running", ANALYSIS, "Measuring: not every metric has its count yet.")
SUCCESSFUL: Final = _reason("Successful", ANALYSIS, "Every metric of the analysis passed.")

# --- Events on the Release: their reasons besides those above -------------------------------------------

# Besides these, every phase transition posts an Event whose reason is the phase entered (machine._enter).
_event(NEW_REVISION, "Normal", "A revision was detected, or rolls back to a recorded revision's content.")
_event(REVERTED, "Normal", "The spec matches the stable revision again: restoring it.")
OVERRIDE_ENDED: Final = _event(
    "OverrideEnded",
    "Normal, or Warning when the records are gone",
    "A rollback no longer stands in for the spec: its content changed, or the records were trimmed.",
)
WAVE: Final = _event(
    "Wave", "Normal, or Warning on a rollback", "A wave of components was promoted, deployed or rolled back."
)
_event(INVALID_SPEC, "Warning", "The spec is invalid, or a query Prometheus cannot parse; names the field.")
_event(INVALID_TEMPLATE, "Warning", "The API server refused a pod template; names the field.")
_event(STATUS_REFUSED, "Warning", "The API server refused a status write; gives its message.")
NOTIFICATION_FAILED: Final = _event(
    "NotificationFailed", "Warning", "A webhook notification still failed after its retries."
)

COMMANDS: Final = ("promote", "abort", "retry", "rollback")


def command_event(action: str) -> str:
    """The reason of the Event a manual command posts: `Promote` for shepherd.dev/promote, ..."""
    return action.capitalize()


for _action in COMMANDS:
    _event(
        command_event(_action),
        "Normal, or Warning when ignored",
        f"`shepherd.dev/{_action}` was acted on; the message says the outcome.",
    )

GATE_STATES: Final = ("Pending", "Passed", "Failed")


def gate_event(state: str) -> str:
    return f"Gate{state}"


for _state in GATE_STATES:
    _event(gate_event(_state), "Normal", f"A gate became {_state}; the message names it and says why.")

MIGRATION: Final = "Migration"
ROLLBACK_MIGRATION: Final = "RollbackMigration"


def job_event(task: str, state: str) -> str:
    """`MigrationStarted`, `RollbackMigrationFailed`, ...: a migration or down-migration Job's progress."""
    return f"{task}{state}"


for _task, _kind in ((MIGRATION, "migration"), (ROLLBACK_MIGRATION, "down migration")):
    for _state, _type in (("Started", "Normal"), ("Succeeded", "Normal"), ("Failed", "Warning")):
        _event(job_event(_task, _state), _type, f"A {_kind} Job {_state.lower()}; the message names the Job.")

MEASUREMENT_RESULTS: Final = ("Failed", "Inconclusive", "Error")


def measurement_event(result: str) -> str:
    return f"Measurement{result}"


for _result in MEASUREMENT_RESULTS:
    _event(
        measurement_event(_result),
        "Warning",
        f"An analysis measurement was {_result}; the message has the value and the exact query.",
    )
