"""The results: one entry per size, the ratios, the machine, and ``results.json``/``results.md``."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import rasterio

from benchmarks.inputs import Inputs
from benchmarks.measure import Measurement
from benchmarks.render import acquisitions, megapixels
from benchmarks.steps import STEPS

DEFINITIONS = {
    "wall_s": "subprocess launch to exit, Python start-up and imports included",
    "mpx_s": "size^2 x dates / wall_s / 1e6 (a pixel = one location on one date)",
    "peak_mb": "max of the process tree's summed RSS and the step process's VmHWM (both polled every 0.2 s)",
    "project_over_floor": "project wall_s / floor wall_s (ratio 3/1)",
    "baseline_over_project": "baseline wall_s / project wall_s (ratio 2/3)",
    "cog_copy_over_floor": "GDAL's COG copy of the project's geotiff, timed alone, / floor wall_s",
}

_VERSIONS_OF = (
    "geocluster_dagster",
    "numpy",
    "rasterio",
    "rioxarray",
    "xarray",
    "dask",
    "distributed",
    "odc-stac",
    "scikit-learn",
    "dagster",
)


def size_entry(size: int, inputs: Inputs, measurements: Sequence[Measurement]) -> dict[str, Any]:
    """The report's entry for one size: its inputs, its steps by name and their ratios."""
    steps = {m.step: dataclasses.asdict(m) for m in measurements}
    return {
        "size": size,
        "dates": len(acquisitions()),
        "megapixels": megapixels(size),
        "inputs": str(inputs.root),
        "input_mb": round(sum((inputs.root / f).stat().st_size for f in inputs.files) / 2**20, 1),
        "steps": steps,
        "ratios": _ratios(steps),
    }


def build_report(
    command: str, entries: list[dict[str, Any]], backfill: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The whole report: when, how (``command``), the definitions, the machine, the sizes and
    the backfill of many small AOIs (``benchmarks.backfill``)."""
    return {
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "definitions": DEFINITIONS,
        "machine": machine_info(),
        "sizes": entries,
        "backfill": backfill,
    }


def write_report(out: Path, report: dict[str, Any]) -> str:
    """Write ``results.json`` and ``results.md`` into ``out``; return the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    markdown = render_markdown(report)
    (out / "results.md").write_text(markdown)
    return markdown


def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, Python, platform, git commit and the versions that matter here."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for dist in _VERSIONS_OF:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    versions["GDAL"] = rasterio.__gdal_version__
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_mb": round(psutil.virtual_memory().total / 2**20),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "versions": versions,
    }


def _ratios(steps: dict[str, dict[str, Any]]) -> dict[str, float]:
    """3/1 = project / floor wall; 2/3 = baseline / project wall (a lower bound if cut short)."""
    floor, baseline, project = (steps.get(name) for name in STEPS)
    ratios: dict[str, float] = {}
    if floor and project and floor["status"] == project["status"] == "ok":
        ratios["project_over_floor"] = round(project["wall_s"] / floor["wall_s"], 2)
        if "cog_copy_s" in project["detail"]:
            ratios["cog_copy_over_floor"] = round(
                project["detail"]["cog_copy_s"] / floor["wall_s"], 2
            )
    if baseline and project and project["status"] == "ok":
        value = round(baseline["wall_s"] / project["wall_s"], 2)
        if baseline["status"] == "ok":
            ratios["baseline_over_project"] = value
        elif baseline["status"] in ("timeout", "oom"):
            ratios["baseline_over_project_at_least"] = value
    return ratios


def _cell(step: dict[str, Any]) -> list[str]:
    """A step's wall s, Mpx/s, peak MB and status cells."""
    if step["status"] == "ok":
        return [f"{step['wall_s']:.1f}", f"{step['mpx_s']:.2f}", f"{step['peak_mb']:.0f}", "ok"]
    what = {"timeout": "timeout", "oom": "OOM", "failed": "failed"}[step["status"]]
    what += f" ({step['detail'].get('stopped_by')})"
    note = f"did not finish: {what} after {step['wall_s']:.0f} s, peak {step['peak_mb']:.0f} MB"
    return [f"≥ {step['wall_s']:.1f}", "-", f"{step['peak_mb']:.0f}", note]


def render_markdown(report: dict[str, Any]) -> str:
    """``results.md``: the steps' table, the ratios, per-asset times, the COG copy, the machine."""
    lines = [
        "# Benchmark results",
        "",
        f"Run {report['finished']} with `{report['command']}`.",
        "",
        "| size (px) | step | wall s | Mpx/s | peak MB | status |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for entry in report["sizes"]:
        for name in STEPS:
            if name in entry["steps"]:
                cells = _cell(entry["steps"][name])
                lines.append(f"| {entry['size']}² | {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| size (px) | 3/1 project ÷ floor | 2/3 baseline ÷ project |",
        "|---:|---:|---:|",
    ]
    for entry in report["sizes"]:
        r = entry["ratios"]
        over_floor = r.get("project_over_floor")
        over_project = r.get("baseline_over_project")
        if over_project is None and "baseline_over_project_at_least" in r:
            over_project = f"≥ {r['baseline_over_project_at_least']}"
        lines.append(f"| {entry['size']}² | {over_floor or '-'} | {over_project or '-'} |")
    lines += [
        "",
        "Project, seconds per asset (Dagster step durations; the rest of its wall time is "
        "start-up: imports, instance, AOI sync):",
        "",
    ]
    for entry in report["sizes"]:
        project = entry["steps"].get("project")
        if project and project["detail"].get("asset_s"):
            assets = ", ".join(f"{k} {v}" for k, v in project["detail"]["asset_s"].items())
            lines.append(f"* {entry['size']}²: {assets}")
    copies = [
        (entry["size"], entry["steps"]["project"]["detail"], entry["ratios"])
        for entry in report["sizes"]
        if "cog_copy_over_floor" in entry["ratios"]
    ]
    if copies:
        lines += [
            "",
            "GDAL's COG copy of the project's geotiff alone (the last stage of writing it: the "
            "COG driver compresses every tile of an uncompressed raster with overviews, here in "
            "the page cache), with the project's default codec:",
            "",
        ]
        for size, detail, ratios in copies:
            lines.append(
                f"* {size}²: {detail['cog_copy_s']} s ({detail['cog_copy_settings']}, "
                f"{detail['cog_copy_mb']:.0f} MB) = {ratios['cog_copy_over_floor']} x the floor"
            )
    lines += _backfill_lines(report.get("backfill"))
    machine = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines += [
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cores']} logical cores "
        f"({machine['physical_cores']} physical), {machine['ram_mb']} MB RAM, "
        f"Python {machine['python']}, {machine['platform']}, commit {machine['git_commit']}.",
        "",
        f"Versions: {versions}.",
        "",
        "Inputs per size: two dates x (SR_B1..B7, ST_B10, QA_PIXEL) uint16 deflate COGs, 512 px "
        "tiles, synthetic landscape from real spyndex Landsat spectra with the demo's clouds. "
        "*wall s*: subprocess launch to exit, start-up and imports included; *Mpx/s*: "
        "size² x 2 dates / wall s; *peak MB*: peak RSS of the step's process tree. "
        "Page cache warm for every step.",
        "",
    ]
    return "\n".join(lines)


#: The parts of a backfill run's time, as the report names them (benchmarks.backfill).
_RUN_PHASES = {
    "slot_wait_s": "a run slot free until the daemon launched the next run",
    "launch_s": "launch of a run the daemon started: new process, imports, code location, "
    "instance (RUN_STARTING to RUN_START)",
    "run_setup_s": "a partition's run start to its first step (resources, executor)",
    "steps_s": "first step start to last step end",
    "run_end_s": "last step end to the run's end",
    "run_s": "a partition's whole run (from RUN_STARTING, or RUN_START in a batch, to its end)",
}


def _backfill_lines(backfill: dict[str, Any] | None) -> list[str]:
    """The many-small-AOIs table: throughput, where a run's time went, each asset's step."""
    if not backfill:
        return []
    lines = [
        "",
        f"Backfill of {backfill['aois']} AOIs of {backfill['aoi_px']} px (one month, two scenes "
        f"each) through the Dagster daemon on PostgreSQL, `deploy/dagster.yaml` "
        f"({backfill['concurrent_runs']} runs at a time)"
        + (
            f", every run tagged {', '.join(f'`{k}: {v}`' for k, v in backfill['tags'].items())}"
            if backfill.get("tags")
            else ""
        )
        + ":",
        "",
        "| partitions | succeeded | wall s | s per partition | partitions per min |",
        "|---:|---:|---:|---:|---:|",
        f"| {backfill['partitions']} | {backfill['succeeded']} | {backfill['wall_s']} | "
        f"{backfill['s_per_partition']} | {backfill['partitions_per_min']} |",
        "",
        (
            f"The partitions ran in {backfill['batches']} `geocluster_batch` runs (queued with "
            f"`dagster job launch`, {backfill['submit_s']} s), each running its AOIs one after "
            "another, a run of their own each. *wall s*: from the first launch command to the "
            "last batch's end. Median per run:"
            if backfill.get("batches")
            else f"*wall s*: from `dagster job backfill` (which took {backfill['submit_s']} s to "
            "submit the runs, one per partition) to the last run's end. Median per run:"
        ),
        "",
    ]
    lines += [
        f"* {what}: {backfill['median_run'][key]} s"
        for key, what in _RUN_PHASES.items()
        if key in backfill["median_run"]
    ]
    assets = ", ".join(f"{k} {v}" for k, v in backfill["median_asset_s"].items())
    lines += ["", f"Median seconds per asset step: {assets}."]
    events = backfill.get("event_log_kb_per_run")
    if events:
        lines += [
            "",
            f"Event log per partition run (PostgreSQL's `event_logs`): median {events['median']} "
            f"kB, largest {events['max']} kB.",
        ]
    return lines
