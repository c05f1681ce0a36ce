"""Measuring a step in a subprocess: wall time, peak memory of its tree, time limit, memory guard.

*wall s* is from launching the subprocess to its exit (Python start-up and imports included);
*Mpx/s* is the scene's megapixels over all dates / wall s; *peak MB* is the peak resident memory
of the step's whole process tree: the larger of the tree's summed RSS polled every 0.2 s and the
kernel's high-water mark of the step's own process (``VmHWM``, polled likewise). Not
``ru_maxrss``: Linux starts a child's at the peak RSS of the process that launched it, so
it would count this benchmark's own peak (e.g. rendering the inputs) as the step's. A step
whose wall time passes the time limit, or whose tree's RSS passes the memory guard, is killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from benchmarks.steps import RESULT_TAG

POLL_S = 0.2


@dataclass(frozen=True)
class Limits:
    """When a step is killed."""

    timeout_s: float
    """Wall time limit, seconds."""
    guard_mb: float
    """Memory guard: the largest RSS of the step's process tree, MiB."""


@dataclass(frozen=True)
class Measurement:
    """One step at one size."""

    step: str
    """floor, baseline or project."""
    status: str
    """ok, timeout, oom (memory guard, MemoryError or SIGKILL) or failed."""
    wall_s: float
    """Launch to exit (or to the kill), seconds."""
    peak_mb: float
    """Peak resident memory of the step's process tree, MiB."""
    mpx_s: float | None
    """size^2 x dates / wall_s / 1e6, when the step finished."""
    detail: dict[str, Any]
    """What the step reported (JSON line) or why it stopped; log file path."""


@dataclass(frozen=True)
class _Exit:
    """How a watched process ended."""

    wall_s: float
    peak_mb: float
    returncode: int
    killed_by: str | None
    """None, or why it was killed: "timeout" or "oom"."""


def measure(
    step: str,
    cmd: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    megapixels: float,
    limits: Limits,
) -> Measurement:
    """Run ``cmd`` with its output in ``log``, measured and killed at ``limits``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  {step}: {' '.join(cmd)}", flush=True)
    end = _run_watched(cmd, env, log, limits)
    text = log.read_text(errors="replace")
    detail: dict[str, Any] = {"log": str(log), "returncode": end.returncode}
    result_lines = [ln for ln in text.splitlines() if ln.startswith(RESULT_TAG)]
    if result_lines:
        detail.update(json.loads(result_lines[-1][len(RESULT_TAG) :]))
    status, stopped_by = _status(end, text, limits)
    if stopped_by is not None:
        detail["stopped_by"] = stopped_by
        reached = [ln for ln in text.splitlines() if ln.startswith("stage ")]
        detail["last_stage"] = reached[-1] if reached else None
        detail["log_tail"] = text.splitlines()[-15:]
    return Measurement(
        step=step,
        status=status,
        wall_s=end.wall_s,
        peak_mb=round(end.peak_mb, 1),
        mpx_s=round(megapixels / end.wall_s, 3) if status == "ok" else None,
        detail=detail,
    )


def _status(end: _Exit, text: str, limits: Limits) -> tuple[str, str | None]:
    """ok, timeout, oom or failed, and what stopped the step (None if it finished)."""
    if end.killed_by == "timeout":
        return "timeout", f"time limit {limits.timeout_s:.0f} s"
    if end.killed_by == "oom":
        return "oom", f"memory guard {limits.guard_mb:.0f} MB"
    if end.returncode == 0:
        return "ok", None
    if "MemoryError" in text:
        return "oom", "MemoryError"
    if end.returncode == -9:
        return "oom", "SIGKILL (the kernel's OOM killer?)"
    return "failed", f"exit code {end.returncode}"


def _run_watched(cmd: Sequence[str], env: Mapping[str, str], log: Path, limits: Limits) -> _Exit:
    """Run ``cmd``, polling its process tree's RSS every POLL_S; kill the tree at the limits."""
    with log.open("w") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
        handle = psutil.Process(proc.pid)
        peak_tree, peak_own, killed_by = 0, 0, None
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_tree = max(peak_tree, _tree_rss(handle))
            peak_own = max(peak_own, _high_water_mark(proc.pid))
            if time.perf_counter() - started > limits.timeout_s:
                killed_by = "timeout"
            elif peak_tree > limits.guard_mb * 2**20:
                killed_by = "oom"
            if killed_by:
                for p in reversed(_tree(handle)):  # children first, each by its own pid
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
                pid, status, _ = os.wait4(proc.pid, 0)
                break
            time.sleep(POLL_S)
        wall = round(time.perf_counter() - started, 2)
        # os.wait4 reaped the child; tell Popen, which would otherwise wait for it again
        proc.returncode = os.waitstatus_to_exitcode(status)
    peak_mb = max(peak_tree, peak_own) / 2**20
    return _Exit(wall_s=wall, peak_mb=peak_mb, returncode=proc.returncode, killed_by=killed_by)


def _high_water_mark(pid: int) -> int:
    """Peak RSS of process ``pid`` since it exec'd, bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB
    except OSError:
        pass
    return 0


def _tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return [process]


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in _tree(process):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total
