"""Re-validating a workset from its current S3 files before it may go back to ready.

The operator may have fixed (or broken) the folder since it was last read, so retry, re-run and
un-ignore read it again. A ``Validator`` is any callable from the stored record to a
``ValidationReport``; the front ends build the S3 one from settings, tests pass their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsmon.core.models import Workset
from wsmon.engine.worksetfiles import ValidationReport

Validator = Callable[[Workset], ValidationReport]


def s3_validator(settings: Any, s3_client: Any = None) -> Validator:
    """Every check ``wsmon validate s3://...`` runs, on the workset's own folder.

    Calls the engine's one folder validator (``validate_s3_folder``); the S3 client is made on
    first use so a front end that never retries never opens one.
    """
    clients: list[Any] = [s3_client] if s3_client is not None else []

    def validate(workset: Workset) -> ValidationReport:
        from wsmon.engine.s3 import validate_s3_folder

        if not clients:
            from wsmon.core.aws import client

            clients.append(client("s3", profile=settings.aws.profile, region=settings.aws.region,
                                  endpoint_url=settings.aws.endpoint_url,
                                  max_attempts=settings.aws.max_attempts))
        return validate_s3_folder(clients[0], workset.bucket, workset.prefix, settings)

    return validate


def validation_fields(workset: Workset, report: ValidationReport) -> dict[str, Any]:
    """The record's fields after this validation: the new findings replace the old ones."""
    fields: dict[str, Any] = {
        "findings": report.findings_dicts(), "estimate": report.estimate,
        "metadata": {**workset.metadata, "work": report.work, "info": report.info},
    }
    first = report.first_error
    if first is None:
        fields.update(error_code=None, error_details=None)
    else:
        fields.update(error_code=first.code, error_details=first.message)
    return fields
