"""The error-code catalogue of the whole engine, and classification of failure text.

Codes follow the Daylily system ``WS-<CAT>-nnn``: RES (resource), NET (network), DAT (input
data), CFG (configuration), AWS (AWS service), PIP (pipeline), CLU (cluster). Each code carries a
category, a severity, whether retrying can help, a title, remediation text and the patterns that
recognise it in log or error text.

Retry policy in one line: resource and transient failures (network, throttling, capacity, spot
interruption, node failure) retry; configuration, data and permanent failures do not, because the
same input fails the same way until a person changes something.

``classify(text)`` picks the code whose pattern matches the *longest* stretch of the text (the
most specific evidence), not the first registered: "Read timeout" is a network error, not a CPU
time limit, although "timeout" alone would also match the time-limit code. A ``WS-XXX-nnn`` code
written in the text itself (e.g. a ``daylily.error`` body) wins outright.

Unknown text is ``WS-UNK-001``, which *is* retryable: validation already catches configuration
and data problems before a run starts, so an unrecognised failure during a run is more often
infrastructure than input, and the retry budget (``retry.max_retries``) bounds the cost of being
wrong. Operators see the code and the attempts in the dashboard either way.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Category(str, Enum):
    RESOURCE = "resource"
    NETWORK = "network"
    DATA = "data"
    CONFIG = "config"
    AWS = "aws"
    PIPELINE = "pipeline"
    CLUSTER = "cluster"
    UNKNOWN = "unknown"


class DiagSeverity(str, Enum):
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class ErrorCode:
    code: str
    category: Category
    severity: DiagSeverity
    retryable: bool
    title: str
    remediation: str
    patterns: tuple[str, ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True)
class Diagnosis:
    """What ``classify`` concluded. ``matched`` is the piece of text that decided it."""

    code: str
    category: Category
    severity: DiagSeverity
    retryable: bool
    confidence: float
    title: str
    remediation: str
    matched: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["category"] = self.category.value
        out["severity"] = self.severity.value
        return out


CATALOGUE: dict[str, ErrorCode] = {}


def _register(code: str, category: Category, severity: DiagSeverity, retryable: bool, title: str,
              remediation: str, *patterns: str) -> None:
    if code in CATALOGUE:
        raise ValueError(f"duplicate diagnostics code {code}")
    compiled = tuple(re.compile(p, re.IGNORECASE) for p in patterns)
    CATALOGUE[code] = ErrorCode(code, category, severity, retryable, title, remediation, patterns,
                                compiled)


R, N, D, C, A, P, K = (Category.RESOURCE, Category.NETWORK, Category.DATA, Category.CONFIG,
                       Category.AWS, Category.PIPELINE, Category.CLUSTER)
CRIT, ERR, WARN, INFO = (DiagSeverity.CRITICAL, DiagSeverity.ERROR, DiagSeverity.WARNING,
                         DiagSeverity.INFO)

# -- resource ---------------------------------------------------------------------------------
_register("WS-RES-001", R, ERR, True, "Out of memory",
          "A job ran out of memory. Retry; if it recurs, raise memory for the failing rule "
          "(Snakemake resources) or run on instances with more memory per vCPU.",
          r"out of memory", r"\boom[- ]?kill(ed)?\b", r"detected \d+ oom[- ]kill event",
          r"cannot allocate memory", r"\bMemoryError\b", r"std::bad_alloc",
          r"exit (code|status) 137", r"OUT_OF_MEMORY", r"killed process \d+ .*total-vm")
_register("WS-RES-002", R, ERR, True, "Disk full",
          "A filesystem is full. Free space on /fsx (or the instance volume) or grow it, then retry.",
          r"no space left on device", r"disk quota exceeded", r"\bENOSPC\b",
          r"not enough (free )?(disk )?space")
_register("WS-RES-003", R, ERR, True, "Time limit reached",
          "A job hit its CPU or wall-clock time limit. Retry; if it recurs, raise the rule's "
          "runtime or the step timeout (runner.step_timeout_minutes / pipeline_timeout_minutes).",
          r"due to time limit", r"cpu time limit exceeded", r"\btime ?limit\b", r"\btimeout\b",
          r"step timed out")
_register("WS-RES-004", R, WARN, True, "Too many open files or processes",
          "The host ran out of file descriptors or processes. Raise ulimit -n / -u on the head "
          "node or reduce Snakemake -j, then retry.",
          r"too many open files", r"\bEMFILE\b", r"resource temporarily unavailable",
          r"fork: retry")

# -- network ----------------------------------------------------------------------------------
_register("WS-NET-001", N, WARN, True, "Network timeout",
          "A network call timed out. Usually transient: retried automatically. If it persists, "
          "check the VPC route, security groups and the endpoint's health.",
          r"read time(d)? ?out", r"connect(ion)? time(d)? ?out", r"ReadTimeoutError",
          r"ConnectTimeoutError", r"timed out while connecting", r"operation timed out")
_register("WS-NET-002", N, WARN, True, "Connection refused or reset",
          "A connection was refused or dropped. Retried automatically; if it persists, check "
          "that the service or head node is up and reachable.",
          r"connection refused", r"connection reset by peer", r"broken pipe",
          r"EndpointConnectionError", r"could not connect to the endpoint url",
          r"connection aborted", r"remote end closed connection")
_register("WS-NET-003", N, WARN, True, "DNS resolution failed",
          "A host name did not resolve. Retried automatically; check DNS settings of the VPC "
          "and the host name in config if it persists.",
          r"name or service not known", r"temporary failure in name resolution",
          r"getaddrinfo failed", r"could not resolve host", r"nodename nor servname provided")
_register("WS-NET-004", N, WARN, True, "SSH connection lost",
          "The SSH session to the head node dropped. Retried automatically; check the head node "
          "is running and reachable.",
          r"connection closed by remote host", r"client_loop: send disconnect",
          r"ssh_exchange_identification", r"ssh: connect to host .* port \d+")

# -- data -------------------------------------------------------------------------------------
# WS-DAT-001..019 are workset validation findings (worksetfiles.py); WS-DAT-02x are run-time.
_VALIDATION_DATA = "Fix the workset folder, then retry (wsmon retry, or remove daylily.error and " \
                   "touch daylily.ready). Check it first with: wsmon validate s3://BUCKET/PREFIX/WORKSET/"
_register("WS-DAT-001", D, ERR, False, "stage_samples.tsv missing",
          "Upload stage_samples.tsv into the workset folder. " + _VALIDATION_DATA)
_register("WS-DAT-002", D, ERR, False, "stage_samples.tsv is empty",
          "stage_samples.tsv needs a tab-separated header line and one line per sample. "
          + _VALIDATION_DATA)
_register("WS-DAT-003", D, ERR, False, "No sample rows",
          "stage_samples.tsv has a header but no sample line. " + _VALIDATION_DATA)
_register("WS-DAT-004", D, ERR, False, "Required column missing",
          "stage_samples.tsv must have the columns SAMPLE_ID, R1_FQ and R2_FQ (tab-separated "
          "header). " + _VALIDATION_DATA)
_register("WS-DAT-005", D, WARN, False, "Expected column missing",
          "A standard Daylily column is missing from stage_samples.tsv; staging may fill a "
          "default. Add it to silence this warning.")
_register("WS-DAT-006", D, ERR, False, "Malformed sample row",
          "Each line of stage_samples.tsv needs as many tab-separated fields as the header and a "
          "value for SAMPLE_ID, R1_FQ and R2_FQ. " + _VALIDATION_DATA)
_register("WS-DAT-007", D, ERR, False, "FASTQ path outside sample_data/",
          "R1_FQ/R2_FQ must be sample_data/<file> inside this workset or an s3:// URI; paths "
          "may not contain '..'. " + _VALIDATION_DATA)
_register("WS-DAT-008", D, ERR, False, "FASTQ object not found",
          "Upload the FASTQ the sample sheet names, or correct the path. " + _VALIDATION_DATA)
_register("WS-DAT-009", D, ERR, False, "FASTQ in a bucket that is not allowed",
          "FASTQs must be in the workset's own bucket or a bucket listed in "
          "discovery.allowed_buckets. Copy the data or ask an operator to allow the bucket.")
_register("WS-DAT-010", D, ERR, False, "File too large",
          "The file is larger than discovery.max_file_bytes. Sample sheets and workset YAML "
          "are small text files; check the right file was uploaded.")
_register("WS-DAT-011", D, ERR, False, "Not a text file",
          "The file holds NUL bytes or is not UTF-8 text. Save it as plain UTF-8 text "
          "(tab-separated for the sample sheet).")
_register("WS-DAT-012", D, ERR, False, "sample_data/ missing or empty",
          "Upload the sample data into the workset's sample_data/ folder (at least one object).")
_register("WS-DAT-013", D, WARN, False, "Duplicate sample row",
          "The same SAMPLE_ID, LANE and R1_FQ appear twice in stage_samples.tsv; remove the copy.")
_register("WS-DAT-014", D, WARN, False, "Unreadable sentinel timestamp",
          "A daylily.* sentinel should hold a timestamp such as 2025-10-16T11:11:11Z or "
          "20251016T111111; its body is kept as text and its upload time is used.")
_register("WS-DAT-015", D, ERR, False, "Unsafe workset folder name",
          "A workset folder may not be named '.' or '..' nor hold control characters (escape, "
          "newline, tab...); rename the folder.")
_register("WS-DAT-016", D, ERR, False, "Too many sample rows",
          "stage_samples.tsv has more rows than discovery.max_sample_rows. Split the samples "
          "into several worksets, or ask an operator to raise the limit.")
_register("WS-DAT-017", D, WARN, False, "More findings than are kept",
          "Only the first discovery.max_findings_per_folder findings of a folder are kept; the "
          "rest are counted. Fix the ones shown and validate again (wsmon validate shows them all).")
_register("WS-DAT-018", D, ERR, False, "Workset record too large",
          "What validation found about this folder does not fit in one state-store record. Fix "
          "the findings shown (wsmon validate lists them all) and upload daylily.ready again.")
_register("WS-DAT-019", D, ERR, False, "Folder over its validation budget",
          "Validating this folder took more time or memory than discovery.folder_time_budget_seconds "
          "/ folder_memory_budget_mb allow; the rest of the poll went on without it. Shrink the "
          "sample sheet or the YAML files, then upload daylily.ready again.")
_register("WS-DAT-020", D, ERR, False, "Corrupt input data",
          "An input file is truncated or corrupt. Re-upload the FASTQ (compare checksums), "
          "then retry.",
          r"unexpected end of file", r"invalid compressed data", r"crc error",
          r"truncated (fastq|file|gzip)", r"not in gzip format", r"malformed (fastq|read)")
_register("WS-DAT-021", D, ERR, False, "Input file missing at run time",
          "The pipeline could not find an input file. Check R1_FQ/R2_FQ and that staging "
          "copied the data.",
          r"MissingInputException", r"missing input files? for rule")
_register("WS-DAT-022", D, ERR, False, "Reference data missing",
          "The pipeline could not find its reference data (genome, index, annotation). Check "
          "the reference bucket and the genome build in the run suffix, then retry: running "
          "again without the reference fails the same way.",
          r"MissingReferenceError", r"reference (genome|data|bundle) .{0,80}not found")

# -- configuration ----------------------------------------------------------------------------
_VALIDATION_CFG = "Fix daylily_work.yaml / daylily_info.yaml, then retry. Check it first with: " \
                  "wsmon validate ./folder"
_register("WS-CFG-001", C, ERR, False, "daylily_work.yaml missing",
          "Upload daylily_work.yaml with at least a run suffix (dy-r). " + _VALIDATION_CFG)
_register("WS-CFG-002", C, ERR, False, "YAML does not parse",
          "The file is not valid YAML, or its top level is not a mapping of key: value. "
          + _VALIDATION_CFG)
_register("WS-CFG-003", C, ERR, False, "No run suffix",
          "daylily_work.yaml needs a run suffix: dy-r (or dy_r, run, run_suffix, run_cmd). "
          + _VALIDATION_CFG)
_register("WS-CFG-004", C, ERR, False, "Shell syntax in a command value",
          "Command values are split into words like a shell does, but never run by a shell: "
          "';', '|', '&', '$(', '${', '$VAR', backticks, '<', '>', parentheses, comments and "
          "newlines are refused. Quote them ('...') if they are meant literally. " + _VALIDATION_CFG)
_register("WS-CFG-005", C, ERR, False, "Unbalanced quotes",
          "A quote in a command value is never closed. " + _VALIDATION_CFG)
_register("WS-CFG-006", C, ERR, False, "Invalid value",
          "A value has the wrong type or an unknown choice (see the message). " + _VALIDATION_CFG)
_register("WS-CFG-007", C, WARN, False, "Conflicting or repeated keys",
          "Two spellings of the same key (e.g. dy-r and run_suffix) or a repeated key; keep one.")
_register("WS-CFG-008", C, ERR, False, "daylily_info.yaml missing",
          "Upload daylily_info.yaml (it may be empty: priority defaults to normal).")
_register("WS-CFG-009", C, WARN, False, "Export URI is not s3://",
          "export_uri should be an s3:// URI; results may not be exported.")
_register("WS-CFG-010", C, ERR, False, "Control characters in a value",
          "A value holds control characters (escape, carriage return, NUL...). Remove them.")
_register("WS-CFG-011", C, ERR, False, "Workset file too large or not text",
          "The YAML file is larger than discovery.max_file_bytes or is not UTF-8 text.")
_register("WS-CFG-012", C, CRIT, False, "SSH authentication failed",
          "The head node refused the key. Check the key path and the user in runner settings.",
          r"permission denied \(publickey", r"host key verification failed")
_register("WS-CFG-013", C, ERR, False, "Command not found",
          "A step's program is not installed or not on PATH on the host that runs it. Fix "
          "runner.*_command or install the tool.",
          r"command not found", r"no such file or directory: '[^']+'$", r"executable file not found")
_register("WS-CFG-015", C, ERR, False, "YAML too complex",
          "The YAML file uses too many aliases (*name), nests too deep, or its aliases expand "
          "to too much text (a 'billion laughs' file). Write the values out plainly. "
          + _VALIDATION_CFG)
_register("WS-CFG-014", C, ERR, False, "Invalid command template",
          "A runner command template names an unknown placeholder or is empty. Fix config.",
          r"unknown placeholder", r"invalid command template")

# -- AWS --------------------------------------------------------------------------------------
_register("WS-AWS-001", A, CRIT, False, "Access denied",
          "AWS refused the request. Grant the monitor's role the permission named in the "
          "message (see: wsmon iam-policy) or fix the bucket policy.",
          r"\bAccessDenied\b", r"access denied", r"UnauthorizedOperation",
          r"is not authorized to perform", r"\bAllAccessDisabled\b", r"\b403 forbidden\b",
          r"AccessDeniedException")
_register("WS-AWS-002", A, WARN, True, "AWS throttling",
          "AWS is rate-limiting requests. Retried with backoff; lower poll frequency or worker "
          "counts if it is frequent.",
          r"\bThrottling(Exception)?\b", r"\bSlowDown\b", r"RequestLimitExceeded",
          r"TooManyRequestsException", r"ProvisionedThroughputExceededException",
          r"rate exceeded", r"RequestThrottled")
_register("WS-AWS-003", A, CRIT, False, "AWS credentials missing or expired",
          "Refresh credentials (aws sso login / the instance role) and check aws.profile.",
          r"ExpiredToken(Exception)?", r"unable to locate credentials", r"InvalidClientTokenId",
          r"security token included in the request is (expired|invalid)",
          r"SignatureDoesNotMatch", r"token has expired")
_register("WS-AWS-004", A, ERR, False, "AWS resource not found",
          "A bucket, key or resource named in config does not exist. Check names and region.",
          r"\bNoSuchBucket\b", r"\bNoSuchKey\b", r"ResourceNotFoundException",
          r"the specified bucket does not exist")
_register("WS-AWS-005", A, WARN, True, "AWS service error",
          "AWS returned a server error. Retried automatically.",
          r"\bServiceUnavailable\b", r"\bInternalError\b", r"InternalServerError",
          r"\b503 service unavailable\b", r"\bInternalFailure\b")
_register("WS-AWS-006", A, WARN, True, "Insufficient EC2 capacity",
          "EC2 had no capacity for the instance type in that zone. Retried later; allow more "
          "instance types or zones to make it rarer.",
          r"InsufficientInstanceCapacity", r"insufficient capacity")
_register("WS-AWS-007", A, ERR, False, "AWS service quota exceeded",
          "An account limit was reached (vCPUs, instances...). Request a quota increase.",
          r"VcpuLimitExceeded", r"\bLimitExceeded(Exception)?\b", r"service quota",
          r"InstanceLimitExceeded")
_register("WS-AWS-008", A, WARN, False, "S3 event message not understood",
          "A message on discovery.events_queue is not an S3 event notification (direct, "
          "EventBridge or through SNS). It is left on the queue and moves to the dead-letter "
          "queue after the redrive policy's maxReceiveCount; check what else sends to the queue "
          "(wsmon s3-events status shows the DLQ depth).")

# -- pipeline ---------------------------------------------------------------------------------
_register("WS-PIP-001", P, ERR, False, "Pipeline rule failed",
          "A Snakemake rule failed. Read the rule's log in the pipeline directory; fix and retry.",
          r"error in rule \S+", r"exiting because a job execution failed",
          r"CalledProcessError", r"MissingOutputException", r"WorkflowError")
_register("WS-PIP-002", P, ERR, False, "Pipeline directory locked",
          "Snakemake found its working directory locked by an earlier run. Run the pipeline "
          "with --unlock in that directory, then retry.",
          r"directory cannot be locked", r"LockException")
_register("WS-PIP-003", P, WARN, True, "Incomplete pipeline outputs",
          "Snakemake found incomplete outputs from an interrupted run. Retry with "
          "--rerun-incomplete (the Daylily default).",
          r"IncompleteFilesException", r"incomplete files?")
_register("WS-PIP-004", P, ERR, False, "Clone failed",
          "day-clone failed or printed no 'Location:' line. Check the clone arguments "
          "(day-clone in daylily_work.yaml) and the repository tag.",
          r"day-clone: error", r"no 'location:' line", r"fatal: (repository|remote) ",
          r"clone failed")
_register("WS-PIP-005", P, ERR, False, "Export failed",
          "Exporting results failed. Check export_uri and the monitor's S3 write permission.",
          r"export failed", r"daylily-export-fsx-to-s3.*(error|failed)")
_register("WS-PIP-006", P, WARN, True, "Step interrupted",
          "The step was interrupted (signal, shutdown). Retried automatically.",
          r"killed by signal (1|2|15)\b", r"terminated by signal", r"\bSIGTERM\b", r"\bSIGHUP\b",
          r"keyboardinterrupt")

# -- cluster ----------------------------------------------------------------------------------
_register("WS-CLU-001", K, ERR, True, "Cluster unavailable",
          "The cluster is missing, stopped or unreachable. The scheduler places the workset "
          "elsewhere on retry; check pcluster describe-cluster.",
          r"cluster \S+ (not found|does not exist)", r"ClusterNotFound", r"head ?node .*unreachable",
          r"CREATE_FAILED", r"cluster is not running")
_register("WS-CLU-002", K, WARN, True, "Compute node failed",
          "A Slurm node failed under a job. Retried automatically.",
          r"\bNODE_FAIL\b", r"node fail(ure|ed)", r"job requeued", r"batch job .* node failure")
_register("WS-CLU-003", K, WARN, True, "Spot interruption",
          "A spot instance was reclaimed. Retried automatically; use on-demand queues for "
          "long jobs if it is frequent.",
          r"spot instance (interruption|termination)", r"spot interruption",
          r"SpotInstanceTermination", r"\bPREEMPTED\b", r"instance[- ]action.*terminate")
_register("WS-CLU-004", K, ERR, False, "Job submission rejected",
          "Slurm rejected the job (partition, constraints, account). Fix the cluster profile or "
          "the pipeline's resources.",
          r"sbatch: error", r"batch job submission failed", r"invalid partition",
          r"requested node configuration is not available", r"invalid account")
_register("WS-CLU-005", K, ERR, True, "Shared filesystem unavailable",
          "The cluster's shared filesystem (FSx) is unreachable or stale. Check the mount on "
          "the head node; retried automatically.",
          r"transport endpoint is not connected", r"stale file handle", r"lustre.*(error|fail)")

# -- unknown ----------------------------------------------------------------------------------
_register("WS-UNK-001", Category.UNKNOWN, ERR, True, "Unclassified error",
          "No known pattern matched. Read the step log; retried within the retry budget.")

UNKNOWN_CODE = "WS-UNK-001"
_CODE_IN_TEXT = re.compile(r"\bWS-(?:RES|NET|DAT|CFG|AWS|PIP|CLU|UNK)-\d{3}\b")

# AWS error codes (botocore ClientError) map straight to catalogue codes.
_AWS_CODES: dict[str, str] = {
    "AccessDenied": "WS-AWS-001", "AccessDeniedException": "WS-AWS-001", "403": "WS-AWS-001",
    "Forbidden": "WS-AWS-001", "AllAccessDisabled": "WS-AWS-001",
    "UnauthorizedOperation": "WS-AWS-001",
    "Throttling": "WS-AWS-002", "ThrottlingException": "WS-AWS-002", "SlowDown": "WS-AWS-002",
    "RequestLimitExceeded": "WS-AWS-002", "TooManyRequestsException": "WS-AWS-002",
    "ProvisionedThroughputExceededException": "WS-AWS-002", "RequestThrottled": "WS-AWS-002",
    "ExpiredToken": "WS-AWS-003", "ExpiredTokenException": "WS-AWS-003",
    "InvalidClientTokenId": "WS-AWS-003", "SignatureDoesNotMatch": "WS-AWS-003",
    "InvalidAccessKeyId": "WS-AWS-003",
    "NoSuchBucket": "WS-AWS-004", "NoSuchKey": "WS-AWS-004", "404": "WS-AWS-004",
    "NotFound": "WS-AWS-004", "ResourceNotFoundException": "WS-AWS-004",
    "ServiceUnavailable": "WS-AWS-005", "InternalError": "WS-AWS-005", "500": "WS-AWS-005",
    "503": "WS-AWS-005", "InternalFailure": "WS-AWS-005",
    "InsufficientInstanceCapacity": "WS-AWS-006",
    "VcpuLimitExceeded": "WS-AWS-007", "LimitExceededException": "WS-AWS-007",
}


def get(code: str) -> ErrorCode:
    """The catalogue entry for ``code``; unknown codes give the WS-UNK-001 entry."""
    return CATALOGUE.get(code) or CATALOGUE[UNKNOWN_CODE]


def remediation(code: str) -> str:
    return get(code).remediation


def diagnosis_for(code: str, *, confidence: float = 1.0, matched: str | None = None) -> Diagnosis:
    entry = get(code)
    return Diagnosis(entry.code, entry.category, entry.severity, entry.retryable, confidence,
                     entry.title, entry.remediation, matched)


def classify(text: str | None) -> Diagnosis:
    """Classify failure text (a step's output tail, an exception message, a sentinel body).

    The longest matching stretch of text wins; ties go to the longer pattern, then the code
    registered first. Confidence grows with the length of the evidence.
    """
    value = text or ""
    explicit = _CODE_IN_TEXT.search(value)
    if explicit and explicit.group(0) in CATALOGUE:
        return diagnosis_for(explicit.group(0), confidence=1.0, matched=explicit.group(0))
    best: tuple[int, int, int] | None = None
    best_entry: ErrorCode | None = None
    best_text = ""
    for order, entry in enumerate(CATALOGUE.values()):
        for pattern in entry._compiled:
            for match in pattern.finditer(value):
                span = len(match.group(0).strip())
                key = (span, len(pattern.pattern), -order)
                if best is None or key > best:
                    best, best_entry, best_text = key, entry, match.group(0).strip()
    if best_entry is None:
        return diagnosis_for(UNKNOWN_CODE, confidence=0.0)
    confidence = round(min(0.95, 0.5 + best[0] / 40), 2)
    return diagnosis_for(best_entry.code, confidence=confidence, matched=best_text)


def classify_exception(exc: BaseException) -> Diagnosis:
    """A botocore ClientError by its AWS error code, anything else by its text."""
    from wsmon.core.aws import error_code

    aws_code = error_code(exc)
    if aws_code and aws_code in _AWS_CODES:
        return diagnosis_for(_AWS_CODES[aws_code], confidence=1.0, matched=aws_code)
    return classify(f"{type(exc).__name__}: {exc}")


def aws_code(aws_error_code: str | None) -> str:
    """Catalogue code for an AWS error code (``AccessDenied`` -> ``WS-AWS-001``)."""
    if not aws_error_code:
        return UNKNOWN_CODE
    return _AWS_CODES.get(aws_error_code) or classify(aws_error_code).code


def is_retryable(code_or_diagnosis: str | Diagnosis | ErrorCode | None) -> bool:
    """Whether retrying can help. A code string, a Diagnosis or a catalogue entry."""
    if code_or_diagnosis is None:
        return get(UNKNOWN_CODE).retryable
    if isinstance(code_or_diagnosis, (Diagnosis, ErrorCode)):
        return code_or_diagnosis.retryable
    return get(str(code_or_diagnosis)).retryable


def format_report(diagnosis: Diagnosis) -> str:
    """A few human lines: code, title, retry decision, remediation."""
    retry = "retryable" if diagnosis.retryable else "not retryable"
    lines = [f"{diagnosis.code} {diagnosis.title} ({diagnosis.category.value}, "
             f"{diagnosis.severity.value}, {retry})"]
    if diagnosis.matched:
        lines.append(f"  matched: {diagnosis.matched}")
    lines.append(f"  fix: {diagnosis.remediation}")
    return "\n".join(lines)
