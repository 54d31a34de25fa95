"""What one operator action did: done, refused (with the reason), changed meanwhile, not found.

Front ends render it their own way (the dashboard a toast, the CLI a line and an exit code) but
never decide it: the result and the words come from the operation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from wsmon.core.exit_codes import EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED


class Result(str, Enum):
    DONE = "done"
    REFUSED = "refused"
    CHANGED = "changed"  # the record is not the one the operator saw; nothing was written
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Outcome:
    action: str
    key: str
    result: Result
    message: str  # plain text; may contain untrusted parts, front ends sanitise when showing
    current: Any = None  # the record as the store holds it after the operation (or now)
    findings: tuple[dict[str, Any], ...] = field(default=())

    @property
    def done(self) -> bool:
        return self.result is Result.DONE

    @property
    def changed(self) -> bool:
        return self.result is Result.CHANGED

    @property
    def refused(self) -> bool:
        return self.result in (Result.REFUSED, Result.NOT_FOUND)

    @property
    def exit_code(self) -> int:
        """The CLI's exit code for this outcome (docs/cli.md)."""
        if self.result is Result.DONE:
            return EXIT_OK
        if self.result is Result.NOT_FOUND:
            return EXIT_NOT_FOUND
        return EXIT_REFUSED

    def verdict(self) -> str:
        """The message with what came of it: ``refused: it is running: use stop``."""
        prefix = {Result.DONE: "", Result.REFUSED: "refused: ",
                  Result.CHANGED: "not done, changed meanwhile: ",
                  Result.NOT_FOUND: "not found: "}[self.result]
        return prefix + self.message

    def line(self) -> str:
        """One line for a person: ``retry ws-1: refused: it is running: use stop``."""
        return f"{self.action} {self.key}: {self.verdict()}"

    def finding_lines(self) -> list[str]:
        """The validation findings behind a refusal, one line each, with their codes."""
        out = []
        for f in self.findings:
            where = ":".join(str(f[k]) for k in ("file", "line", "column")
                             if f.get(k) not in (None, ""))
            text = f"{str(f.get('severity', '')).upper()} {f.get('code', '')}"
            out.append(f"{text} {where}: {f.get('message', '')}" if where
                       else f"{text}: {f.get('message', '')}")
        return out
