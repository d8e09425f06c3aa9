"""Whole processes, measured: a pipeline's wall time and each process's CPU seconds and peak RSS.

Imports nothing heavy on purpose: a child's ``ru_maxrss`` starts at its parent's RSS (the pages it
shares between fork/vfork and exec count), so a benchmark that holds pyarrow or lancedb in the
measuring process raises the floor of every measurement.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "arrowsmith.cli", *args]


@dataclass
class Proc:
    name: str  # the command's first arguments, e.g. "arrowsmith embed"
    cpu: float  # user + system seconds
    rss_mib: float  # peak RSS


@dataclass
class Run:
    wall: float
    cpu: float  # summed over the run's processes
    rss_mib: float  # the largest peak RSS among the run's processes
    procs: list[Proc] = field(default_factory=list)


def _name(cmd: list[str]) -> str:
    if cmd[1:3] == ["-m", "arrowsmith.cli"]:
        return f"arrowsmith {cmd[3]}" if len(cmd) > 3 else "arrowsmith"
    base = os.path.basename(cmd[0])
    return f"{base} {cmd[1]}" if base.startswith("python") and len(cmd) > 1 else base


def run(*cmds: list[str], stdout: str | None = None) -> Run:
    """Run ``cmds`` as one pipeline (stdout of each into the next); wall, CPU and RSS per process.

    The last process's stdout goes to the file ``stdout`` (else nowhere); a failed process ends
    the benchmark with its stderr.
    """
    t0 = time.perf_counter()
    procs: list[subprocess.Popen] = []
    stdin = subprocess.DEVNULL
    sink = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    for i, cmd in enumerate(cmds):
        last = i == len(cmds) - 1
        p = subprocess.Popen(cmd, stdin=stdin, stdout=sink if last else subprocess.PIPE,
                             stderr=subprocess.PIPE)
        if procs:
            procs[-1].stdout.close()  # the next process holds the read end now
        stdin = p.stdout
        procs.append(p)
    # stderr is small (a summary line) but read it concurrently, so no process blocks on it
    errs = {p.pid: b"" for p in procs}

    def drain(p: subprocess.Popen) -> None:
        errs[p.pid] = p.stderr.read()

    readers = [threading.Thread(target=drain, args=(p,), daemon=True) for p in procs]
    for t in readers:
        t.start()
    usage_of: dict[int, Proc] = {}
    pending = {p.pid: p for p in procs}
    failed = []
    while pending:
        pid, status, usage = os.wait4(-1, 0)
        if pid not in pending:
            continue
        p = pending.pop(pid)
        usage_of[pid] = Proc(_name(p.args), usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)  # KiB
        if os.waitstatus_to_exitcode(status):
            failed.append(pid)
    wall = time.perf_counter() - t0
    for t in readers:
        t.join()
    if stdout:
        sink.close()
    for p in procs:
        p.wait()  # already reaped by wait4: Popen takes the ECHILD as done
    if failed:  # every failed process's stderr: an early one may only have lost its reader
        sys.exit("\n".join(f"{' '.join(p.args)} failed:\n{errs[p.pid].decode(errors='replace')}"
                           for p in procs if p.pid in failed))
    stats = [usage_of[p.pid] for p in procs]
    return Run(wall, sum(s.cpu for s in stats), max(s.rss_mib for s in stats), stats)
