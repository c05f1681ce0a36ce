"""The project step: ``geocluster materialize`` on the benchmark catalog, and the COG copy alone.

The step is ``geocluster materialize --aoi <id> --month 2023-06`` on the inputs' catalog, i.e.
the whole asset graph (all 8 bands, so it reads the same files as the other two steps), with a
fresh Dagster instance of its own. Its seconds per asset come from that instance's step records,
read after the process exited, so that reading them costs the measured process nothing. Then,
as a reference, GDAL's COG copy of the project's geotiff is timed on its own
(``time_cog_copy``): a part of the graph that only a faster codec can shorten.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import rasterio

from benchmarks.inputs import Inputs
from benchmarks.measure import Limits, Measurement, measure
from benchmarks.render import WINDOW
from benchmarks.steps import BANDS

MONTH = "2023-06"

# dagster and geocluster_dagster.export are imported only after the step has run, so that this
# process stays small while the steps run beside it.


def run_project(
    inputs: Inputs,
    size: int,
    work: Path,
    env: Mapping[str, str],
    megapixels: float,
    limits: Limits,
    *,
    keep_output: bool,
) -> Measurement:
    """Materialize the whole graph on ``inputs``, measured; add per-asset times and the COG copy.

    The output goes to ``work/project_output/<size>`` (removed afterwards unless
    ``keep_output``), the log to ``work/logs/<size>_project.log``.
    """
    output = work / "project_output" / f"{size}"
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    config = output.parent / f"run_config_{size}.yaml"
    config.write_text(json.dumps({"ops": {"band_stack": {"config": {"bands": list(BANDS)}}}}))
    home = output / ".dagster_home"
    home.mkdir()
    step_env = {
        **env,
        "GEOCLUSTER_OUTPUT": str(output),
        "GEOCLUSTER_STAC_URL": str(inputs.catalog),
        "GEOCLUSTER_AOI_REGISTRY": str(inputs.aoi_registry),
        "GEOCLUSTER_STAC_SIGN": "none",
        "DAGSTER_HOME": str(home),
    }
    # the project computes on this machine, not on a Dask scheduler this shell may point at
    step_env.pop("GEOCLUSTER_DASK_SCHEDULER", None)
    cmd = [sys.executable, "-m", "geocluster_dagster", "materialize"]
    cmd += ["--aoi", inputs.aoi_id, "--month", MONTH, "--config", str(config)]
    log = work / "logs" / f"{size}_project.log"
    result = measure("project", cmd, step_env, log, megapixels, limits)

    result.detail.update(dagster_timings(home))
    if result.status == "ok":
        result.detail["output_mb"] = round(
            sum(p.stat().st_size for p in output.rglob("*") if p.is_file()) / 2**20, 1
        )
        # the geotiff product's COGs (its bands and its indices)
        geotiffs = sorted((output / "geotiff").rglob("*.tif"))
        result.detail.update(time_cog_copy(geotiffs, work / "cog_copy"))
    if not keep_output:
        shutil.rmtree(output, ignore_errors=True)
    return result


def dagster_timings(home: Path) -> dict[str, Any]:
    """Seconds per asset step and for all steps together, from the run recorded under ``home``.

    ``asset_s`` holds the steps that succeeded, by step key (the asset's name), in the order
    they started; ``all_steps_s`` (from run start to run end) is left out if the run did not end.
    """
    from dagster import DagsterInstance

    timings: dict[str, Any] = {"asset_s": {}}
    with DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(limit=1)  # the newest, and the only one: the home is fresh
        if not runs:
            return timings
        run_id = runs[0].run_id
        succeeded = [
            (step.start_time, step.step_key, step.end_time)
            for step in instance.get_run_step_stats(run_id)
            # dagster does not export StepEventStatus; its values are the names
            if step.status is not None
            and step.status.value == "SUCCESS"
            and step.start_time is not None
            and step.end_time is not None
        ]
        timings["asset_s"] = {key: round(end - start, 2) for start, key, end in sorted(succeeded)}
        run = instance.get_run_stats(run_id)
        if run.start_time is not None and run.end_time is not None:
            timings["all_steps_s"] = round(run.end_time - run.start_time, 2)
    return timings


def time_cog_copy(geotiffs: list[Path], scratch: Path) -> dict[str, Any]:
    """GDAL's COG copy of the project's geotiff files, alone: the share of the graph no tuning
    removes.

    The project writes each COG as GDAL requires: an uncompressed band-sequential raster with
    overviews, then the COG driver's copy, which compresses every tile. Here those copies are
    timed on their own (summed over the files), with the project's default codec and level,
    from intermediates made (untimed) of the project's own output and still in the page cache.
    """
    from geocluster_dagster.export import CogSettings, build_overviews, copy_to_cog

    settings = CogSettings()
    seconds, megabytes = 0.0, 0.0
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        for geotiff in geotiffs:
            source, target = scratch / f"uncompressed_{geotiff.name}", scratch / geotiff.name
            with rasterio.open(geotiff) as src:
                profile = {
                    k: v for k, v in src.profile.items() if k not in ("compress", "predictor")
                }
                profile["interleave"] = "band"
                with rasterio.open(source, "w", **profile) as dst:
                    for _, window in src.block_windows(1):
                        dst.write(src.read(window=window), window=window)
            build_overviews(source, WINDOW, "average")
            started = time.perf_counter()
            copy_to_cog(source, target, settings.compress, settings.compress_level, WINDOW)
            seconds += time.perf_counter() - started
            megabytes += target.stat().st_size / 2**20
        return {
            "cog_copy_s": round(seconds, 2),
            "cog_copy_settings": f"{settings.compress} level {settings.compress_level}",
            "cog_copy_mb": round(megabytes, 1),
            "cog_copy_files": [g.name for g in geotiffs],
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
