"""The benchmark script end to end at a tiny size: inputs, floor, baseline and project all measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio

from geocluster_dagster.demo import DEMO_QA_CODES, SR_OFFSET, SR_SCALE, demo_spectra

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run_benchmark.py"
SIZE = 600


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )


def test_benchmark_end_to_end(tmp_path: Path) -> None:
    out, work = tmp_path / "results", tmp_path / "work"
    common = ["--sizes", str(SIZE), "--out", str(out), "--work", str(work), "--jobs", "1"]
    run = _run(*common, "--steps", "floor", "baseline", "project")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    report = json.loads((out / "results.json").read_text())
    (entry,) = report["sizes"]
    assert entry["size"] == SIZE and entry["megapixels"] == SIZE * SIZE * 2 / 1e6
    assert set(entry["steps"]) == {"floor", "baseline", "project"}
    for name, step in entry["steps"].items():
        assert step["status"] == "ok", (name, step["detail"])
        assert step["wall_s"] > 0 and step["peak_mb"] > 0, (name, step)
        assert step["mpx_s"] == round(entry["megapixels"] / step["wall_s"], 3)
    floor, baseline, project = (
        entry["steps"][n]["detail"] for n in ("floor", "baseline", "project")
    )
    assert floor["files"] == 18 and floor["decoded_mb"] >= 18 * SIZE * SIZE * 2 / 2**20
    assert baseline["valid_pixels"] > 0.5 * SIZE * SIZE and -1 <= baseline["silhouette_10k"] <= 1
    assert set(project["asset_s"]) == {
        "stac_items",
        "band_stack",
        "mosaic",
        "geotiff",
        "clusters",
        "diagnostics",
        "cluster_change",  # one partition: skipped, nothing earlier to compare with
        "stac_item",
    }
    ratios = entry["ratios"]
    walls = {n: s["wall_s"] for n, s in entry["steps"].items()}
    assert ratios["project_over_floor"] == round(walls["project"] / walls["floor"], 2)
    # the COG copy timed alone is a part of the project's geotiff step
    assert 0 < project["cog_copy_s"] < project["asset_s"]["geotiff"]
    assert project["cog_copy_settings"] == "zstd level 1" and project["cog_copy_mb"] > 0
    assert ratios["cog_copy_over_floor"] == round(project["cog_copy_s"] / walls["floor"], 2)
    assert ratios["baseline_over_project"] == round(walls["baseline"] / walls["project"], 2)
    assert report["machine"]["logical_cores"] >= 1 and report["machine"]["ram_mb"] > 0
    table = (out / "results.md").read_text()
    for name in ("floor", "baseline", "project"):
        assert f"| {SIZE}² | {name} | {walls[name]:.1f} |" in table
    assert f"* {SIZE}²: {project['cog_copy_s']} s (zstd level 1" in table

    _check_inputs(Path(entry["inputs"]))

    # the second run reuses the inputs (their manifest) instead of rebuilding them
    again = _run(*common, "--steps", "floor")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"[inputs {SIZE}] reusing" in again.stdout


@pytest.mark.servers
def test_the_backfill_step_runs_small_aois_through_the_daemon_on_postgres(tmp_path: Path) -> None:
    from tests.servers.postgres import require_postgres

    require_postgres()
    out, work = tmp_path / "results", tmp_path / "work"
    run = _run(
        *("--steps", "backfill", "--backfill-size", str(SIZE), "--backfill-aois", "3"),
        *("--backfill-aoi-px", "150", "--out", str(out), "--work", str(work), "--jobs", "1"),
        *("--backfill-tags", json.dumps({"geocluster/figures": "false"})),
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    backfill = report["backfill"]
    # The tag reached every run: diagnostics wrote their scores and no figure.
    assert backfill["tags"] == {"geocluster/figures": "false"}
    diagnostics = work / "backfill" / str(SIZE) / "output" / "diagnostics"
    partitions = list(diagnostics.glob("*/2023-06-01"))  # the product links, not their versions
    assert len(partitions) == 3 and all((p / "scores.json").is_file() for p in partitions)
    assert not [png for p in partitions for png in p.glob("*.png")]
    assert report["sizes"] == []
    assert backfill["partitions"] == backfill["succeeded"] == backfill["aois"] == 3
    assert backfill["s_per_partition"] == round(backfill["wall_s"] / 3, 2)
    assert backfill["concurrent_runs"] == 2  # deploy/dagster.yaml's limit
    # Two batch runs queued (the default), each running its AOIs as runs of their own.
    assert backfill["batches"] == backfill["runs_launched"] == 2
    run_parts = backfill["median_run"]
    assert run_parts["launch_s"] > 0  # the batch runs' launches
    assert 0 < run_parts["steps_s"] < run_parts["run_s"]  # the partitions' runs
    assert set(backfill["median_asset_s"]) >= {"stac_items", "mosaic", "clusters", "diagnostics"}
    table = (out / "results.md").read_text()
    assert f"| 3 | 3 | {backfill['wall_s']} | {backfill['s_per_partition']} |" in table
    assert "every run tagged `geocluster/figures: false`" in table
    # What each run wrote to the event log, read from PostgreSQL itself.
    events = backfill["event_log_kb_per_run"]
    assert 10 < events["median"] <= events["max"], events
    assert f"median {events['median']} kB, largest {events['max']} kB" in table


def _check_inputs(root: Path) -> None:
    """Two PC-shaped items of separate 512 px deflate COGs whose clear pixels hold real spectra."""
    items = sorted(
        pystac.Catalog.from_file(str(root / "catalog.json")).get_items(recursive=True),
        key=lambda item: item.datetime,
    )
    assert [i.properties["platform"] for i in items] == ["landsat-8", "landsat-9"]
    for item in items:
        item.make_asset_hrefs_absolute()
        assert 1 < item.properties["eo:cloud_cover"] < 40
        assert {"red", "nir08", "lwir11", "qa_pixel"} <= set(item.assets)
        with rasterio.open(item.assets["red"].href) as ds:
            assert ds.shape == (SIZE, SIZE) and ds.block_shapes == [(512, 512)]
            assert ds.compression.name == "deflate" and ds.overviews(1)
            red = ds.read(1) * SR_SCALE + SR_OFFSET
        with rasterio.open(item.assets["qa_pixel"].href) as ds:
            qa = ds.read(1)
        clear = np.isin(qa, [DEMO_QA_CODES["clear_land"], DEMO_QA_CODES["clear_water"]])
        assert 0.5 < clear.mean() < 0.99
        # clear pixels are (mixtures of) spyndex samples within the demo's +-5 % brightness
        real_red = np.concatenate([s[:, 3] for s in demo_spectra().values()])
        inside = (red[clear] >= 0.94 * real_red.min()) & (red[clear] <= 1.06 * real_red.max())
        assert inside.mean() > 0.999
        assert len(np.unique(red[clear])) > 100  # textured, not flat classes
