"""The many-small-AOIs step: a backfill of 20 AOIs through the Dagster daemon on PostgreSQL.

    python benchmarks/run_benchmark.py --sizes 8000 --steps backfill

On the inputs of one size (two dates, 8 bands + QA as separate COGs) it writes a registry of
``count`` square AOIs of ``side_px`` x ``side_px`` 30 m pixels (1,000² by default, 30 km a side),
spread over the scene, so each partition reads windows of the same two scenes. Then it starts
what a deployment runs: a PostgreSQL 15 server on loopback (the tests' own, Debian packages), a
DAGSTER_HOME holding the shipped ``deploy/dagster.yaml`` (queued runs, two at a time, run
monitoring), ``geocluster sync-aois`` and ``dagster-daemon run``; and backfills every AOI for
June 2023: by default in two ``geocluster_batch`` runs queued with ``dagster job launch`` (each
runs its half of the AOIs one after another, a run of their own each), or with ``batches=0`` in
one ``dagster job backfill`` (a run per partition). When every run has ended it reads the
instance's event log and reports:

* partitions per minute and seconds per partition (from the backfill command's start to the
  last run's end, over the partitions);
* per run, medians of where its time went: waiting in the queue, the launch (from the daemon's
  RUN_STARTING to the run worker's RUN_START: a new process, its imports, the code location and
  the instance), the start-up inside the run (RUN_START to the first step: resources, executor),
  the steps, and the end (last step to RUN_SUCCESS);
* the median seconds of each asset's step.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry.polygon import orient

from benchmarks.inputs import Inputs, warm_page_cache
from benchmarks.render import scene_tile
from geocluster_dagster.demo.scene import tile_transform

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MONTH = "2023-06"
JOB = "geocluster_pipeline"
BATCH_JOB = "geocluster_batch"
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


def aoi_grid(inputs: Inputs, size: int, count: int, side_px: int, path: Path) -> list[str]:
    """``count`` squares of ``side_px`` pixels on a regular grid over the scene, as GeoJSON."""
    columns = int(np.ceil(np.sqrt(count * 1.25)))
    rows = int(np.ceil(count / columns))
    pitch = size // max(columns, rows)
    if pitch < side_px:
        raise ValueError(f"{count} AOIs of {side_px} px do not fit a {size} px scene")
    tile = scene_tile(size)
    transform = tile_transform(tile)
    to_lonlat = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    features = []
    for n in range(count):
        row, column = divmod(n, columns)
        col0 = column * pitch + (pitch - side_px) // 2
        row0 = row * pitch + (pitch - side_px) // 2
        left, top = transform * (col0, row0)
        right, bottom = transform * (col0 + side_px, row0 + side_px)
        square = shapely.box(left, bottom, right, top).segmentize(side_px * transform.a / 8)
        lonlat = shapely.transform(
            square, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1]))
        )
        ring = [[round(x, 7), round(y, 7)] for x, y in orient(lonlat, 1.0).exterior.coords]
        features.append(
            {
                "type": "Feature",
                "id": f"small-{n:02d}",
                "properties": {"name": f"{side_px} px square {n}"},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return [f["id"] for f in features]


@contextmanager
def deployment(work: Path, inputs: Inputs, registry: Path) -> Iterator[dict[str, str]]:
    """PostgreSQL, a DAGSTER_HOME with the shipped dagster.yaml, and the daemon; the env."""
    sys.path.insert(0, str(ROOT))
    from tests.servers.dagster_daemon import dagster_database, running_daemon
    from tests.servers.postgres import PostgresServer

    home, output = work / "dagster_home", work / "output"
    for folder in (home, output):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    with PostgresServer() as pg:
        env = {
            **{
                k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "DAGSTER_"))
            },
            "DAGSTER_HOME": str(home),
            "DAGSTER_POSTGRES_URL": dagster_database(pg),
            "GEOCLUSTER_OUTPUT": str(output),
            "GEOCLUSTER_AOI_REGISTRY": str(registry),
            "GEOCLUSTER_STAC_URL": str(inputs.catalog),
            "GEOCLUSTER_STAC_SIGN": "none",
        }
        with running_daemon(env, work, work / "daemon.log", owned_by=str(home)):
            yield env


def run_backfill(
    inputs: Inputs,
    size: int,
    work: Path,
    *,
    count: int = 20,
    side_px: int = 1000,
    tags: dict[str, str] | None = None,
    batches: int = 2,
) -> dict[str, Any]:
    """Backfill ``count`` small AOIs through the daemon; what it cost, per partition and run.
    ``batches`` > 0: that many ``geocluster_batch`` runs, each running its share of the AOIs
    one after another (a run of their own each, in the batch's process); 0: ``dagster job
    backfill``, a run launched per partition. ``tags`` go on every launched run."""
    import dagster as dg

    work = work / "backfill" / f"{size}"
    work.mkdir(parents=True, exist_ok=True)
    aois = aoi_grid(inputs, size, count, side_px, work / "aois.geojson")
    warm_page_cache(inputs)
    with deployment(work, inputs, work / "aois.geojson") as env:
        keys = [f"{aoi}|{MONTH}-01" for aoi in aois]
        started = time.time()
        if batches:
            _launch_batches(aois, batches, env, work, tags)
        else:
            command = [BIN / "dagster", "job", "backfill", "-m", "geocluster_dagster.definitions"]
            command += ["-j", JOB, "--partitions", ",".join(keys), "--noprompt"]
            if tags:
                command += ["--tags", json.dumps(tags)]
            subprocess.run(command, env=env, check=True, capture_output=True, cwd=work)
        submitted = time.time()
        os.environ["DAGSTER_POSTGRES_URL"] = env["DAGSTER_POSTGRES_URL"]  # read by dagster.yaml
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            if batches:
                outer = _wait_for_runs(instance, batches, 60 * count, job=BATCH_JOB)
                runs = list(instance.get_runs(dg.RunsFilter(job_name=JOB)))
            else:
                outer = runs = _wait_for_runs(instance, len(keys), 60 * count)
            result = _costs(instance, runs, outer, started, submitted)
        result["event_log_kb_per_run"] = _event_log_kb(env["DAGSTER_POSTGRES_URL"], runs)
    result.update(
        aois=count,
        aoi_px=f"{side_px}²",
        concurrent_runs=_max_concurrent(work),
        batches=batches,
        tags=dict(tags or {}),
    )
    return result


def _launch_batches(
    aois: list[str], batches: int, env: dict[str, str], work: Path, tags: dict[str, str] | None
) -> None:
    """Queue ``batches`` geocluster_batch runs, the AOIs split between them in order (all of
    an AOI's dates in one batch); the launches run side by side (each a Python start-up)."""
    share = -(-len(aois) // batches)
    launches = []
    for n in range(batches):
        chunk = aois[n * share : (n + 1) * share]
        if not chunk:
            continue
        config = {"ops": {"run_partitions": {"config": {"aois": chunk, "dates": [MONTH]}}}}
        command = [BIN / "dagster", "job", "launch", "-m", "geocluster_dagster.definitions"]
        command += ["-j", BATCH_JOB, "--config-json", json.dumps(config)]
        if tags:
            command += ["--tags", json.dumps(tags)]
        launches.append(
            subprocess.Popen(
                command, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    for launch in launches:
        _, err = launch.communicate()
        if launch.returncode:
            raise RuntimeError(f"dagster job launch failed: {err.decode()[-2000:]}")


def _wait_for_runs(instance: Any, expected: int, timeout_s: float, job: str = JOB) -> list[Any]:
    import dagster as dg

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = instance.get_runs(dg.RunsFilter(job_name=job))
        if len(runs) >= expected and all(r.status.value in FINISHED for r in runs):
            return list(runs)
        time.sleep(1.0)
    raise TimeoutError(f"the backfill's runs did not all end within {timeout_s:.0f} s")


def _run_times(instance: Any, run: Any) -> dict[str, float]:
    """The first timestamp of each kind of event of a run, the last step's end, its end."""
    from dagster._core.events import DagsterEventType

    times: dict[str, float] = {}
    for event in instance.all_logs(run.run_id):
        kind = event.dagster_event_type
        if kind is not None:
            times.setdefault(kind.value, event.timestamp)  # the first of each kind
            if kind == DagsterEventType.STEP_SUCCESS:
                times["last_step_end"] = event.timestamp
    created = instance.get_run_record_by_id(run.run_id).create_timestamp.timestamp()
    times["created"] = created
    times["end"] = times.get("PIPELINE_SUCCESS") or times.get("PIPELINE_FAILURE") or created
    # A run the daemon launched starts at RUN_STARTING; a batch's partition run at RUN_START.
    times["launched"] = times.get("PIPELINE_STARTING") or times.get("PIPELINE_START") or created
    return times


def _costs(
    instance: Any, runs: list[Any], launched: list[Any], started: float, submitted: float
) -> dict[str, Any]:
    """Throughput, and the median of each part of a run's time, from the event log. ``runs``
    are the partitions' runs, ``launched`` the runs the daemon launched (the same runs, or
    the batches that ran them)."""
    phases: dict[str, list[float]] = {
        k: [] for k in ("launch_s", "run_setup_s", "steps_s", "run_end_s", "run_s")
    }
    assets: dict[str, list[float]] = {}
    for run in runs:
        times = _run_times(instance, run)
        end, first_step = times["end"], times.get("STEP_START", times["end"])
        phases["run_setup_s"].append(first_step - times.get("PIPELINE_START", first_step))
        phases["steps_s"].append(times.get("last_step_end", first_step) - first_step)
        phases["run_end_s"].append(end - times.get("last_step_end", end))
        phases["run_s"].append(end - times["launched"])
        for step in instance.get_run_step_stats(run.run_id):
            if step.start_time and step.end_time:
                assets.setdefault(step.step_key, []).append(step.end_time - step.start_time)
    ends, launches = [], []
    for run in launched:
        times = _run_times(instance, run)
        ends.append(times["end"])
        launches.append(times["launched"])
        phases["launch_s"].append(times.get("PIPELINE_START", 0) - times["launched"])
    # How long a slot stayed free: each launch after the first ones, from the latest run end
    # before it (the daemon dequeues every `dequeue_interval_seconds`).
    phases["slot_wait_s"] = [
        launch - max(end for end in ends if end <= launch)
        for launch in launches
        if any(end <= launch for end in ends)
    ] or [0.0]
    wall = round(max(ends) - started, 1)  # the rates below from the wall time as reported
    statuses = [r.status.value for r in runs]
    return {
        "partitions": len(runs),
        "succeeded": statuses.count("SUCCESS"),
        "runs_launched": len(launched),
        "wall_s": wall,
        "submit_s": round(submitted - started, 1),
        "s_per_partition": round(wall / len(runs), 2),
        "partitions_per_min": round(60 * len(runs) / wall, 1),
        "median_run": {k: round(statistics.median(v), 2) for k, v in phases.items()},
        "median_asset_s": {k: round(statistics.median(v), 2) for k, v in assets.items()},
    }


def _event_log_kb(url: str, runs: list[Any]) -> dict[str, float]:
    """What each run of the backfill wrote to the instance's event log, in kB (the events
    as PostgreSQL stores them: Dagster's serialized JSON): median and largest."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg2://", "postgresql://")) as conn:
        rows = conn.execute(
            "SELECT run_id, SUM(LENGTH(event)) FROM event_logs WHERE run_id = ANY(%s) "
            "GROUP BY run_id",
            ([r.run_id for r in runs],),
        ).fetchall()
    sizes = [int(total) / 1000 for _, total in rows] or [0.0]
    return {"median": round(statistics.median(sizes), 1), "max": round(max(sizes), 1)}


def _max_concurrent(work: Path) -> int:
    """The shipped config's run limit (what the backfill ran with)."""
    import yaml

    config = yaml.safe_load((work / "dagster_home" / "dagster.yaml").read_text())
    return int(config["run_coordinator"]["config"]["max_concurrent_runs"])
