"""Demo benchmark: `wsmon --demo` in a real pseudo-terminal, as a newcomer starts it.

Prints: seconds from launch to the first drawn frame, to "starting…" in the header, and to rows
(the header's count line shows a non-zero total); the demo's CPU (share of one core, from
/proc/PID/stat, the process and its children) and peak RSS over a measuring window after start-up; then seconds from pressing
`q` until the dashboard has left the screen, and until the process has exited. Figures are
printed, never asserted.

    .venv/bin/python bench/demo_bench.py [--store dynamodb|sqlite] [--size 80x24] [--window 120]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = re.compile(rb"total [1-9]")
LEAVE_ALT_SCREEN = b"\x1b[?1049l"


def _tree(pid: int) -> list[int]:
    """The process and its descendants (the AWS stand-in runs in a child process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mb(pid: int) -> float:
    """Peak RSS summed over the process tree (each process's own peak)."""
    total = 0.0
    for p in _tree(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmHWM:")) / 1024
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["dynamodb", "sqlite"], default=None,
                        help="--demo-store to pass (default: the demo's default)")
    parser.add_argument("--size", default="80x24", help="terminal COLSxROWS")
    parser.add_argument("--window", type=float, default=120.0,
                        help="seconds of CPU measurement after rows appear (the target is 300)")
    args = parser.parse_args()
    cols, rows = (int(n) for n in args.size.split("x"))

    tmp = Path(tempfile.mkdtemp(prefix="wsmon-demo-bench-"))
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WSMON_"))}
    env.update(TERM="xterm-256color", TMPDIR=str(tmp), XDG_CONFIG_HOME=str(tmp / "cfg"),
               XDG_STATE_HOME=str(tmp / "state"))
    argv = [sys.executable, "-m", "wsmon.cli", "--demo"]
    if args.store:
        argv += ["--demo-store", args.store]
    launched = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    screen = bytearray()
    marks: dict[str, float] = {}

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)
            now = time.monotonic() - launched
            if "frame" not in marks and b"\x1b[?1049h" in screen:
                marks["frame"] = now
            if "starting" not in marks and "starting…".encode() in screen:
                marks["starting"] = now
            if "rows" not in marks and ROWS.search(screen):
                marks["rows"] = now
            if "left" not in marks and LEAVE_ALT_SCREEN in screen:
                marks["left"] = now

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        while "rows" not in marks and proc.poll() is None and time.monotonic() - launched < 180:
            time.sleep(0.05)
        if "rows" in marks:
            # CPU the demo had used by then: what the launch would take on an idle machine
            print(f"CPU used until rows (process tree): {cpu_seconds(proc.pid):.1f} s", flush=True)
        for name in ("frame", "starting", "rows"):
            shown = f"{marks[name]:.1f} s" if name in marks else "never"
            print(f"launch to {name}: {shown}", flush=True)
        if "rows" not in marks:
            return
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        while time.monotonic() - t0 < args.window and proc.poll() is None:
            time.sleep(1)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        print(f"CPU over {t1 - t0:.0f} s after rows: {100 * (cpu1 - cpu0) / (t1 - t0):.0f} % of a "
              f"core; peak RSS {rss_mb(proc.pid):.0f} MB", flush=True)
        pressed = time.monotonic()
        os.write(master, b"q")
        proc.wait(timeout=120)
        exited = time.monotonic() - pressed
        left = marks.get("left")
        print(f"q to dashboard gone: {left - (pressed - launched):.1f} s" if left else
              "q to dashboard gone: never seen")
        print(f"q to process exit: {exited:.1f} s (exit code {proc.returncode})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(2)
        os.close(master)


if __name__ == "__main__":
    main()
