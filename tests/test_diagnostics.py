"""Error codes: what an operator sees for a failure, and whether the engine retries it."""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError

from wsmon.engine import diagnostics
from wsmon.engine.diagnostics import Category, classify, classify_exception, is_retryable


@pytest.mark.parametrize("text, code", [
    ("botocore.exceptions.ReadTimeoutError: Read timeout on endpoint URL", "WS-NET-001"),
    ("urllib3: Read timed out. (read timeout=60)", "WS-NET-001"),
    ("slurmstepd: error: *** JOB 81 ON q-dy-1 CANCELLED AT 2025-10-16T11:11 DUE TO TIME LIMIT ***",
     "WS-RES-003"),
    ("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=81.batch", "WS-RES-001"),
    ("OSError: [Errno 28] No space left on device: '/fsx/x.bam'", "WS-RES-002"),
    ("An error occurred (AccessDenied) when calling the ListObjectsV2 operation", "WS-AWS-001"),
    ("An error occurred (SlowDown) when calling the PutObject operation: Please reduce", "WS-AWS-002"),
    ("An error occurred (ExpiredToken) when calling the GetObject operation", "WS-AWS-003"),
    ("urllib3 NewConnectionError: [Errno 111] Connection refused", "WS-NET-002"),
    ("ssh: connect to host 10.0.0.5 port 22: Connection timed out", "WS-NET-004"),
    ("Error in rule bwa2a_sort:\n    jobid: 12", "WS-PIP-001"),
    ("LockException: Error: Directory cannot be locked.", "WS-PIP-002"),
    ("gzip: HG002_R1.fastq.gz: unexpected end of file", "WS-DAT-020"),
    ("Spot Instance interruption notice received", "WS-CLU-003"),
    ("sbatch: error: Batch job submission failed: Invalid partition name specified", "WS-CLU-004"),
    ("bash: day-clone: command not found", "WS-CFG-013"),
    ("Permission denied (publickey).", "WS-CFG-012"),
])
def test_real_failure_texts_get_their_code(text: str, code: str) -> None:
    assert classify(text).code == code


def test_read_timeout_is_network_not_time_limit_whichever_was_registered_first() -> None:
    diagnosis = classify("Read timeout")
    assert diagnosis.code == "WS-NET-001"
    assert diagnosis.category is Category.NETWORK
    assert diagnosis.retryable
    # the generic word alone is the time-limit code: specificity decided, not order
    assert classify("timeout").code == "WS-RES-003"


def test_the_longest_evidence_wins_when_several_codes_match() -> None:
    text = "Error in rule call_snvs: slurmstepd: error: Detected 2 oom-kill event(s)"
    diagnosis = classify(text)
    assert diagnosis.code == "WS-RES-001"
    assert diagnosis.matched and "oom-kill" in diagnosis.matched


def test_code_written_in_the_text_wins_with_full_confidence() -> None:
    diagnosis = classify("2026-01-01T00:00:00Z\tWS-DAT-004: required column R1_FQ is missing")
    assert diagnosis.code == "WS-DAT-004"
    assert diagnosis.confidence == 1.0
    assert not diagnosis.retryable


def test_unknown_text_is_ws_unk_001_retryable_with_zero_confidence() -> None:
    diagnosis = classify("the flux capacitor hiccupped")
    assert diagnosis.code == "WS-UNK-001"
    assert diagnosis.confidence == 0.0
    assert diagnosis.retryable  # documented: bounded by the retry budget
    assert classify(None).code == "WS-UNK-001"


@pytest.mark.parametrize("code, retry", [
    ("WS-RES-001", True), ("WS-RES-002", True), ("WS-NET-001", True), ("WS-AWS-002", True),
    ("WS-CLU-003", True), ("WS-CFG-004", False), ("WS-DAT-007", False), ("WS-AWS-001", False),
    ("WS-PIP-001", False), ("no-such-code", True),
])
def test_retry_policy_by_category(code: str, retry: bool) -> None:
    assert is_retryable(code) is retry


def test_is_retryable_accepts_a_diagnosis() -> None:
    assert is_retryable(classify("Connection reset by peer")) is True
    assert is_retryable(classify("Missing input files for rule x")) is False


def test_confidence_grows_with_the_evidence() -> None:
    assert classify("an oom-kill").confidence < classify("Detected 3 oom-kill event").confidence


def test_aws_client_errors_classify_by_their_error_code() -> None:
    exc = ClientError({"Error": {"Code": "AccessDenied", "Message": "nope"}}, "GetObject")
    assert classify_exception(exc).code == "WS-AWS-001"
    throttled = ClientError({"Error": {"Code": "Throttling", "Message": "slow"}}, "ListObjectsV2")
    assert classify_exception(throttled).retryable
    assert classify_exception(TimeoutError("connect timed out")).code == "WS-NET-001"


def test_every_code_is_well_formed_and_has_remediation() -> None:
    for code, entry in diagnostics.CATALOGUE.items():
        assert re.fullmatch(r"WS-(RES|NET|DAT|CFG|AWS|PIP|CLU|UNK)-\d{3}", code)
        assert entry.remediation.strip() and entry.title.strip()
        prefix = code.split("-")[1]
        expected = {"RES": "resource", "NET": "network", "DAT": "data", "CFG": "config",
                    "AWS": "aws", "PIP": "pipeline", "CLU": "cluster", "UNK": "unknown"}[prefix]
        assert entry.category.value == expected
        if entry.category in (Category.CONFIG, Category.DATA):
            assert not entry.retryable, code


def test_report_names_code_decision_and_fix() -> None:
    text = diagnostics.format_report(classify("No space left on device"))
    assert "WS-RES-002" in text and "retryable" in text and "fix:" in text
    assert classify("No space left on device").to_dict()["category"] == "resource"
