"""The sync rules: from what a folder shows in S3 and what the store holds for it, what to do.

Pure functions (no S3, no store): ``apply.py`` carries a decision out.

* A new folder with ``daylily.ready`` is validated and registered (a folder whose files are
  still being uploaded waits ``discovery.ready_lock_backoff_seconds`` first).
* A folder unknown to the store that carries only a terminal sentinel is imported in that state.
* Operator intent in S3 is honoured: a new ``daylily.ignore`` (one this monitor did not write)
  ignores the workset; the sentinel of the store's state removed and a new ``daylily.ready`` newer
  than the last transition is a retry request (re-validated first).
* Otherwise the store is authoritative: sentinels that disagree with it are rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from wsmon.core.clock import parse_iso
from wsmon.core.models import Workset, WorksetState
from wsmon.engine.s3.listing import FolderSnapshot
from wsmon.engine.s3.sentinels import STATE_SENTINEL, SentinelInfo
from wsmon.engine.worksetfiles import WORKSET_FILES

S = WorksetState

IMPORTABLE = {"complete": S.COMPLETE, "error": S.ERROR, "ignore": S.IGNORED}
RETRY_FROM = frozenset({S.ERROR, S.FAILED, S.RETRYING, S.IGNORED, S.COMPLETE})


class Action(str, Enum):
    NOTHING = "nothing"
    WAIT = "wait"  # say why in the poll report, change nothing
    FOLDER_ERROR = "folder_error"  # the folder could not be listed or read
    IMPORT = "import"  # unknown folder with a terminal sentinel: register it in that state
    REGISTER = "register"  # unknown folder with daylily.ready: validate, then register
    FILL_IN = "fill_in"  # ready but never validated: validate, keep what the runner needs
    RETRY = "retry"  # the operator asked for a retry in S3: validate, then back to ready
    IGNORE = "ignore"  # the operator put a new daylily.ignore
    MIRROR = "mirror"  # S3 disagrees with the store: rewrite the sentinels


VALIDATING = frozenset({Action.REGISTER, Action.FILL_IN, Action.RETRY})


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str | None = None  # WAIT: what the folder waits for
    import_state: WorksetState | None = None  # IMPORT: the state it is registered in
    reappeared: bool = False  # the store marks the folder gone: clear that first

    @property
    def needs_validation(self) -> bool:
        return self.action in VALIDATING


def decide(snap: FolderSnapshot, ws: Workset | None, *, now: datetime,
           ready_lock_backoff_seconds: float, write_sentinels: bool) -> Decision:
    """What to do with one folder. ``ws`` is the store's record of it (None: unknown), as read
    when the poll started."""
    if snap.error_code is not None:
        return Decision(Action.FOLDER_ERROR)
    state = snap.state
    if ws is None:
        if snap.name in (".", ".."):
            return Decision(Action.WAIT, why="unsafe folder name")
        if state is None:
            return Decision(Action.WAIT, why="no daylily.* sentinel yet")
        if state == "ready":
            ready = snap.sentinels["ready"]
            missing = [f for f in WORKSET_FILES if f not in snap.files]
            age = (now - parse_iso(ready.last_modified)).total_seconds()
            if missing and 0 <= age < ready_lock_backoff_seconds:
                return Decision(Action.WAIT, why=f"waiting for upload of {', '.join(missing)}")
            return Decision(Action.REGISTER)
        if state in IMPORTABLE:
            return Decision(Action.IMPORT, import_state=IMPORTABLE[state])
        return Decision(Action.WAIT, why=f"daylily.{state} from another monitor; imported when it ends")

    reappeared = ws.s3_missing
    if snap.listed:
        ignore = snap.sentinels.get("ignore")
        if (ignore is not None and not ignore.ours and ws.state != S.IGNORED
                and is_new(snap, ignore, ws)):
            return Decision(Action.IGNORE, reappeared=reappeared)
        own = STATE_SENTINEL[ws.state]
        ready = snap.sentinels.get("ready")
        # by time alone, as the contract says: the operator may touch daylily.ready and
        # remove daylily.error in either order, with a poll in between
        if (ws.state in RETRY_FROM and own not in snap.sentinels and ready is not None
                and not ready.ours and ready.effective_time > ws.state_changed_at):
            return Decision(Action.RETRY, reappeared=reappeared)
        if ws.state is S.READY and not (ws.metadata or {}).get("work"):
            # e.g. imported from a terminal sentinel, then sent back to ready by an operator:
            # never validated, so the runner would have nothing to run
            return Decision(Action.FILL_IN, reappeared=reappeared)
    if write_sentinels and mirror_needed(snap, ws):
        return Decision(Action.MIRROR, reappeared=reappeared)
    return Decision(Action.NOTHING, reappeared=reappeared)


def is_new(snap: FolderSnapshot, sentinel: SentinelInfo, ws: Workset) -> bool:
    """Operator intent: a sentinel that appeared/changed since we last looked, or (no cache to
    compare with) one newer than the workset's last transition."""
    if snap.had_cache:
        return sentinel.name in snap.new_sentinels
    return sentinel.effective_time > ws.state_changed_at


def _our_stale_lock(snap: FolderSnapshot, state: WorksetState) -> bool:
    lock = snap.sentinels.get("lock")
    return state != S.LOCKED and lock is not None and lock.ours


def mirror_needed(snap: FolderSnapshot, ws: Workset) -> bool:
    """The folder's sentinels differ from the store's state: another sentinel wins, or our own
    daylily.lock outlived the lock."""
    return snap.state != STATE_SENTINEL[ws.state] or _our_stale_lock(snap, ws.state)


def mirror_still_needed(snap: FolderSnapshot, ws: Workset, current: Workset) -> bool:
    """``mirror_needed`` decided again on the record as it is now (``ws`` was read when the poll
    started; an engine may have claimed or finished the workset since)."""
    stale_lock = _our_stale_lock(snap, ws.state) and current.state != S.LOCKED
    return snap.state != STATE_SENTINEL[current.state] or stale_lock
