"""Checks that judge each partition: the verdicts on real data, and how they gate the graph."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest
import rasterio

from geocluster_dagster.defs.partitions import partition_key
from geocluster_dagster.demo import DEMO_MONTH
from geocluster_dagster.quality import (
    ClusterQuality,
    MosaicQuality,
    judge_clear_fraction,
    judge_clusters,
    judge_cog,
)

from .conftest import L7_LABELED
from .helpers import failure_message, materialization, run

FMASK_CLEAR = 0


def _fmask_clear_fraction(path):
    with rasterio.open(path) as src:
        stack = src.read()
        nodata = src.nodata
    valid = (
        (stack[:7] != nodata).all(axis=0) if nodata is not None else np.ones(stack.shape[1:], bool)
    )
    return float(((stack[7] == FMASK_CLEAR) & valid).sum() / valid.sum()), int(valid.sum())


def test_the_cloudy_landsat7_date_trips_the_clear_fraction_warning():
    cloudy, pixels = _fmask_clear_fraction(L7_LABELED / "LE70220492002106EDC00_stack.gtif")
    clear, _ = _fmask_clear_fraction(L7_LABELED / "LE70220491999322EDC01_stack.gtif")
    assert cloudy == pytest.approx(0.734, abs=0.01)  # the data README: 73 % clear by Fmask
    verdict = judge_clear_fraction(cloudy, pixels, MosaicQuality())
    assert not verdict.passed and verdict.severity == "warn"
    assert "below warn_clear_fraction=0.8" in verdict.description
    assert verdict.metadata["clear_share_of_aoi"] == round(cloudy, 4)
    assert judge_clear_fraction(clear, pixels, MosaicQuality()).passed
    stricter = judge_clear_fraction(cloudy, pixels, MosaicQuality(error_clear_fraction=0.75))
    assert (
        stricter.severity == "error"
        and "the downstream assets are not built" in stricter.description
    )


def test_a_corrupted_cog_fails_the_cog_check(tmp_path):
    good = tmp_path / "good.tif"
    data = np.random.default_rng(0).uniform(0, 0.5, (1, 600, 600)).astype("float32")
    profile = dict(driver="COG", width=600, height=600, count=1, dtype="float32", nodata=np.nan,
                   crs="EPSG:32623", transform=rasterio.transform.from_origin(0, 0, 30, 30))  # fmt: skip
    with rasterio.open(good, "w", **profile) as dst:
        dst.write(data)
        dst.set_band_description(1, "red")
    stats = {"red": {"min": 0.0, "max": 0.5}}
    assert all(j.passed for j in judge_cog({good: ["red"]}, stats))
    broken = tmp_path / "broken.tif"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    cog = judge_cog({good: ["red"], broken: ["nir"]}, stats)[0]
    assert cog.name == "valid_cog" and not cog.passed and cog.severity == "error"
    assert "broken.tif" in cog.description and "good.tif" not in cog.description
    striped = tmp_path / "striped.tif"
    with rasterio.open(striped, "w", **{**profile, "driver": "GTiff"}) as dst:
        dst.write(data)
    assert not judge_cog({striped: ["red"]}, stats)[0].passed  # a plain GeoTIFF is not a COG
    wrong = {j.name: j for j in judge_cog({good: ["nir"]}, {"red": {"min": -0.5, "max": 0.5}})}
    assert not wrong["bands_as_promised"].passed and not wrong["physical_reflectance"].passed
    assert "good.tif holds ['red']" in wrong["bands_as_promised"].description


def test_the_cog_check_wants_nodata_0_for_dn_and_nan_for_float(tmp_path):
    profile = dict(driver="COG", width=64, height=64, count=1, crs="EPSG:32623",
                   transform=rasterio.transform.from_origin(0, 0, 30, 30))  # fmt: skip
    cases = {"dn.tif": ("uint16", 0), "dn_nan.tif": ("uint16", None), "float.tif": ("float32", 0)}
    for name, (dtype, nodata) in cases.items():
        with rasterio.open(tmp_path / name, "w", **profile, dtype=dtype, nodata=nodata) as dst:
            dst.write(np.ones((1, 64, 64), dtype=dtype))
            dst.set_band_description(1, "red")
    verdicts = {
        name: {j.name: j for j in judge_cog({tmp_path / name: ["red"]}, {})}["bands_as_promised"]
        for name in cases
    }
    assert verdicts["dn.tif"].passed
    assert not verdicts["dn_nan.tif"].passed and not verdicts["float.tif"].passed
    assert "expected ['red'] with nodata nan" in verdicts["float.tif"].description


def test_cluster_checks_name_empty_small_and_unnamed_clusters():
    verdicts = {
        j.name: j
        for j in judge_clusters(
            {1: 5000, 2: 10, 3: 0}, {1: "water", 2: "unlabelled", 3: "built-up"}, ClusterQuality()
        )
    }
    assert "Clusters [3] hold no pixel" in verdicts["no_empty_cluster"].description
    assert not verdicts["smallest_cluster_share"].passed
    assert "Clusters [2] fit no naming rule" in verdicts["names_assigned"].description


def _check(result, asset, name):
    evaluations = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.asset_check_key.name == name
        and e.event_specific_data.asset_key.to_user_string() == asset
    ]
    assert len(evaluations) == 1, (asset, name)
    # Partitioned like its asset: the UI shows each partition's own verdict.
    assert evaluations[0].partition == result.dagster_run.tags["dagster/partition"]
    return evaluations[0]


def _skipped(result):
    return {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}


def test_a_blocking_check_failure_stops_the_assets_downstream(demo, dask_cluster, tmp_path):
    result = run(
        tmp_path / "out",
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        run_config={
            "ops": {
                "stac_items": {"config": {"max_items": 1}},  # one scene of four: 37 % clear
                "mosaic": {"config": {"error_clear_fraction": 0.5}},
            }
        },
    )
    assert not result.success
    evaluation = _check(result, "mosaic", "clear_fraction")
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "below error_clear_fraction=0.5" in evaluation.description
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started == {"stac_items", "band_stack", "mosaic"}  # the rest were never run
    assert not (tmp_path / "out" / "geotiff").exists()
    assert "blocking asset check failed" in failure_message(result)


def test_a_month_without_imagery_says_so_and_fails_nothing(demo, dask_cluster, tmp_path):
    """A backfill over May (no scene) and June: June complete, May 'no imagery' in every
    asset (materialized, writing nothing), no failure and no skipped step."""
    instance = dg.DagsterInstance.ephemeral()
    results = {
        month: run(
            tmp_path / "out",
            registry=demo.aoi_registry,
            catalog=str(demo.catalog),
            dask_cluster=dask_cluster,
            run_config={"ops": {"clusters": {"config": {"n_clusters": 4}}}},
            key=partition_key("demo", month),
            instance=instance,
        )
        for month in ("2023-05-01", DEMO_MONTH)
    }
    assert all(result.success for result in results.values())
    may = results["2023-05-01"]
    items = materialization(may, "stac_items").metadata
    assert items["item_count"].value == 0
    assert "none in the date window (dated 2023-06-10, 2023-06-18)" in items["no_imagery"].value
    scenes = _check(may, "stac_items", "has_scenes")
    assert not scenes.passed and scenes.severity == dg.AssetCheckSeverity.WARN
    assert scenes.description.startswith("No imagery: ")
    assert _skipped(may) == set()
    downstream = ["band_stack", "mosaic", "geotiff", "clusters", "diagnostics"]
    for asset in [*downstream, "cluster_change", "stac_item"]:
        metadata = materialization(may, asset).metadata
        assert metadata["no_imagery"].value.startswith("No imagery for AOI 'demo', 2023-05-01")
        assert "output_path" not in metadata, asset
    clear = _check(may, "mosaic", "clear_fraction")
    assert clear.passed and clear.description == "Not evaluated: no imagery in the window."
    assert clear.metadata["evaluated"].value is False
    for asset in downstream:  # nothing written for May
        assert not list((tmp_path / "out" / asset / "demo").glob("2023-05-01*")), asset
    assert not list((tmp_path / "out").rglob("2023-05-01*.html"))
    june = results[DEMO_MONTH]
    assert _check(june, "stac_items", "has_scenes").passed
    for asset in ("mosaic", "geotiff", "clusters", "diagnostics"):
        assert "no_imagery" not in materialization(june, asset).metadata


def test_an_unexpected_error_is_a_failure_that_names_it():
    from geocluster_dagster.defs.steps import unexpected_failures
    from geocluster_dagster.errors import NoClearPixels

    with pytest.raises(dg.Failure, match=r"^Unexpected ValueError: boom\. This is not a setting"):
        with unexpected_failures():
            raise ValueError("boom")
    with pytest.raises(NoClearPixels):  # the package's own errors keep their own words
        with unexpected_failures():
            raise NoClearPixels("all masked")
