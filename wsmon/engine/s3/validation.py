"""Validation of one S3 workset folder: read the three workset files (each capped at
``discovery.max_file_bytes``) and run every check of ``worksetfiles`` on them. No store needed:
``wsmon validate s3://...`` uses it directly, and a poll for every folder it registers."""

from __future__ import annotations

from typing import Any

from wsmon.engine import diagnostics
from wsmon.engine.s3.listing import list_level, normalize_prefix
from wsmon.engine.worksetfiles import (
    SAMPLE_DATA_DIR,
    WORKSET_FILES,
    Budget,
    BudgetExceeded,
    RawFile,
    ValidationReport,
    finding,
    s3_exists_checker,
    validate_files,
)


def validate_listed(s3: Any, bucket: str, prefix: str, name: str, settings: Any,
                    files_present: dict[str, tuple[int, str]],
                    has_sample_data_hint: bool, budget: Budget | None = None) -> ValidationReport:
    """Read and validate one listed folder. Past its ``budget`` the report is one WS-DAT-019
    finding: the folder is refused, and the poll goes on with the others."""
    from botocore.exceptions import BotoCoreError, ClientError

    from wsmon.core.aws import error_code

    disc = getattr(settings, "discovery", settings)
    limit = disc.max_file_bytes
    files: dict[str, RawFile | None] = {}
    problems = []
    for fname in WORKSET_FILES:
        if fname not in files_present:
            files[fname] = None
            continue
        size = files_present[fname][0]
        try:
            if size > limit:
                files[fname] = RawFile(size, None)
            elif size == 0:
                files[fname] = RawFile(0, b"")
            else:
                resp = s3.get_object(Bucket=bucket, Key=prefix + fname, Range=f"bytes=0-{limit}")
                data = resp["Body"].read(limit + 1)
                files[fname] = RawFile(max(size, len(data)), data)
        except (ClientError, BotoCoreError) as exc:
            aws = error_code(exc) or type(exc).__name__
            code = diagnostics.aws_code(aws)
            problems.append(finding(code, f"cannot read {fname}: {aws}", file=fname))
            files[fname] = RawFile(0, b"")
    has_sample_data = has_sample_data_hint
    if has_sample_data:
        # the folder listing shows sample_data/ when anything is under it; make sure it is more
        # than a zero-byte "folder" marker (one small request, only when validating)
        try:
            page = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}{SAMPLE_DATA_DIR}/", MaxKeys=2)
            has_sample_data = any(o["Key"] != f"{prefix}{SAMPLE_DATA_DIR}/" for o in page.get("Contents") or [])
        except (ClientError, BotoCoreError):
            pass
    try:
        report = validate_files(name, files, settings=disc, target=f"s3://{bucket}/{prefix}",
                                workset_bucket=bucket, workset_prefix=prefix,
                                has_sample_data=has_sample_data,
                                exists=s3_exists_checker(s3, disc.head_workers, budget),
                                budget=budget)
    except BudgetExceeded as exc:
        report = ValidationReport(target=f"s3://{bucket}/{prefix}", workset_id=name)
        report.findings.append(finding("WS-DAT-019", str(exc)))
    if problems:
        # a file we could not read is reported as that, not as "does not parse"
        unreadable = {p.file for p in problems}
        report.findings = problems + [f for f in report.findings
                                      if not (f.file in unreadable and f.code.startswith(("WS-CFG", "WS-DAT")))]
    return report


def validate_s3_folder(s3: Any, bucket: str, prefix: str, settings: Any) -> ValidationReport:
    """List one workset folder (with the delimiter) and run every check on it."""
    from botocore.exceptions import BotoCoreError, ClientError

    from wsmon.core.aws import error_code

    prefix = normalize_prefix(prefix)
    name = prefix.rstrip("/").rsplit("/", 1)[-1]
    target = f"s3://{bucket}/{prefix}"
    files: dict[str, tuple[int, str]] = {}
    try:
        objects, subprefixes = list_level(s3, bucket, prefix)
    except (ClientError, BotoCoreError) as exc:
        aws = error_code(exc) or type(exc).__name__
        report = ValidationReport(target=target, workset_id=name)
        report.findings.append(finding(diagnostics.aws_code(aws), f"cannot list {target}: {aws}"))
        return report
    for obj in objects:
        leaf = obj["Key"][len(prefix):]
        if leaf in WORKSET_FILES:
            files[leaf] = (int(obj.get("Size", 0)), str(obj.get("ETag", "")))
    if not objects and not subprefixes:
        report = ValidationReport(target=target, workset_id=name)
        report.findings.append(finding("WS-AWS-004", f"nothing at {target}"))
        return report
    has_sample_data = f"{prefix}{SAMPLE_DATA_DIR}/" in subprefixes
    return validate_listed(s3, bucket, prefix, name, settings, files, has_sample_data)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> (bucket, "a/b/")."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, key
