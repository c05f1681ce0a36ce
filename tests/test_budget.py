"""A partition's size measured before anything is read, and a runaway refused with numbers."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pystac
import pytest
import shapely
from odc.geo.geobox import GeoBox

from geocluster_dagster.budget import (
    REFERENCE_FIXED_S,
    REFERENCE_S_PER_MPX,
    TIMED_RUNS,
    Estimate,
    estimate,
    estimate_seconds,
    parts_apart_km,
    record_run,
    refuse_full_disk,
    refuse_runaway,
)
from geocluster_dagster.errors import ConfigError, OutputNotWritable

from .helpers import materialization, run, run_refused_aoi

#: 0.1 x 0.1 degree near the equator, on a 30 m UTM grid.
BOX = shapely.box(10.0, 0.0, 10.1, 0.1)


def _item(footprint: shapely.Geometry, name: str) -> pystac.Item:
    when = datetime(2023, 6, 10, tzinfo=timezone.utc)
    return pystac.Item(name, shapely.geometry.mapping(footprint), list(footprint.bounds), when, {})


def test_the_estimate_counts_the_aoi_and_what_the_scenes_cover():
    triangle = shapely.Polygon([(10.0, 0.0), (10.1, 0.0), (10.0, 0.1)])
    grid = GeoBox.from_bbox(BOX.bounds, crs="EPSG:4326", resolution=0.0005)
    west_half = _item(shapely.box(10.0, 0.0, 10.05, 0.1), "west")
    cost = estimate(grid, triangle, [west_half], bands=6, with_qa=True, products_bands=8)
    assert cost.grid_pixels == 200 * 200
    assert cost.aoi_pixels == pytest.approx(20_000, rel=0.01)  # half the box
    # The western half of the triangle is three quarters of it.
    assert cost.covered_pixels == pytest.approx(15_000, rel=0.01)
    assert cost.bytes_read == cost.covered_pixels * 7 * 2  # uint16 DN, bands + QA
    assert cost.bytes_written == 40_000 * 4 * 14 + 40_000
    assert cost.disk_needed == cost.bytes_written + 40_000 * 4 * 8


def test_a_continent_is_refused_with_its_size_and_the_settings_to_change():
    africa = shapely.box(-17.0, -35.0, 51.0, 37.0)
    grid = GeoBox.from_bbox(africa.bounds, crs="EPSG:4326", resolution=30 / 111_000)
    cost = estimate(grid, africa, [], bands=7, with_qa=True, products_bands=9)
    with pytest.raises(ConfigError) as refused:
        refuse_runaway(cost, africa, 30.0, 250_000_000)
    message = str(refused.value)
    assert f"{cost.grid_pixels:,} pixels" in message and "Landsat scenes" in message
    assert "max_grid_pixels=250,000,000" in message and "coarser resolution" in message
    assert "split it" not in message  # one polygon: nothing to split


def test_far_apart_parts_of_a_multipolygon_are_named():
    near = shapely.box(-84.08, 34.96, -83.92, 35.04)
    far = shapely.box(-72.08, 34.96, -71.92, 35.04)  # 12 degrees of longitude east
    both = shapely.MultiPolygon([near, far])
    assert parts_apart_km(both) == pytest.approx(1080, rel=0.02)
    assert parts_apart_km(near) is None
    cost = Estimate(2_000_000_000, 120_000, 120_000, 0, 8 * 10**12, 10**13)
    with pytest.raises(
        ConfigError, match="lie up to 1,0[0-9]{2} km apart.*split it into separate AOIs"
    ):
        refuse_runaway(cost, both, 30.0, 250_000_000)


def test_a_disk_too_small_for_the_products_is_refused_with_both_sizes(tmp_path):
    cost = Estimate(1, 1, 1, 1, 10**18, 10**18)
    with pytest.raises(OutputNotWritable, match=r"need about 1,000,000\.0 TB free .* free\. Free"):
        refuse_full_disk(cost, tmp_path / "not" / "yet", where="Partition x|2023-06-01")
    refuse_full_disk(Estimate(1, 1, 1, 1, 1, 1), tmp_path, where="fine")


def test_a_multipolygon_with_a_far_part_fails_fast_and_writes_nothing_after_the_search(
    demo,
    dask_cluster,
    tmp_path,
):
    aoi = json.loads(demo.aoi_registry.read_text())["features"][0]["geometry"]
    far = [[[x + 12.0, y] for x, y in aoi["coordinates"][0]]]
    geometry = {"type": "MultiPolygon", "coordinates": [aoi["coordinates"], far]}
    out, message = run_refused_aoi(demo, dask_cluster, tmp_path, geometry)
    assert "polygons lie up to 1,0" in message and "split it into separate AOIs" in message
    assert not (out / "band_stack").exists() and not (out / "mosaic").exists()


def test_the_band_stack_records_its_estimate(demo, dask_cluster, tmp_path):
    result = run(
        tmp_path / "out",
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        selection=["stac_items", "band_stack"],
    )
    assert result.success
    stack = materialization(result, "band_stack").metadata
    assert stack["grid_pixels"].value == 265 * 468
    assert 0 < stack["covered_pixels"].value <= stack["grid_pixels"].value
    assert stack["read_mb"].value > 0 and stack["disk_needed_mb"].value > stack["products_mb"].value
    assert stack["estimated_run_s"].value > 0


def test_near_parts_of_a_multipolygon_are_fine():
    islands = shapely.MultiPolygon(
        [shapely.box(10.0, 0.0, 10.1, 0.1), shapely.box(10.3, 0.0, 10.4, 0.1)]
    )
    grid = GeoBox.from_bbox(islands.bounds, crs="EPSG:4326", resolution=0.001)
    cost = estimate(grid, islands, [], bands=6, with_qa=True, products_bands=8)
    assert parts_apart_km(islands) == pytest.approx(22, rel=0.05)
    refuse_runaway(cost, islands, 30.0, 250_000_000)  # 22 km apart: one AOI is fine


def test_the_time_estimate_learns_this_machines_rate(tmp_path):
    timings = tmp_path / ".timings.jsonl"
    seconds, how = estimate_seconds(timings, 100.0)
    assert seconds == REFERENCE_FIXED_S + 100 * REFERENCE_S_PER_MPX and "no timed run" in how
    for _ in range(3):
        record_run(timings, 0.25, 8.0)  # small partitions: the fixed part
    seconds, how = estimate_seconds(timings, 100.0)
    assert seconds == pytest.approx(8.0 - 0.25 * REFERENCE_S_PER_MPX + 100 * REFERENCE_S_PER_MPX)
    assert "runs of one size" in how
    record_run(timings, 128.0, 8.0 + 128 * 0.3)  # a whole scene: this machine's own rate
    with timings.open("a") as torn:
        torn.write('{"work_mpx": 1')  # a kill mid-line
    seconds, how = estimate_seconds(timings, 64.0)
    assert seconds == pytest.approx(8.0 + 64 * 0.3, rel=0.01) and "a line through" in how
    for _ in range(TIMED_RUNS + 5):
        record_run(timings, 1.0, 9.0)
    assert len(timings.read_text().splitlines()) == TIMED_RUNS
