"""geocluster_batch: many partitions in one run, each partition a run of its own with its own
materializations, checks and failure."""

from __future__ import annotations

import json
import re

import dagster as dg
import numpy as np
import pytest
import shapely
from shapely.geometry.polygon import orient

from geocluster_dagster.defs.batch import BATCH_TAG
from geocluster_dagster.defs.run_health import RUN_PID_TAG
from geocluster_dagster.demo import DEMO_MONTH, build_demo

AOIS = ("west", "centre", "east")
FAST = {
    "ops": {
        "clusters": {"config": {"n_clusters": 4}},
        "diagnostics": {"config": {"elbow_k_max": 5}},
    }
}


def _thirds(demo, path):
    """Three AOIs: the demo polygon cut into vertical thirds."""
    polygon = shapely.geometry.shape(
        json.loads(demo.aoi_registry.read_text())["features"][0]["geometry"]
    )
    west, south, east, north = polygon.bounds
    edges = np.linspace(west, east, len(AOIS) + 1)
    features = [
        {
            "type": "Feature",
            "id": aoi_id,
            "properties": {"name": aoi_id},
            "geometry": shapely.geometry.mapping(
                orient(polygon.intersection(shapely.box(x0, south, x1, north)).buffer(0), 1.0)
            ),
        }
        for aoi_id, x0, x1 in zip(AOIS, edges[:-1], edges[1:], strict=True)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture
def batch(tmp_path, monkeypatch):
    """The code location's geocluster_batch, on three AOIs of the demo, and an instance."""
    demo = build_demo(tmp_path / "demo")
    monkeypatch.setenv("GEOCLUSTER_AOI_REGISTRY", str(_thirds(demo, tmp_path / "aois.geojson")))
    monkeypatch.setenv("GEOCLUSTER_STAC_URL", str(demo.catalog))
    monkeypatch.setenv("GEOCLUSTER_OUTPUT", str(tmp_path / "out"))
    from geocluster_dagster.definitions import defs

    with dg.instance_for_test() as instance:
        yield defs.resolve_job_def("geocluster_batch"), instance, tmp_path / "out"


def _config(aois, dates, run_config=FAST, **extra):
    fields = {"aois": list(aois), "dates": list(dates), "run_config": run_config, **extra}
    return {"ops": {"run_partitions": {"config": fields}}}


def _failure(result) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures, "the batch did not fail"
    return failures[0].step_failure_data.user_failure_data.description


def _partition_runs(instance, batch_run_id):
    return instance.get_runs(dg.RunsFilter(tags={BATCH_TAG: batch_run_id}))


def test_a_failed_partition_fails_its_own_run_and_the_others_are_materialized(batch):
    job, instance, out = batch
    # The east partition cannot write its mosaic: a file stands where its folder must be.
    (out / "mosaic").mkdir(parents=True)
    (out / "mosaic" / "east").write_text("not a folder")

    result = job.execute_in_process(
        instance=instance,
        run_config=_config(AOIS, [DEMO_MONTH[:7]]),
        tags={"geocluster/figures": "false", "team": "maps"},
        raise_on_error=False,
    )

    assert not result.success
    message = _failure(result)
    assert "1 of 3 partitions failed" in message and f"east|{DEMO_MONTH}" in message
    assert "mosaic" in message  # the step that failed, from the partition's own run
    # Its table: a row per partition, four cells each (a key's "|" escaped), the run linked.
    failure = next(e for e in result.all_events if e.is_step_failure)
    table = failure.step_failure_data.user_failure_data.metadata["partitions"].value
    rows = [line for line in table.splitlines() if f"|{DEMO_MONTH}" in line]
    assert len(rows) == 3
    for row in rows:
        cells = re.split(r"(?<!\\)\|", row.strip().strip("|"))
        assert len(cells) == 4 and "](/runs/" in cells[2], row
    # The batch run is found by its process if it is killed (dead_run_sensor), as every run.
    assert instance.get_run_by_id(result.run_id).tags[RUN_PID_TAG].isdigit()
    runs = {r.tags["dagster/partition"]: r for r in _partition_runs(instance, result.run_id)}
    assert set(runs) == {f"{aoi}|{DEMO_MONTH}" for aoi in AOIS}  # a run of its own each
    assert {k: r.status.value for k, r in runs.items()} == {
        f"west|{DEMO_MONTH}": "SUCCESS",
        f"centre|{DEMO_MONTH}": "SUCCESS",
        f"east|{DEMO_MONTH}": "FAILURE",
    }
    # The batch's own tags reach every partition's run (here: no figures).
    assert all(
        r.tags["team"] == "maps" and r.tags[BATCH_TAG] == result.run_id for r in runs.values()
    )
    assert (out / "diagnostics" / "west" / DEMO_MONTH / "scores.json").is_file()
    assert not list((out / "diagnostics" / "west" / DEMO_MONTH).glob("*.png"))
    for asset in ("mosaic", "clusters", "diagnostics", "stac_item"):
        materialized = instance.get_materialized_partitions(dg.AssetKey(asset))
        assert {str(k) for k in materialized} == {f"west|{DEMO_MONTH}", f"centre|{DEMO_MONTH}"}

    # Each partition's materialization carries its own facts, recorded by its own run.
    pixels = {}
    for aoi in ("west", "centre"):
        key = f"{aoi}|{DEMO_MONTH}"
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("clusters"), asset_partitions=[key]),
            limit=1,
        ).records
        assert record.run_id == runs[key].run_id
        metadata = record.asset_materialization.metadata
        pixels[aoi] = str(metadata["cluster_sizes"].value)
    assert pixels["west"] != pixels["centre"]
    # and its own checks, evaluated in its run
    checks = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("mosaic"), "clear_fraction"), limit=10
    )
    evaluated = {c.run_id for c in checks if c.status.value == "SUCCEEDED"}
    assert evaluated == {runs[f"{a}|{DEMO_MONTH}"].run_id for a in ("west", "centre")}


def test_bad_settings_are_refused_naming_the_field_before_any_partition_runs(batch):
    job, instance, _ = batch
    cases = [
        (_config(["west", "nowhere"], [DEMO_MONTH]), "ops.run_partitions.config.aois: ['nowhere']"),
        (_config(["west"], ["June"]), "ops.run_partitions.config.dates: 'June' is not a month"),
        (
            _config(["west"], [DEMO_MONTH], {"ops": {"clusters": {"config": {"n_clusters": "x"}}}}),
            "ops.run_partitions.config.run_config is not a valid run config",
        ),
        (_config(["west"], [DEMO_MONTH], job="nope"), "ops.run_partitions.config.job: 'nope'"),
    ]
    for run_config, expected in cases:
        result = job.execute_in_process(
            instance=instance, run_config=run_config, raise_on_error=False
        )
        assert expected in _failure(result)
        assert not _partition_runs(instance, result.run_id)


def test_a_launcher_that_watches_each_runs_own_worker_is_refused(tmp_path):
    """Under Kubernetes' run launcher with run monitoring, a partition's run inside the batch
    has no pod of its own: monitoring would mark it failed while it runs."""
    from geocluster_dagster.definitions import defs

    overrides = {
        "run_launcher": {"module": "tests.helpers", "class": "WatchingRunLauncher"},
        "run_monitoring": {"enabled": True},
    }
    with dg.instance_for_test(overrides=overrides) as instance:
        result = defs.resolve_job_def("geocluster_batch").execute_in_process(
            instance=instance, run_config=_config(["demo"], [DEMO_MONTH]), raise_on_error=False
        )
        assert "cannot run under this instance's run launcher (WatchingRunLauncher)" in _failure(
            result
        )
        assert "geocluster_pipeline instead" in _failure(result)
        assert not _partition_runs(instance, result.run_id)
