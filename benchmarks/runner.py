"""Running the chosen steps at one size, one after the other, each on a warm page cache."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.inputs import Inputs, warm_page_cache
from benchmarks.measure import Limits, Measurement, measure
from benchmarks.project import run_project
from benchmarks.render import megapixels

_SCRIPT = Path(__file__).resolve().with_name("run_benchmark.py")
"""The entry point: its ``_step NAME`` subcommand runs the floor or the baseline step."""


def run_size(
    size: int,
    inputs: Inputs,
    steps: Sequence[str],
    work: Path,
    limits: Limits,
    *,
    threads: int,
    keep_outputs: bool,
) -> list[Measurement]:
    """Measure ``steps`` on ``inputs``; outputs and logs go under ``work``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the log gets a step's lines as they come
    results = []
    for step in steps:
        warm_page_cache(inputs)
        if step == "project":
            result = run_project(
                inputs, size, work, env, megapixels(size), limits, keep_output=keep_outputs
            )
        else:
            output = work / f"{step}_output" / f"{size}"
            shutil.rmtree(output, ignore_errors=True)
            cmd = [sys.executable, str(_SCRIPT), "_step", step, "--inputs", str(inputs.root)]
            cmd += ["--out", str(output), "--threads", str(threads), "--seed", "0"]
            log = work / "logs" / f"{size}_{step}.log"
            result = measure(step, cmd, env, log, megapixels(size), limits)
            if not keep_outputs:
                shutil.rmtree(output, ignore_errors=True)
        print(f"  {step}: {result.status}, {result.wall_s} s, peak {result.peak_mb} MB", flush=True)
        results.append(result)
    return results
