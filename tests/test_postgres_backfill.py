"""Backfill 20 AOI partitions with the Dagster instance on PostgreSQL, the daemon running and a
run concurrency limit; then kill a run mid-write and retry it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import psycopg
import pytest
import rasterio
import shapely
from shapely.geometry.polygon import orient

from geocluster_dagster.demo import DEMO_MONTH, build_demo

from .servers.dagster_daemon import dagster_database, running_daemon
from .servers.postgres import PostgresServer

pytestmark = pytest.mark.servers

BIN = Path(sys.executable).parent
GRID = (5, 4)  # 20 small AOIs, plus the whole demo AOI
WHOLE = "whole"
MAX_CONCURRENT_RUNS = 2
DAGSTER_YAML = """
storage:
  postgres:
    postgres_url: "{url}"
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: {max_runs}
telemetry:
  enabled: false
"""


def _grid_registry(demo, path: Path) -> list[str]:
    polygon = shapely.geometry.shape(
        json.loads(demo.aoi_registry.read_text())["features"][0]["geometry"]
    )
    west, south, east, north = polygon.bounds
    xs, ys = np.linspace(west, east, GRID[0] + 1), np.linspace(south, north, GRID[1] + 1)
    features = []
    for i in range(GRID[0]):
        for j in range(GRID[1]):
            cell = shapely.box(xs[i], ys[j], xs[i + 1], ys[j + 1]).buffer(
                -0.002
            )  # cells of about 3 x 2 km
            features.append(
                {
                    "type": "Feature",
                    "id": f"cell-{i}-{j}",
                    "properties": {},
                    "geometry": shapely.geometry.mapping(orient(cell, 1.0)),
                }
            )
    # Large enough that writing its GeoTIFF takes long enough to kill a run in the middle of it.
    features.append(
        {
            "type": "Feature",
            "id": WHOLE,
            "properties": {},
            "geometry": shapely.geometry.mapping(polygon),
        }
    )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return [f["id"] for f in features]


def _wait(predicate, timeout: float, what: str, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def deployment(tmp_path):
    """PostgreSQL, a DAGSTER_HOME using it, the environment of the code location, and the daemon."""
    with PostgresServer() as pg:
        url = dagster_database(pg)
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(
            DAGSTER_YAML.format(url=url, max_runs=MAX_CONCURRENT_RUNS)
        )
        demo = build_demo(tmp_path / "demo")
        aois = _grid_registry(demo, tmp_path / "aois.geojson")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "GEOCLUSTER_OUTPUT": str(tmp_path / "out"),
            "GEOCLUSTER_AOI_REGISTRY": str(tmp_path / "aois.geojson"),
            "GEOCLUSTER_STAC_URL": str(demo.catalog),
        }
        with running_daemon(env, tmp_path, tmp_path / "daemon.log", owned_by=str(tmp_path)):
            yield {
                "env": env,
                "url": url.replace("postgresql+psycopg2://", "postgresql://"),
                "aois": aois,
                "out": tmp_path / "out",
                "home": home,
                "daemon_log": tmp_path / "daemon.log",
            }


def _instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def test_backfill_of_twenty_one_aois_on_postgres(deployment):
    env, aois, out = deployment["env"], deployment["aois"], deployment["out"]
    keys = [f"{aoi}|{DEMO_MONTH}" for aoi in aois]
    launched = subprocess.run(
        [
            BIN / "dagster",
            "job",
            "backfill",
            "-m",
            "geocluster_dagster.definitions",
            "-j",
            "geocluster_pipeline",
            "--partitions",
            ",".join(keys),
            "--noprompt",
        ],
        env=env,
        text=True,
        capture_output=True,
        cwd=out.parent,
    )
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    instance = _instance(deployment["home"])
    finished = {
        dg.DagsterRunStatus.SUCCESS,
        dg.DagsterRunStatus.FAILURE,
        dg.DagsterRunStatus.CANCELED,
    }

    def all_done():
        runs = instance.get_runs(dg.RunsFilter(job_name="geocluster_pipeline"))
        return runs if len(runs) == len(keys) and all(r.status in finished for r in runs) else None

    try:
        # Locally the backfill takes about 4 minutes; stay below pytest's own time limit so that
        # a stuck run is reported with the state of every run and the daemon's last words.
        runs = _wait(all_done, timeout=600, what="the backfill runs")
    except TimeoutError as err:
        runs = instance.get_runs(dg.RunsFilter(job_name="geocluster_pipeline"))
        states = [(r.tags.get("dagster/partition"), r.status.value) for r in runs]
        log_tail = deployment["daemon_log"].read_text()[-6000:]
        pytest.fail(f"{err}: {len(runs)} runs {states}\n--- daemon log ---\n{log_tail}")
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [
        (r.tags.get("dagster/partition"), r.status)
        for r in runs
        if r.status != dg.DagsterRunStatus.SUCCESS
    ]
    assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(keys)

    # The concurrency limit held: never more than two runs overlapped.
    records = instance.get_run_records(dg.RunsFilter(run_ids=[r.run_id for r in runs]))
    spans = [(r.start_time, r.end_time) for r in records]
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert 1 <= overlap <= MAX_CONCURRENT_RUNS

    # Every partition complete, each asset materialized exactly once per partition.
    built = (
        "stac_items",
        "band_stack",
        "mosaic",
        "geotiff",
        "clusters",
        "diagnostics",
        "stac_item",
    )
    for asset in built:
        events = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
        partitions = [e.partition_key for e in events]
        assert sorted(partitions) == sorted(keys), asset
    for aoi in aois:
        with rasterio.open(out / "clusters" / aoi / DEMO_MONTH / "cluster_map.tif") as src:
            assert src.read(1).max() >= 1
        assert (out / "diagnostics" / aoi / DEMO_MONTH / "scores.json").exists()

    # The run and event history is in PostgreSQL itself.
    with psycopg.connect(deployment["url"]) as conn:
        runs_in_db = conn.execute(
            "SELECT count(*) FROM runs WHERE pipeline_name = 'geocluster_pipeline'"
        )
        assert runs_in_db.fetchone()[0] == len(keys)
        materializations = conn.execute(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        ).fetchone()[0]
        # ... and cluster_change, recorded as "not compared": each AOI has one date.
        assert materializations == (len(built) + 1) * len(keys)

    # Kill a run in the middle of writing its GeoTIFF, then retry: no corrupt or stray files.
    target = out / "geotiff" / WHOLE / DEMO_MONTH  # the product's folder, swapped whole
    before = {path.name: path.read_bytes() for path in sorted(target.iterdir())}
    # Hidden siblings of the product but the version folder its link points to: temporaries.
    stray = lambda: [  # noqa: E731
        p
        for p in target.parent.iterdir()
        if p.name.startswith(f".{target.name}.") and p.resolve() != target.resolve()
    ]
    materialize = [
        str(BIN / "geocluster"),
        "materialize",
        "--aoi",
        WHOLE,
        "--month",
        DEMO_MONTH[:7],
    ]
    for _attempt in range(5):
        worker = subprocess.Popen(
            materialize, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait(
            lambda worker=worker: stray() or worker.poll() is not None,
            timeout=300,
            what="the GeoTIFF write",
            every=0.01,
        )
        if stray():
            worker.kill()
            worker.wait()
            break
        worker.wait()  # it finished before it could be caught mid-write: try again
    else:
        pytest.fail("never caught the run in the middle of writing its GeoTIFF")
    # the earlier output was not touched
    assert {path.name: path.read_bytes() for path in sorted(target.iterdir())} == before
    assert stray()  # SIGKILL left its temporary behind ...

    retry = subprocess.run(materialize, env=env, capture_output=True, text=True)
    assert retry.returncode == 0, retry.stderr[-2000:]
    assert stray() == []  # ... and the retry removed it
    with rasterio.open(target / "bands.tif") as src:
        assert src.count == 7 and (src.read(3) > 0).any()
    with rasterio.open(target / "indices.tif") as src:
        assert src.descriptions == ("ndvi", "lst") and np.isfinite(src.read(1)).any()
