"""Every operator action, once, for every front end (dashboard, CLI, HTTP API).

No Textual and no click here: front ends call ``Operations`` and render its ``Outcome``.
"""

from wsmon.operations.actions import STOP_TARGETS, Operations, changed_since_shown
from wsmon.operations.durations import (
    DURATION_EXAMPLES,
    DurationError,
    format_duration,
    parse_duration,
)
from wsmon.operations.outcome import Outcome, Result
from wsmon.operations.rules import (
    ACTIONS,
    ALERT_ACTIONS,
    WORKSET_ACTIONS,
    ActionRule,
    precondition,
)
from wsmon.operations.validation import Validator, s3_validator

__all__ = [
    "ACTIONS", "ALERT_ACTIONS", "DURATION_EXAMPLES", "STOP_TARGETS", "WORKSET_ACTIONS",
    "ActionRule", "DurationError", "Operations", "Outcome", "Result", "Validator",
    "changed_since_shown", "format_duration", "parse_duration", "precondition",
    "s3_validator",
]
