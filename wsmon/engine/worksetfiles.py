"""Parse and validate the files of a Daylily workset folder, and estimate what it will need.

Pure functions over bytes: no S3, no store. ``s3source`` feeds them what it downloaded;
``validate_local_folder`` feeds them a local directory (operators check before uploading).

The three files:

* ``daylily_work.yaml``: clone arguments, run suffix, export URI (each under the aliases users
  already write), optional ``workdir_name``, ``cluster_name``, ``budget``, ``notes``.
* ``daylily_info.yaml``: ``priority``, ``customer_id``, ``max_retries``,
  ``preferred_availability_zone`` and estimate overrides. Old files holding a copy of the earlier
  monitor's config are accepted; their keys are ignored.
* ``stage_samples.tsv``: the Daylily sample sheet (tab-separated, header line first).

Command values are split into argv words with POSIX shell rules (quote removal, backslash
escapes) by ``shell_words``; a shell only ever sees them one quoted word at a time (the runner's
shell-mode templates ``shlex.quote`` each word). Whatever the earlier monitor's shell
would have *interpreted* rather than passed on is refused, so a value can never mean something
different here than it did there: unquoted ``; & | < > ( )``, ``$(``/backtick/``${``/``$VAR``
expansions (also inside double quotes, where a shell still expands them), brace expansion,
a leading ``~`` or ``#``, and newlines or control characters anywhere (even quoted). Inside
single quotes everything is literal, so ``'a;b'`` is the one word ``a;b``. Glob characters are
passed literally, as bash does when nothing matches (``aligners=[sent,bwa2a,strobe]``).
``{workset}`` and ``{workdir_name}`` are substituted *after* splitting, inside each word, so a
workset name can never add words.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsmon.engine import diagnostics

WORK_FILE = "daylily_work.yaml"
INFO_FILE = "daylily_info.yaml"
SAMPLES_FILE = "stage_samples.tsv"
SAMPLE_DATA_DIR = "sample_data"
WORKSET_FILES = (WORK_FILE, INFO_FILE, SAMPLES_FILE)

TSV_COLUMNS = (
    "RUN_ID", "SAMPLE_ID", "EXPERIMENTID", "SAMPLE_TYPE", "LIB_PREP", "SEQ_VENDOR", "SEQ_PLATFORM",
    "LANE", "SEQBC_ID", "PATH_TO_CONCORDANCE_DATA_DIR", "R1_FQ", "R2_FQ", "STAGE_DIRECTIVE",
    "STAGE_TARGET", "SUBSAMPLE_PCT", "IS_POS_CTRL", "IS_NEG_CTRL", "N_X", "N_Y",
    "EXTERNAL_SAMPLE_ID",
)
REQUIRED_TSV_COLUMNS = ("SAMPLE_ID", "R1_FQ", "R2_FQ")
FASTQ_COLUMNS = ("R1_FQ", "R2_FQ")

# field -> aliases, first one is the canonical spelling shown in messages
WORK_KEY_ALIASES: dict[str, tuple[str, ...]] = {
    "clone_args": ("day-clone", "day_clone_args", "clone_args", "clone-args", "clone"),
    "run_suffix": ("dy-r", "dy_r", "dy", "run", "run_suffix", "run-suffix", "run_cmd", "run-command"),
    "export_uri": ("export_uri", "export-uri", "export"),
}
COMMAND_MAPPING_KEYS = ("suffix", "args", "cmd", "command")
ESTIMATE_KEYS = ("samples", "vcpus", "memory_gb", "storage_gb", "vcpu_hours", "cost_usd",
                 "duration_hours")
LEGACY_MONITOR_KEYS = frozenset({"aws", "monitor", "cluster", "pipeline"})

ERROR, WARNING, INFO = "error", "warning", "info"


# -- findings and the report ------------------------------------------------------------------
@dataclass
class Finding:
    """One validation result. ``message`` already names the file, line and column."""

    code: str
    severity: str
    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    remediation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def finding(code: str, text: str, *, file: str | None = None, line: int | None = None,
            column: int | None = None, severity: str | None = None) -> Finding:
    entry = diagnostics.get(code)
    if severity is None:
        severity = WARNING if entry.severity in (diagnostics.DiagSeverity.WARNING,
                                                 diagnostics.DiagSeverity.INFO) else ERROR
    where = file or ""
    if file and line is not None:
        where += f" line {line}"
        if column is not None:
            where += f", column {column}"
    message = f"{where}: {text}" if where else text
    return Finding(code, severity, message, file, line, column, entry.remediation)


@dataclass
class FastqRef:
    """Where a sample sheet's FASTQ lives: an S3 object, or (local validation) a file."""

    bucket: str | None
    key: str
    column: str
    line: int
    col: int
    value: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.bucket else self.key


@dataclass
class ValidationReport:
    target: str
    workset_id: str
    findings: list[Finding] = field(default_factory=list)
    work: dict[str, Any] | None = None
    info: dict[str, Any] | None = None
    sample_ids: list[str] = field(default_factory=list)
    rows: int = 0
    estimate: dict[str, Any] | None = None
    fastq: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def first_error(self) -> Finding | None:
        errs = self.errors
        return errs[0] if errs else None

    def findings_dicts(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "workset_id": self.workset_id, "valid": self.valid,
            "findings": self.findings_dicts(), "work": self.work, "info": self.info,
            "samples": len(self.sample_ids), "rows": self.rows, "estimate": self.estimate,
            "fastq": self.fastq,
        }


# -- one folder's budget ----------------------------------------------------------------------
# Validating takes about 18x the files' size in Python objects (measured on sample sheets of
# 10,000 and 40,000 rows); the estimate uses 20x.
MEMORY_PER_FILE_BYTE = 20


class BudgetExceeded(Exception):
    """A folder's validation went past its time or memory budget (WS-DAT-019)."""


class ValidationStopped(Exception):
    """The engine is shutting down: validation stops where it is, nothing is recorded."""


class Budget:
    """Time and memory one folder's validation may use. ``check`` is called between rows and
    between FASTQ checks, so a folder over its budget stops there instead of holding the poll;
    ``stop`` (the engine shutting down) stops it the same way."""

    def __init__(self, seconds: float, memory_bytes: int, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 stop: threading.Event | None = None) -> None:
        self.seconds = seconds
        self.memory_bytes = memory_bytes
        self.monotonic = monotonic
        self.stop = stop
        self.started = monotonic()

    def check(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise ValidationStopped("engine shutting down")
        spent = self.monotonic() - self.started
        if spent > self.seconds:
            raise BudgetExceeded(f"validation took more than {self.seconds:g}s "
                                 "(discovery.folder_time_budget_seconds); stopped there")

    def check_memory(self, file_bytes: int) -> None:
        needed = file_bytes * MEMORY_PER_FILE_BYTE
        if needed > self.memory_bytes:
            raise BudgetExceeded(f"its files ({file_bytes:,} bytes) would take about "
                                 f"{needed / 2**20:,.0f} MB to validate; the budget is "
                                 f"{self.memory_bytes / 2**20:,.0f} MB "
                                 "(discovery.folder_memory_budget_mb)")


def _no_budget() -> None:
    return None


# -- reading bytes safely ---------------------------------------------------------------------
@dataclass
class RawFile:
    """A file as fetched: ``data`` None when it was too large to read (``size`` says how big)."""

    size: int
    data: bytes | None


def decode_text(raw: RawFile, file: str, max_bytes: int, *, data_file: bool) -> tuple[str | None, list[Finding]]:
    """Text of a workset file, or findings saying why not (too large, NUL bytes, not UTF-8)."""
    big, binary = ("WS-DAT-010", "WS-DAT-011") if data_file else ("WS-CFG-011", "WS-CFG-011")
    if raw.size > max_bytes or raw.data is None or len(raw.data) > max_bytes:
        size = max(raw.size, len(raw.data or b""))
        return None, [finding(big, f"file is {size:,} bytes; the limit is {max_bytes:,} "
                                   "(discovery.max_file_bytes)", file=file)]
    data = raw.data
    if b"\x00" in data:
        return None, [finding(binary, "file holds NUL bytes: binary data, not text", file=file)]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, [finding(binary, f"not UTF-8 text (invalid byte at offset {exc.start})",
                              file=file, line=line)]
    return text, []


# -- shell words ------------------------------------------------------------------------------
class ShellSyntaxError(ValueError):
    def __init__(self, code: str, message: str, offset: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.offset = offset


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# a folder name may not even hold a tab: it ends up in tab-separated index logs and tmux names
_NAME_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_EXPANDING_AFTER_DOLLAR = frozenset("({'\"@*#?$!-0123456789") | _NAME_START
_OPERATORS = {";": "';' would end the command", "&": "'&' would background or chain commands",
              "|": "'|' would pipe into another command", "<": "'<' would redirect input",
              ">": "'>' would redirect output", "(": "'(' would start a subshell",
              ")": "')' is shell syntax", "`": "a backtick would run a command"}


def has_control_chars(text: str) -> bool:
    return bool(_CONTROL.search(text))


def shell_words(raw: str) -> list[str]:
    """Split ``raw`` into words exactly as a POSIX shell would (quote removal included).

    Raises ``ShellSyntaxError`` (code WS-CFG-004/005/010, offset into ``raw``) for anything the
    shell would have interpreted instead of passing on; see the module docstring.
    """
    bad = _CONTROL.search(raw)
    if bad:
        char = bad.group(0)
        if char == "\n":
            raise ShellSyntaxError("WS-CFG-004", "a newline would start another command", bad.start())
        raise ShellSyntaxError("WS-CFG-010", f"control character {char!r}", bad.start())
    words: list[str] = []
    cur: list[str] | None = None
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch in " \t":
            if cur is not None:
                words.append("".join(cur))
                cur = None
            i += 1
            continue
        if cur is None:
            cur = []
            if ch == "#":
                raise ShellSyntaxError("WS-CFG-004", "'#' would start a comment", i)
            if ch == "~":
                raise ShellSyntaxError("WS-CFG-004", "'~' would expand to a home directory", i)
        if ch == "\\":
            if i + 1 < n:
                cur.append(raw[i + 1])
                i += 2
            else:
                cur.append("\\")
                i += 1
            continue
        if ch == "'":
            end = raw.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("WS-CFG-005", "single quote is never closed", i)
            cur.extend(raw[i + 1:end])
            i = end + 1
            continue
        if ch == '"':
            start = i
            i += 1
            while True:
                if i >= n:
                    raise ShellSyntaxError("WS-CFG-005", "double quote is never closed", start)
                c = raw[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and raw[i + 1] in '$`"\\':
                    cur.append(raw[i + 1])
                    i += 2
                    continue
                if c == "`":
                    raise ShellSyntaxError("WS-CFG-004", _OPERATORS["`"], i)
                if c == "$" and i + 1 < n and raw[i + 1] in _EXPANDING_AFTER_DOLLAR - {"'"}:
                    raise ShellSyntaxError("WS-CFG-004", "'$' would expand a variable or command "
                                           "(even inside double quotes)", i)
                cur.append(c)
                i += 1
            continue
        if ch in _OPERATORS:
            raise ShellSyntaxError("WS-CFG-004", _OPERATORS[ch], i)
        if ch == "$" and i + 1 < n and raw[i + 1] in _EXPANDING_AFTER_DOLLAR:
            raise ShellSyntaxError("WS-CFG-004", "'$' would expand a variable or command", i)
        if ch == "{" and _is_brace_expansion(raw, i):
            raise ShellSyntaxError("WS-CFG-004", "'{a,b}' would be brace-expanded", i)
        cur.append(ch)
        i += 1
    if cur is not None:
        words.append("".join(cur))
    return words


def _is_brace_expansion(raw: str, start: int) -> bool:
    depth = 0
    for j in range(start, len(raw)):
        c = raw[j]
        if c in " \t'\"\\":
            return False
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                inner = raw[start + 1:j]
                return "," in inner or ".." in inner
    return False


def substitute(word: str, workset_id: str, workdir_name: str) -> str:
    return word.replace("{workset}", workset_id).replace("{workdir_name}", workdir_name)


def default_workdir_name(workset_id: str) -> str:
    """A directory name derived from the workset id: anything unusual becomes '_'."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", workset_id).strip(".")
    return name or "workset"


# -- YAML -------------------------------------------------------------------------------------
@dataclass
class _YamlDoc:
    data: Any
    positions: dict[str, tuple[int, int]]  # lower-cased top-level key -> (line, column) of value
    key_spelling: dict[str, str]


# Bounds on a workset YAML file (billion-laughs defence). Real files have no aliases and a
# depth of two or three; the bounds are far above that and far below what hurts.
YAML_MAX_ALIASES = 100
YAML_MAX_DEPTH = 64
YAML_MAX_EXPANDED = 1_000_000  # what aliases may add, in scalar characters + nodes, beyond the text


class YamlTooComplex(yaml.YAMLError):
    """A YAML document over one of the bounds; ``mark`` says where it was noticed."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses too many aliases or too deep nesting while composing,
    before anything is constructed. ``expanded_size`` bounds what the aliases expand to."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > YAML_MAX_ALIASES:
                raise YamlTooComplex(f"more than {YAML_MAX_ALIASES} alias references (*name)",
                                     self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > YAML_MAX_DEPTH:
                raise YamlTooComplex(f"nested deeper than {YAML_MAX_DEPTH} levels",
                                     self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def expanded_size(root: yaml.Node, limit: int = YAML_MAX_EXPANDED) -> int:
    """Size of the document with every alias expanded (scalar characters + nodes), computed
    once per distinct node, so an alias bomb is measured without being expanded. Raises
    ``YamlTooComplex`` past ``limit`` or on a recursive alias (a node that contains itself)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1 + len(node.value)
            continue
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value))
        if not children_done:
            if key in on_path:
                raise YamlTooComplex("an alias refers to a node that contains it", node.start_mark)
            on_path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        on_path.discard(key)
        total = 1 + sum(sizes[id(child)] for child in children)
        if total > limit:
            raise YamlTooComplex(f"aliases expand it to more than {limit:,} characters and "
                                 "values", node.start_mark)
        sizes[key] = total
    return sizes[id(root)]


def _load_yaml(text: str, file: str) -> tuple[_YamlDoc | None, list[Finding]]:
    findings: list[Finding] = []
    loader = BoundedSafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            expanded_size(node, YAML_MAX_EXPANDED + len(text))
        data = loader.construct_document(node) if node is not None else None
    except YamlTooComplex as exc:
        mark = exc.mark
        return None, [finding("WS-CFG-015", f"YAML refused: {exc.message}", file=file,
                              line=mark.line + 1 if mark else None,
                              column=mark.column + 1 if mark else None)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or str(exc).splitlines()[0]
        return None, [finding("WS-CFG-002", f"YAML does not parse: {problem}", file=file,
                              line=mark.line + 1 if mark else None,
                              column=mark.column + 1 if mark else None)]
    except (yaml.YAMLError, RecursionError) as exc:
        return None, [finding("WS-CFG-002", f"YAML does not parse: {exc}", file=file)]
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [finding("WS-CFG-002", f"top level is a {type(data).__name__}, not a mapping "
                              "of key: value", file=file, line=1, column=1)]
    positions: dict[str, tuple[int, int]] = {}
    spelling: dict[str, str] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value).lower()
            if key in positions:
                findings.append(finding("WS-CFG-007", f"key {key_node.value!r} appears twice; the "
                                        "last one is used", file=file,
                                        line=key_node.start_mark.line + 1,
                                        column=key_node.start_mark.column + 1))
            positions[key] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
            spelling[key] = str(key_node.value)
    return _YamlDoc(data, positions, spelling), findings


def _lower_keys(data: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in data.items()}


def _command_text(value: Any, key: str, file: str, pos: tuple[int, int] | None) -> tuple[str | None, list[Finding]]:
    """A command value as one string: string, list (joined with spaces) or mapping."""
    line, col = pos or (None, None)
    if value is None:
        return None, []
    if isinstance(value, bool):
        return None, [finding("WS-CFG-006", f"{key}: expected text, a list or a mapping, got "
                              f"{str(value).lower()}", file=file, line=line, column=col)]
    if isinstance(value, (str, int, float)):
        return str(value), []
    if isinstance(value, list):
        parts: list[str] = []
        for item in value:
            if isinstance(item, (dict, list)) or item is None:
                return None, [finding("WS-CFG-006", f"{key}: list items must be plain values",
                                      file=file, line=line, column=col)]
            parts.append(str(item))
        return " ".join(parts), []
    if isinstance(value, dict):
        lowered = _lower_keys(value)
        for mk in COMMAND_MAPPING_KEYS:
            if mk in lowered:
                return _command_text(lowered[mk], f"{key}.{mk}", file, pos)
        return None, [finding("WS-CFG-006", f"{key}: a mapping needs one of "
                              f"{', '.join(COMMAND_MAPPING_KEYS)}", file=file, line=line, column=col)]
    return None, [finding("WS-CFG-006", f"{key}: unsupported value type {type(value).__name__}",
                          file=file, line=line, column=col)]


def _pick_alias(data: dict[str, Any], doc: _YamlDoc, field_name: str, file: str) -> tuple[str | None, Any, list[Finding]]:
    present = [a for a in WORK_KEY_ALIASES[field_name] if a in data and data[a] not in (None, "")]
    if not present:
        return None, None, []
    chosen = present[0]
    findings: list[Finding] = []
    for other in present[1:]:
        if data[other] != data[chosen]:
            line, col = doc.positions.get(other, (None, None))
            findings.append(finding(
                "WS-CFG-007", f"{doc.key_spelling.get(other, other)!r} and "
                f"{doc.key_spelling.get(chosen, chosen)!r} both set {field_name} with different "
                f"values; using {doc.key_spelling.get(chosen, chosen)!r}",
                file=file, line=line, column=col, severity=ERROR))
    return chosen, data[chosen], findings


def _split_command(text: str, key: str, file: str, pos: tuple[int, int] | None,
                   workset_id: str, workdir_name: str) -> tuple[list[str] | None, list[Finding]]:
    line, col = pos or (None, None)
    try:
        words = shell_words(text.strip())
    except ShellSyntaxError as exc:
        return None, [finding(exc.code, f"{key}: {exc.message} (character {exc.offset + 1} of the "
                              f"value {text.strip()!r})", file=file, line=line, column=col)]
    return [substitute(w, workset_id, workdir_name) for w in words], []


def parse_work_yaml(text: str, workset_id: str, *, file: str = WORK_FILE) -> tuple[dict[str, Any] | None, list[Finding]]:
    """``metadata["work"]`` from daylily_work.yaml, and findings. None when unusable."""
    doc, findings = _load_yaml(text, file)
    if doc is None:
        return None, findings
    data = _lower_keys(doc.data)
    work: dict[str, Any] = {"clone_args": [], "run_suffix": [], "export_uri": None,
                            "workdir_name": None, "cluster_name": None, "budget": None,
                            "notes": None}

    def pos(key: str | None) -> tuple[int, int] | None:
        return doc.positions.get(key) if key else None

    # workdir_name first: the command values may refer to it
    workdir_name = default_workdir_name(workset_id)
    raw_workdir = data.get("workdir_name")
    if raw_workdir not in (None, ""):
        line, col = pos("workdir_name") or (None, None)
        value = substitute(str(raw_workdir), workset_id, workdir_name).strip()
        if (not isinstance(raw_workdir, (str, int)) or "/" in value or value in (".", "..")
                or has_control_chars(value) or not value):
            findings.append(finding("WS-CFG-006", f"workdir_name {str(raw_workdir)!r} must be one "
                                    "directory name (no '/', not '.' or '..', no control "
                                    "characters)", file=file, line=line, column=col))
        else:
            workdir_name = value
    work["workdir_name"] = workdir_name

    for field_name in ("clone_args", "run_suffix"):
        key, value, alias_findings = _pick_alias(data, doc, field_name, file)
        findings += alias_findings
        if key is None:
            continue
        shown = doc.key_spelling.get(key, key)
        text_value, problems = _command_text(value, shown, file, pos(key))
        findings += problems
        if text_value is None:
            continue
        words, problems = _split_command(text_value, shown, file, pos(key), workset_id, workdir_name)
        findings += problems
        if words is not None:
            work[field_name] = words
    if not work["run_suffix"] and not any(f.code in ("WS-CFG-004", "WS-CFG-005", "WS-CFG-006",
                                                      "WS-CFG-010") for f in findings):
        findings.append(finding("WS-CFG-003", "no run suffix: add dy-r (or one of "
                                f"{', '.join(WORK_KEY_ALIASES['run_suffix'][1:])})", file=file))

    key, value, alias_findings = _pick_alias(data, doc, "export_uri", file)
    findings += alias_findings
    if key is not None:
        line, col = pos(key) or (None, None)
        if not isinstance(value, str):
            findings.append(finding("WS-CFG-006", f"{doc.key_spelling.get(key, key)}: expected an "
                                    "s3:// URI", file=file, line=line, column=col))
        else:
            uri = substitute(value.strip(), workset_id, workdir_name)
            if has_control_chars(uri):
                findings.append(finding("WS-CFG-010", f"{doc.key_spelling.get(key, key)} holds "
                                        "control characters", file=file, line=line, column=col))
            else:
                work["export_uri"] = uri
                if not uri.startswith("s3://") or len(uri) <= len("s3://"):
                    findings.append(finding("WS-CFG-009", f"export URI {uri!r} is not s3://",
                                            file=file, line=line, column=col))

    cluster = data.get("cluster_name")
    if cluster not in (None, ""):
        line, col = pos("cluster_name") or (None, None)
        if not isinstance(cluster, (str, int)) or has_control_chars(str(cluster)):
            findings.append(finding("WS-CFG-006", "cluster_name must be a plain name", file=file,
                                    line=line, column=col))
        else:
            work["cluster_name"] = str(cluster).strip()
    budget = data.get("budget")
    if budget not in (None, ""):
        number = _number(budget)
        if number is None or number < 0:
            line, col = pos("budget") or (None, None)
            findings.append(finding("WS-CFG-006", f"budget {budget!r} must be a number of USD >= 0",
                                    file=file, line=line, column=col))
        else:
            work["budget"] = number
    notes = data.get("notes")
    if notes is not None:
        work["notes"] = str(notes)
    return work, findings


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and number not in (float("inf"), float("-inf")) else None


def parse_info_yaml(text: str, *, file: str = INFO_FILE) -> tuple[dict[str, Any] | None, list[Finding]]:
    """``metadata["info"]`` from daylily_info.yaml, and findings."""
    doc, findings = _load_yaml(text, file)
    if doc is None:
        return None, findings
    data = _lower_keys(doc.data)
    info: dict[str, Any] = {"priority": "normal", "customer_id": None, "max_retries": None,
                            "preferred_availability_zone": None}

    def where(key: str) -> dict[str, Any]:
        line, col = doc.positions.get(key, (None, None))
        return {"file": file, "line": line, "column": col}

    priority = data.get("priority")
    if priority not in (None, ""):
        value = str(priority).strip().lower()
        if value not in ("urgent", "normal", "low"):
            findings.append(finding("WS-CFG-006", f"priority {str(priority)!r} is not one of urgent, "
                                    "normal, low", **where("priority")))
        else:
            info["priority"] = value
    def plain_name(key: str, message: str) -> None:
        value = data.get(key)
        if value in (None, ""):
            return
        if isinstance(value, (dict, list)) or has_control_chars(str(value)):
            findings.append(finding("WS-CFG-006", message, **where(key)))
        else:
            info[key] = str(value).strip()

    plain_name("customer_id", "customer_id must be a plain name")
    retries = data.get("max_retries")
    if retries not in (None, ""):
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
            findings.append(finding("WS-CFG-006", f"max_retries {retries!r} must be a whole number "
                                    "from 0 to 100", **where("max_retries")))
        else:
            info["max_retries"] = retries
    plain_name("preferred_availability_zone",
               "preferred_availability_zone must be a zone name such as us-west-2d")
    overrides: dict[str, float] = {}
    nested = data.get("estimate") or data.get("estimates")
    sources: list[tuple[dict[str, Any], str]] = [(data, "")]
    if isinstance(nested, dict):
        sources.append((_lower_keys(nested), "estimate."))
    for source, label in sources:
        for key in ESTIMATE_KEYS:
            if source.get(key) in (None, ""):
                continue
            number = _number(source[key])
            if number is None or number < 0:
                findings.append(finding("WS-CFG-006", f"{label}{key} {source[key]!r} must be a "
                                        "number >= 0", **where(key if not label else "estimate")))
            else:
                overrides[key] = number
    if overrides:
        info["estimate"] = overrides
    ignored = sorted(k for k in data if k in LEGACY_MONITOR_KEYS)
    if ignored:
        # a copy of the earlier monitor's config: accepted, its sections mean nothing here
        info["ignored_keys"] = ignored
    return info, findings


# -- stage_samples.tsv ------------------------------------------------------------------------
@dataclass
class SampleSheet:
    columns: list[str]
    rows: list[dict[str, str]]
    line_numbers: list[int]
    column_index: dict[str, int]
    line_texts: list[str] = field(default_factory=list)

    def column_of(self, row_number: int, column: str) -> int:
        """1-based character column where ``column``'s field starts on row ``row_number``."""
        idx = self.column_index[column]
        fields = self.line_texts[row_number].split("\t")
        return sum(len(f) + 1 for f in fields[:idx]) + 1


def parse_stage_tsv(text: str, *, file: str = SAMPLES_FILE, max_rows: int | None = None,
                    check: Callable[[], None] = _no_budget) -> tuple[SampleSheet | None, list[Finding]]:
    """The sample sheet and its findings; past ``max_rows`` sample lines only WS-DAT-016."""
    findings: list[Finding] = []
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    if not any(ln.strip() for ln in lines):
        return None, [finding("WS-DAT-002", "the file is empty (no header line)", file=file)]
    header_line = next(i for i, ln in enumerate(lines) if ln.strip())
    if max_rows is not None:
        rows = sum(1 for ln in lines[header_line + 1:] if ln.strip())
        if rows > max_rows:
            return None, [finding("WS-DAT-016", f"{rows:,} sample rows; the limit is {max_rows:,} "
                                  "(discovery.max_sample_rows)", file=file)]
    header = [h.strip() for h in lines[header_line].split("\t")]
    if has_control_chars(lines[header_line].replace("\t", " ")):
        return None, [finding("WS-DAT-006", "the header holds control characters", file=file,
                              line=header_line + 1, column=1)]
    index = {name: i for i, name in reversed(list(enumerate(header))) if name}
    missing_required = [c for c in REQUIRED_TSV_COLUMNS if c not in index]
    if missing_required:
        hint = ""
        if "\t" not in lines[header_line] and ("," in lines[header_line] or "  " in lines[header_line]):
            hint = " (the header has no tab: is the file comma- or space-separated?)"
        for col in missing_required:
            findings.append(finding("WS-DAT-004", f"required column {col} is missing from the "
                                    f"header{hint}", file=file, line=header_line + 1))
    absent = [c for c in TSV_COLUMNS if c not in index and c not in REQUIRED_TSV_COLUMNS]
    if absent:
        findings.append(finding("WS-DAT-005", f"column{'s' if len(absent) > 1 else ''} "
                                f"{', '.join(absent)} missing from the header", file=file,
                                line=header_line + 1))
    sheet = SampleSheet(header, [], [], index)
    seen: dict[tuple[str, str, str], int] = {}
    for i in range(header_line + 1, len(lines)):
        line = lines[i]
        if not line.strip():
            continue
        lineno = i + 1
        if i % 1000 == 0:
            check()
        fields = line.split("\t")
        if len(fields) > len(header):
            extra = fields[len(header):]
            if any(f.strip() for f in extra):
                findings.append(finding("WS-DAT-006", f"{len(fields)} fields but the header has "
                                        f"{len(header)}", file=file, line=lineno,
                                        column=sum(len(f) + 1 for f in fields[:len(header)]) + 1))
                continue
            fields = fields[:len(header)]
        elif len(fields) < len(header):
            fields = fields + [""] * (len(header) - len(fields))
        bad = _CONTROL.search(line.replace("\t", " "))
        if bad:
            findings.append(finding("WS-DAT-006", f"control character {bad.group(0)!r} in the row",
                                    file=file, line=lineno, column=bad.start() + 1))
            continue
        row = {name: fields[idx].strip() for name, idx in index.items()}
        sheet.rows.append(row)
        sheet.line_numbers.append(lineno)
        sheet.line_texts.append(line)
        for col in REQUIRED_TSV_COLUMNS:
            if col in index and not row.get(col):
                findings.append(finding("WS-DAT-006", f"{col} is empty", file=file, line=lineno,
                                        column=sheet.column_of(len(sheet.rows) - 1, col)))
        dedup = (row.get("SAMPLE_ID", ""), row.get("LANE", ""), row.get("R1_FQ", ""))
        if all(dedup[::2]) and dedup in seen:
            findings.append(finding("WS-DAT-013", f"same SAMPLE_ID, LANE and R1_FQ as line "
                                    f"{seen[dedup]}", file=file, line=lineno, column=1))
        seen.setdefault(dedup, lineno)
    if not sheet.rows and not any(f.code == "WS-DAT-006" for f in findings):
        findings.append(finding("WS-DAT-003", "a header but no sample rows", file=file,
                                line=header_line + 1))
    return sheet, findings


_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def resolve_fastq(value: str, *, workset_bucket: str | None, workset_prefix: str,
                  allowed_buckets: Iterable[str], column: str = "R1_FQ", line: int = 0,
                  col: int = 0, file: str = SAMPLES_FILE,
                  bucket_unknown_ok: bool = False) -> tuple[FastqRef | None, Finding | None]:
    """Where an R1_FQ/R2_FQ value points, or the finding that says why it may not.

    A relative path is taken from the workset folder and must lie in ``sample_data/``; an
    ``s3://`` URI must be in the workset's bucket or an allowed one. '..' is never accepted.
    """
    value = value.strip()
    where = {"file": file, "line": line or None, "column": col or None}
    if value.startswith("s3://"):
        bucket, _, key = value[5:].partition("/")
        if not bucket or not key or key.endswith("/"):
            return None, finding("WS-DAT-007", f"{column} {value!r} is not an s3://BUCKET/KEY URI",
                                 **where)
        if ".." in key.split("/"):
            return None, finding("WS-DAT-007", f"{column} {value!r} has '..' in its key", **where)
        allowed = set(allowed_buckets)
        if workset_bucket is not None:
            allowed.add(workset_bucket)
        if bucket not in allowed:
            if workset_bucket is None and bucket_unknown_ok:
                return FastqRef(bucket, key, column, line, col, value), finding(
                    "WS-DAT-009", f"{column} is in bucket {bucket!r}: allowed only if the workset is "
                    "uploaded to that bucket or it is in discovery.allowed_buckets",
                    severity=WARNING, **where)
            return None, finding("WS-DAT-009", f"{column} {value!r} is in bucket {bucket!r}, "
                                 "neither the workset's bucket nor in discovery.allowed_buckets",
                                 **where)
        return FastqRef(bucket, key, column, line, col, value), None
    if value.startswith("/") or _URI_SCHEME.match(value):
        return None, finding("WS-DAT-007", f"{column} {value!r} must be sample_data/<file> or an "
                             "s3:// URI", **where)
    parts = value.split("/")
    if ".." in parts:
        return None, finding("WS-DAT-007", f"{column} {value!r} has '..': it must stay inside "
                             "sample_data/", **where)
    parts = [p for p in parts if p not in ("", ".")]
    if len(parts) < 2 or parts[0] != SAMPLE_DATA_DIR:
        return None, finding("WS-DAT-007", f"{column} {value!r} is outside sample_data/ (write "
                             f"sample_data/<file>)", **where)
    return FastqRef(workset_bucket, workset_prefix + "/".join(parts), column, line, col, value), None


# -- estimate ---------------------------------------------------------------------------------
def estimate_resources(samples: int, discovery: Any, overrides: Mapping[str, float] | None = None,
                       ) -> dict[str, Any]:
    """The seeds' resource estimate from the sample count and the config's assumptions.

    ``overrides`` (from daylily_info.yaml) replace computed values; derived values follow them.
    """
    given = dict(overrides or {})
    n = int(given.get("samples", samples))
    vcpus = int(given.get("vcpus", discovery.estimate_vcpus)) or 1
    vcpu_hours = float(given.get("vcpu_hours", n * discovery.estimate_vcpu_hours_per_sample))
    duration = float(given.get("duration_hours",
                               discovery.estimate_overhead_hours + vcpu_hours / vcpus))
    return {
        "samples": n,
        "vcpus": vcpus,
        "memory_gb": round(float(given.get("memory_gb", discovery.estimate_memory_gb)), 2),
        "storage_gb": round(float(given.get("storage_gb", n * discovery.estimate_storage_gb_per_sample)), 2),
        "vcpu_hours": round(vcpu_hours, 2),
        "cost_usd": round(float(given.get("cost_usd", vcpu_hours * discovery.estimate_cost_per_vcpu_hour)), 2),
        "duration_hours": round(duration, 2),
    }


# -- the whole folder -------------------------------------------------------------------------
ExistsCheck = Callable[[list[FastqRef]], Mapping[str, tuple[str, str] | None]]
"""Given refs, returns uri -> None (exists) or (code, message)."""


def _discovery(settings: Any) -> Any:
    return getattr(settings, "discovery", settings)


def validate_files(workset_id: str, files: Mapping[str, RawFile | None], *, settings: Any,
                   target: str, workset_bucket: str | None, workset_prefix: str,
                   has_sample_data: bool | None, exists: ExistsCheck | None,
                   extra_allowed_buckets: Iterable[str] = (),
                   budget: Budget | None = None) -> ValidationReport:
    """Every check over a folder's files. ``files[name]`` None means the file is missing.

    ``exists`` checks FASTQ references (None: not checked, an info finding says so).
    ``budget``: raises ``BudgetExceeded`` (or ``ValidationStopped``) part way through.
    """
    disc = _discovery(settings)
    check = budget.check if budget is not None else _no_budget
    if budget is not None:
        budget.check_memory(sum(len(raw.data or b"") for raw in files.values() if raw is not None))
    report = ValidationReport(target=target, workset_id=workset_id)
    add = report.findings.extend
    if workset_id in (".", ".."):
        add([finding("WS-DAT-015", f"workset folder is named {workset_id!r}")])
    elif _NAME_CONTROL.search(workset_id):
        add([finding("WS-DAT-015", "workset folder name holds control characters: "
                     f"{workset_id.encode('unicode_escape').decode('ascii')!r}")])
    max_bytes = disc.max_file_bytes

    def read(name: str, missing_code: str, parse: Callable[[str], tuple[Any, list[Finding]]],
             data_file: bool = False) -> Any:
        """``name`` decoded and parsed, its findings added; None when missing or unreadable."""
        raw = files.get(name)
        if raw is None:
            add([finding(missing_code, f"{name} is missing", file=name)])
            return None
        text, problems = decode_text(raw, name, max_bytes, data_file=data_file)
        add(problems)
        if text is None:
            return None
        parsed, problems = parse(text)
        add(problems)
        return parsed

    report.work = read(WORK_FILE, "WS-CFG-001", lambda text: parse_work_yaml(text, workset_id))
    report.info = read(INFO_FILE, "WS-CFG-008", parse_info_yaml)

    if has_sample_data is False:
        add([finding("WS-DAT-012", "sample_data/ is missing or holds no object",
                     file=SAMPLE_DATA_DIR + "/")])

    sheet: SampleSheet | None = read(
        SAMPLES_FILE, "WS-DAT-001",
        lambda text: parse_stage_tsv(text, max_rows=disc.max_sample_rows, check=check),
        data_file=True)

    refs: list[FastqRef] = []
    if sheet is not None:
        report.rows = len(sheet.rows)
        ids: dict[str, None] = {}  # ordered and O(1) membership: a list made this quadratic
        warned_buckets: set[str | None] = set()
        allowed_buckets = list(disc.allowed_buckets) + list(extra_allowed_buckets)
        for number, row in enumerate(sheet.rows):
            if number % 1000 == 0:
                check()
            sid = row.get("SAMPLE_ID", "")
            if sid:
                ids.setdefault(sid)
            for column in FASTQ_COLUMNS:
                value = row.get(column, "")
                if column not in sheet.column_index or not value:
                    continue
                ref, problem = resolve_fastq(
                    value, workset_bucket=workset_bucket, workset_prefix=workset_prefix,
                    allowed_buckets=allowed_buckets,
                    column=column, line=sheet.line_numbers[number],
                    col=sheet.column_of(number, column), bucket_unknown_ok=workset_bucket is None)
                if problem is not None:
                    # one "bucket unknown until upload" warning per bucket, not per row
                    bucket_note = problem.severity == WARNING and ref is not None
                    if not bucket_note or ref.bucket not in warned_buckets:
                        add([problem])
                    if bucket_note:
                        warned_buckets.add(ref.bucket)
                if ref is not None:
                    refs.append(ref)
        report.sample_ids = list(ids)
        report.fastq = sorted({r.uri for r in refs})
        if ids:
            overrides = (report.info or {}).get("estimate")
            report.estimate = estimate_resources(len(ids), disc, overrides)

    if refs:
        unique: dict[str, FastqRef] = {}
        for r in refs:
            unique.setdefault(r.uri, r)
        if exists is None:
            add([finding("WS-DAT-008", f"{len(unique)} FASTQ location(s) not checked for "
                         "existence here", file=SAMPLES_FILE, severity=INFO)])
        else:
            results = exists(list(unique.values()))
            for uri, ref in unique.items():
                outcome = results.get(uri)
                if outcome is None:
                    continue
                code, message = outcome
                add([finding(code, f"{ref.column} {ref.value!r}: {message}", file=SAMPLES_FILE,
                             line=ref.line, column=ref.col)])
    report.findings = cap_findings(report.findings, disc.max_findings_per_folder)
    return report


def cap_findings(findings: list[Finding], limit: int) -> list[Finding]:
    """The first ``limit`` findings and one WS-DAT-017 that counts the rest by code.

    The count is an error when an error was left out, so a capped report is exactly as valid
    as the whole one; the stored record stays small whatever the folder holds."""
    if len(findings) <= limit:
        return findings
    kept, rest = findings[:limit], findings[limit:]
    by_code: dict[str, int] = {}
    for item in rest:
        by_code[item.code] = by_code.get(item.code, 0) + 1
    summary = ", ".join(f"{code} x{count:,}" for code, count in sorted(by_code.items()))
    severity = ERROR if any(item.severity == ERROR for item in rest) else WARNING
    return kept + [finding("WS-DAT-017", f"{len(rest):,} more findings not kept ({summary}); "
                           "wsmon validate lists them all", severity=severity)]


def _read_local(path: Path, max_bytes: int) -> RawFile | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if not path.is_file():
        return None
    if size > max_bytes:
        return RawFile(size, None)
    with path.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    return RawFile(max(size, len(data)), data)


def validate_local_folder(path: str | os.PathLike[str], settings: Any, *,
                          exists: ExistsCheck | None = None) -> ValidationReport:
    """Every check on a local workset folder (before upload).

    Relative FASTQ paths are checked on disk. ``s3://`` ones are checked only when ``exists``
    is given (``wsmon validate --check-s3``); their bucket is unknown until upload, so a bucket
    that is not allowed is a warning here.
    """
    folder = Path(path)
    disc = _discovery(settings)
    workset_id = folder.resolve().name
    files = {name: _read_local(folder / name, disc.max_file_bytes) for name in WORKSET_FILES}
    sample_dir = folder / SAMPLE_DATA_DIR
    has_sample_data = sample_dir.is_dir() and any(p.is_file() for p in sample_dir.rglob("*"))
    root = folder.resolve()

    def check(refs: list[FastqRef]) -> dict[str, tuple[str, str] | None]:
        out: dict[str, tuple[str, str] | None] = {}
        s3_refs = [r for r in refs if r.bucket]
        for ref in refs:
            if ref.bucket:
                continue
            local = (folder / ref.key).resolve()
            if root not in local.parents or not local.is_file():
                out[ref.uri] = ("WS-DAT-008", f"no file {ref.key} in the folder")
            else:
                out[ref.uri] = None
        if s3_refs:
            if exists is None:
                out.update({r.uri: None for r in s3_refs})
            else:
                out.update(exists(s3_refs))
        return out

    sources = [s.bucket for s in getattr(disc, "sources", [])]
    report = validate_files(workset_id, files, settings=disc, target=str(folder),
                            workset_bucket=None, workset_prefix="", has_sample_data=has_sample_data,
                            exists=check, extra_allowed_buckets=sources)
    if exists is None and any(r.startswith("s3://") for r in report.fastq):
        report.findings.append(finding(
            "WS-DAT-008", "s3:// FASTQ URIs were not checked (use --check-s3, or validate the "
            "uploaded folder)", file=SAMPLES_FILE, severity=INFO))
    return report


def s3_exists_checker(s3_client: Any, workers: int, budget: Budget | None = None) -> ExistsCheck:
    """HEAD each FASTQ object in a bounded pool; 404 -> WS-DAT-008, other errors by AWS code.
    ``budget`` is checked before each HEAD."""
    from botocore.exceptions import ClientError

    within_budget = budget.check if budget is not None else _no_budget

    def head(ref: FastqRef) -> tuple[str, tuple[str, str] | None]:
        within_budget()
        try:
            s3_client.head_object(Bucket=ref.bucket, Key=ref.key)
            return ref.uri, None
        except ClientError as exc:
            from wsmon.core.aws import error_code

            code = error_code(exc) or "?"
            if code in ("404", "NoSuchKey", "NotFound"):
                return ref.uri, ("WS-DAT-008", "object not found")
            return ref.uri, (diagnostics.aws_code(code), f"cannot check: {code} on HEAD")
        except Exception as exc:  # endpoint down: report, do not crash the poll
            return ref.uri, (diagnostics.classify_exception(exc).code,
                             f"cannot check: {type(exc).__name__}")

    def check(refs: list[FastqRef]) -> dict[str, tuple[str, str] | None]:
        if not refs:
            return {}
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(refs))),
                                thread_name_prefix="wsmon-head") as pool:
            return dict(pool.map(head, refs))

    return check
