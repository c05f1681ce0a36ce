"""The asset graph materialized in-process for real partitions of the embedded demo."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import PIL.Image
import pystac
import pytest
import rasterio
import shapely

from geocluster_dagster.definitions import defs
from geocluster_dagster.defs.partitions import partition_key
from geocluster_dagster.demo import (
    DEMO_MONTH,
    DEMO_QA_CODES,
    demo_truth,
)
from geocluster_dagster.density import DensityGrid
from geocluster_dagster.evaluate import (
    ELBOW_SAMPLE_SIZE,
    elbow_curve,
    label_agreement,
    red_nir_density,
    subsample_index,
)
from geocluster_dagster.export import open_cog
from geocluster_dagster.mask import DEFAULT_MASK_FLAGS
from geocluster_dagster.naming import (
    BARE,
    BUILT_UP,
    DENSE_VEGETATION,
    SPARSE_VEGETATION,
    WATER,
    cover_of,
)
from geocluster_dagster.products.clusters import open_clusters
from geocluster_dagster.products.described import DENOMINATORS
from geocluster_dagster.products.geotiff import open_geotiff
from geocluster_dagster.storage import ROOT_RECORD

from .conftest import S2_29RKH
from .helpers import (
    failure_message,
    item_file,
    materialization,
    run,
    run_refused_aoi,
    write_registry,
)


@pytest.fixture(scope="module")
def demo_run(demo, dask_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = run(
        out,
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        run_config={"ops": {"clusters": {"config": {"n_clusters": 5}}}},
    )
    assert result.success
    return out, result


def test_definitions_load_with_every_asset_resource_sensor_and_schedule():
    dg.Definitions.validate_loadable(defs)
    keys = {a.key.to_user_string() for a in defs.resolve_all_asset_specs()}
    pipeline = {"stac_items", "band_stack", "mosaic", "geotiff", "clusters", "diagnostics"}
    pipeline |= {"cluster_change", "stac_item"}
    assert keys == pipeline | {"cluster_model", "accuracy"}
    job = defs.resolve_job_def("geocluster_pipeline")
    assert job.partitions_def is not None
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == pipeline
    assert defs.resolve_job_def("geocluster_reference").partitions_def is not None
    # accuracy only where reference data exists: its own job, which publishes the Item again
    accuracy = defs.resolve_job_def("geocluster_accuracy")
    assert {k.to_user_string() for k in accuracy.asset_layer.selected_asset_keys} == {
        "accuracy", "stac_item",
    }  # fmt: skip
    assert defs.resolve_sensor_def("aoi_registry_sensor") and defs.resolve_schedule_def(
        "weekly_refresh_schedule"
    )


def test_the_demo_partition_writes_every_output(demo_run):
    out, result = demo_run
    part = f"demo/{DEMO_MONTH}"
    items = pystac.ItemCollection.from_file(str(out / "stac_items" / f"{part}.json"))
    assert len(items) == 4
    recipe = json.loads((out / "band_stack" / f"{part}.json").read_text())
    assert len(recipe["items"]["features"]) == 4 and recipe["settings"]["mask_clouds"]
    # Coverage of the mosaic, counted while it was written.
    coverage = materialization(result, "mosaic").metadata
    aoi_pixels, clear = coverage["aoi_pixels"].value, coverage["clear_pixels"].value
    with rasterio.open(out / "mosaic" / f"{part}.tif") as src:
        assert clear == int(src.read(1, masked=True).count())
    assert 0 < clear <= aoi_pixels
    assert coverage["clear_share_of_aoi"].value == pytest.approx(clear / aoi_pixels, rel=1e-3)
    assert "| `clear_share_of_aoi` |" in coverage["summary"].value  # with what it is a share of
    geotiff_dir = out / "geotiff" / part
    with rasterio.open(geotiff_dir / "bands.tif") as src:
        bands = ("blue", "green", "red", "nir", "swir16", "swir22", "lwir")
        assert src.descriptions == bands
        # the inputs' own DN encoding (Collection 2 Level-2 scale/offset), nodata 0
        assert set(src.dtypes) == {"uint16"} and src.nodata == 0
        assert src.scales[2] == pytest.approx(2.75e-05) and src.offsets[2] == pytest.approx(-0.2)
        tags = src.tags()
        assert src.overviews(1) or max(src.shape) <= 512
        geotiff_grid = (src.crs, src.transform, src.shape)
    with rasterio.open(geotiff_dir / "indices.tif") as src:
        assert src.descriptions == ("ndvi", "lst") and src.dtypes[0] == "float32"
        assert (src.crs, src.transform, src.shape) == geotiff_grid
        assert src.tags()["aoi_id"] == "demo"  # each file says what it is, opened alone
        ndvi = src.read(1)
    # the bands read back as the mosaic holds them, bit for bit, beside the indices
    image = open_geotiff(geotiff_dir)
    assert list(image.data_vars) == [*bands, "ndvi", "lst"]
    composite = open_cog(out / "mosaic" / f"{part}.tif")
    for band in bands:
        np.testing.assert_array_equal(image[band].values, composite[band].values)
    assert tags["aoi_id"] == "demo" and tags["time_window"] == "2023-06-01/2023-06-30"
    assert set(tags["source_items"].split(",")) >= {i.id for i in items}
    assert tags["package"].startswith("geocluster_dagster") and "config" in tags
    assert tags["collection"] == "landsat-c2-l2" and "cloud" in tags["mask_flags"]
    assert json.loads(tags["load_config"])["resampling"] == "nearest"
    assert 0.2 < np.nanmean(ndvi) < 0.9

    cluster_dir = out / "clusters" / part
    with rasterio.open(cluster_dir / "cluster_map.tif") as src:
        assert (src.crs, src.transform, src.shape) == geotiff_grid
        labels = src.read(1)
        assert src.nodata == 0
    assert np.array_equal(labels == 0, np.isnan(ndvi))  # nodata exactly where the input is
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4, 5}
    signatures = json.loads((cluster_dir / "signatures.json").read_text())
    assert len(signatures) == 5 and {"red_mean", "red_std", "area_ha", "pixel_count"} <= set(
        signatures[0]
    )
    assert sum(s["pixel_count"] for s in signatures) == int((labels > 0).sum())
    assert signatures[0]["area_ha"] == pytest.approx(
        signatures[0]["pixel_count"] * 0.09
    )  # 30 m pixels
    assert (cluster_dir / "model.json").stat().st_size > 0
    # The map in the UI carries its legend: a swatch of each class's colour, its name, its share.
    preview = materialization(result, "clusters").metadata["preview_cluster_map"].value
    legend = preview.split("\n\n", 1)[1].splitlines()
    assert legend[0] == "| colour | class | name | share of the map |" and len(legend) == 2 + 5
    with rasterio.open(cluster_dir / "cluster_map.tif") as src:
        colours = src.colormap(1)
    for row, signature in zip(legend[2:], signatures, strict=True):
        swatch, value, name, share_shown = (cell.strip() for cell in row.strip("|").split("|"))
        assert (int(value), name) == (signature["cluster"], signature["name"])
        assert share_shown == f"{signature['fraction']:.1%}"
        png = base64.b64decode(swatch.split("base64,", 1)[1].rstrip(")"))
        with PIL.Image.open(io.BytesIO(png)) as image:
            assert image.getpixel((0, 0)) == colours[int(value)][:3]
    # The red-vs-NIR density the diagnostics plot was counted while the map was labelled.
    stored = open_clusters(cluster_dir)
    counted, _, _ = red_nir_density(
        open_geotiff(out / "geotiff" / part), stored.cluster_map, n_clusters=5
    )
    assert np.array_equal(stored.density_for(DensityGrid()), counted) and counted.sum() > 0

    plots = {p.name for p in (out / "diagnostics" / part).glob("*.png")}
    assert plots == {
        "cluster_map.png",
        "confidence.png",
        "true_colour.png",
        "false_colour.png",
        "signatures.png",
        "silhouette.png",
        "elbow.png",
        "cluster_sizes.png",
        "red_nir_density.png",
    }
    change = materialization(result, "cluster_change").metadata  # recorded, not left missing
    assert "is the first date of AOI demo" in change["not_compared"].value
    assert not (out / "cluster_change").exists()
    meta = materialization(result, "diagnostics").metadata
    assert -1 <= meta["silhouette"].value <= 1 and meta["davies_bouldin"].value > 0
    # The figures by file (the report holds them all); embedded only when asked (figures_in_ui).
    assert not [key for key in meta if key.startswith("preview_")]
    plots = {key.removeprefix("plot_"): meta[key].value for key in meta if key.startswith("plot_")}
    assert len(plots) == 9 and all(Path(p).is_file() for p in plots.values()), plots
    assert [p for p in out.rglob("*") if ".tmp" in p.name] == []
    # Every product's numbers in a table with units (a first date has no change to tabulate).
    for asset in ("stac_items", "band_stack", "mosaic", "geotiff", "clusters", "diagnostics"):
        summary = materialization(result, asset).metadata["summary"].value
        assert summary.startswith("| measure | value | unit | how to read it |"), asset
    geotiff_summary = materialization(result, "geotiff").metadata["summary"].value
    assert "| `ndvi_mean` |" in geotiff_summary and DENOMINATORS["grid"] in geotiff_summary
    assert "| `derived_from` | 4 | scenes |" in (
        materialization(result, "stac_item").metadata["summary"].value
    )


def test_the_cluster_map_recovers_the_demo_land_cover(demo_run):
    out, _ = demo_run
    with rasterio.open(out / "clusters" / "demo" / f"{DEMO_MONTH}" / "cluster_map.tif") as src:
        labels = src.read(1)
        rows, cols = np.indices(labels.shape)
        xs, ys = rasterio.transform.xy(src.transform, rows.ravel(), cols.ravel())
        truth = demo_truth(np.asarray(xs), np.asarray(ys), src.crs.to_wkt()).reshape(labels.shape)
    scores = label_agreement(labels, np.where(labels == 0, 0, truth))
    assert scores["ari"] > 0.6


def test_same_seed_same_map_and_masking_matters(demo, demo_run, dask_cluster, tmp_path):
    out, _ = demo_run
    selection = ["stac_items", "band_stack", "mosaic", "geotiff", "clusters"]
    again = run(
        tmp_path / "again",
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        selection=selection,
        run_config={"ops": {"clusters": {"config": {"n_clusters": 5}}}},
    )
    assert again.success
    name = Path("clusters") / "demo" / DEMO_MONTH / "cluster_map.tif"
    first = rasterio.open(out / name).read(1)
    np.testing.assert_array_equal(rasterio.open(tmp_path / "again" / name).read(1), first)

    unmasked = run(
        tmp_path / "unmasked",
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        selection=selection,
        run_config={
            "ops": {
                "band_stack": {"config": {"mask_clouds": False}},
                "clusters": {"config": {"n_clusters": 5}},
            }
        },
    )
    assert unmasked.success
    with rasterio.open(tmp_path / "unmasked" / name) as src:
        labels = src.read(1)
        rows, cols = np.indices(labels.shape)
        xs, ys = rasterio.transform.xy(src.transform, rows.ravel(), cols.ravel())
        truth = demo_truth(np.asarray(xs), np.asarray(ys), src.crs.to_wkt()).reshape(labels.shape)
    masked_ari = label_agreement(first, np.where(first == 0, 0, truth))["ari"]
    unmasked_ari = label_agreement(labels, np.where(labels == 0, 0, truth))["ari"]
    assert masked_ari > unmasked_ari + 0.05


# --- bad input: a clear failure, no partial output, earlier outputs intact ---------------------


def _demo_polygon(demo) -> shapely.Polygon:
    doc = json.loads(Path(demo.aoi_registry).read_text())
    return shapely.geometry.shape(doc["features"][0]["geometry"])


def _no_outputs(out: Path) -> bool:
    """Nothing written but the run's partition lock (``.locks/``, empty once the run ends) and
    the root's record of its kind of date window."""
    if not out.exists():
        return True
    locks = [p for p in out.rglob("*") if p.is_file() and p.relative_to(out).parts[0] == ".locks"]
    assert all(p.stat().st_size == 0 for p in locks), "a finished run left its lock held"
    record = out / ROOT_RECORD
    return not any(p.is_file() and p not in locks and p != record for p in out.rglob("*"))


def test_a_partition_added_in_the_ui_for_an_aoi_the_registry_lacks_is_refused(
    demo, dask_cluster, tmp_path
):
    """The launch dialog's "Add a partition" can create any AOI key: its run stops at the first
    step, says which registry lacks it and what to do, and writes nothing."""
    result = run(
        tmp_path / "out",
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        aoi_ids=("demo", "ghost"),
        key=partition_key("ghost", DEMO_MONTH),
    )
    message = failure_message(result)
    assert "AOI 'ghost' is a partition but is not in the registry" in message
    assert "['demo']" in message and "Restore it there, or delete the partition" in message
    failed = [e.step_key for e in result.all_events if e.is_step_failure]
    assert failed == ["stac_items"]
    # No product of it (only the run's lock file, under .locks/).
    assert [p for p in (tmp_path / "out").rglob("ghost*") if ".locks" not in p.parts] == []


@pytest.mark.parametrize(
    ("geometry", "expected"),
    [
        (
            {
                "type": "Polygon",
                "coordinates": [
                    [
                        [-84.05, 35.0],
                        [-83.95, 35.05],
                        [-83.95, 35.0],
                        [-84.05, 35.05],
                        [-84.05, 35.0],
                    ]
                ],
            },
            "self-intersect",
        ),
        ({"type": "Point", "coordinates": [-84.0, 35.0]}, "Point"),
        ({"type": "Polygon", "coordinates": []}, "empty"),
        (
            {
                "type": "Polygon",
                "coordinates": [
                    [
                        [35.0, -100.05],
                        [35.05, -100.05],
                        [35.05, -99.95],
                        [35.0, -99.95],
                        [35.0, -100.05],
                    ]
                ],
            },
            "swap",
        ),
        (
            {
                "type": "Polygon",
                "coordinates": [
                    [
                        [-84.05, 35.0],
                        [-84.05, 35.05],
                        [-83.95, 35.05],
                        [-83.95, 35.0],
                        [-84.05, 35.0],
                    ]
                ],
            },
            "clockwise",
        ),
    ],
)
def test_bad_aoi_geometry_fails_with_the_fix(demo, dask_cluster, tmp_path, geometry, expected):
    out, message = run_refused_aoi(demo, dask_cluster, tmp_path, geometry)
    assert "bad" in message and expected.lower() in message.lower()
    if expected == "clockwise":
        assert "auto_orient: true" in message
    assert _no_outputs(out)


def test_the_item_and_change_of_a_date_never_searched_say_so_instead_of_failing(
    demo, dask_cluster, tmp_path
):
    """What an asset backfill of a date also plans for the dates after it (their change reads
    its map): with nothing of their own yet, they say so, and the run succeeds."""
    result = run(
        tmp_path / "out",
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        selection=["cluster_change", "stac_item"],
        key=partition_key("demo", "2023-07-01"),
    )
    assert result.success
    change = materialization(result, "cluster_change").metadata["not_compared"].value
    assert "has no map of its own yet" in change
    item = materialization(result, "stac_item").metadata["not_published"].value
    assert "demo|2023-07-01 was never searched" in item
    assert not (tmp_path / "out" / "stac").exists()


def test_no_items_is_no_imagery_and_names_the_filter_to_relax(demo, dask_cluster, tmp_path):
    result = run(
        tmp_path / "out",
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        run_config={"ops": {"stac_items": {"config": {"max_cloud_cover": 0.5}}}},
    )
    assert result.success  # a partition without imagery is skipped, not failed
    reason = materialization(result, "stac_items").metadata["no_imagery"].value
    assert "raise max_cloud_cover (stac_items) to at least" in reason
    written = [p.relative_to(tmp_path / "out").parts[0] for p in (tmp_path / "out").rglob("*.json")]
    # the empty search is on record; nothing else (but the root's record of its date windows)
    assert set(written) == {"stac_items", "geocluster_root.json"}


def _catalog_copy(demo, tmp_path: Path) -> Path:
    copy = tmp_path / "catalog"
    shutil.copytree(Path(demo.catalog).parent, copy)
    return copy / "catalog.json"


def test_unreadable_asset_names_item_band_and_url(demo, dask_cluster, tmp_path):
    catalog = _catalog_copy(demo, tmp_path)
    victim = sorted(catalog.parent.rglob("*_SR_B4.TIF"))[0]
    victim.write_text("<Error><Code>AuthenticationFailed</Code></Error>")
    result = run(
        tmp_path / "out",
        registry=demo.aoi_registry,
        catalog=str(catalog),
        dask_cluster=dask_cluster,
    )
    message = failure_message(result)
    assert victim.name in message and "'red'" in message
    assert not (tmp_path / "out" / "band_stack").exists()


def test_band_the_collection_lacks(demo, dask_cluster, tmp_path):
    result = run(
        tmp_path / "out",
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        run_config={"ops": {"band_stack": {"config": {"bands": ["red", "nir", "rededge1"]}}}},
    )
    assert "rededge1" in failure_message(result) and "bands" in failure_message(result)


def test_rasters_that_do_not_overlap_the_aoi(demo, dask_cluster, tmp_path):
    # An ItemCollection whose footprints claim a far-away AOI the files do not cover.
    from geocluster_dagster.search import StacSource, search_items

    found = search_items(
        StacSource(str(demo.catalog)),
        collection="landsat-c2-l2",
        geometry=_demo_polygon(demo),
        start=demo.start,
        end=demo.end,
    )
    far = shapely.box(-80.0, 30.0, -79.9, 30.1)
    for item in found:
        item.geometry = shapely.geometry.mapping(far.buffer(0.05))
        item.bbox = list(far.buffer(0.05).bounds)
    collection_file = tmp_path / "items.json"
    collection_file.write_text(json.dumps(pystac.ItemCollection(found).to_dict()))
    result = run(
        tmp_path / "out",
        registry=write_registry(tmp_path, shapely.geometry.mapping(far), "far"),
        catalog=str(collection_file),
        dask_cluster=dask_cluster,
        aoi_ids=("far",),
        key=partition_key("far", DEMO_MONTH),
    )
    assert "overlap" in failure_message(result)
    assert not (tmp_path / "out" / "band_stack").exists()


def test_everything_masked_is_refused_and_leaves_no_raster(demo, dask_cluster, tmp_path):
    catalog = _catalog_copy(demo, tmp_path)
    for qa in catalog.parent.rglob("*_QA_PIXEL.TIF"):
        with rasterio.open(qa) as src:
            profile, data = src.profile, src.read(1)
        cloudy = np.where(data == 1, 1, 22280).astype("uint16")  # keep fill, everything else cloud
        profile.update(driver="GTiff")
        with rasterio.open(qa, "w", **profile) as dst:
            dst.write(cloudy, 1)
    out = tmp_path / "out"
    result = run(out, registry=demo.aoi_registry, catalog=str(catalog), dask_cluster=dask_cluster)
    message = failure_message(result)
    assert "masked" in message and "max_cloud_cover" in message
    # The composite was refused while being written: neither it nor its temporary file is left.
    assert [p for p in (out / "mosaic").rglob("*") if p.is_file()] == []
    assert not (out / "geotiff").exists()


def _snow_where_clear(catalog: Path) -> None:
    """Every clear land or water pixel of the demo becomes high-confidence snow (bit 5 and
    snow confidence 3 set, as in USGS Collection 2 snow codes: 21824 -> 30048)."""
    snow = (1 << 5) | (0b11 << 12)
    clear = (DEMO_QA_CODES["clear_land"], DEMO_QA_CODES["clear_water"])
    for qa in catalog.parent.rglob("*_QA_PIXEL.TIF"):
        with rasterio.open(qa) as src:
            profile, data = src.profile, src.read(1)
        profile.update(driver="GTiff")
        with rasterio.open(qa, "w", **profile) as dst:
            dst.write(np.where(np.isin(data, clear), data | snow, data).astype("uint16"), 1)


def test_snow_is_land_cover_by_default_and_named_when_masking_it_empties_the_aoi(
    demo, demo_run, dask_cluster, tmp_path
):
    catalog = _catalog_copy(demo, tmp_path)
    _snow_where_clear(catalog)
    kept = tmp_path / "kept"
    result = run(
        kept,
        registry=demo.aoi_registry,
        catalog=str(catalog),
        dask_cluster=dask_cluster,
        selection=["stac_items", "band_stack", "mosaic"],
    )
    assert result.success
    clear = materialization(result, "mosaic").metadata["clear_pixels"].value
    assert clear == materialization(demo_run[1], "mosaic").metadata["clear_pixels"].value

    masked = run(
        tmp_path / "masked",
        registry=demo.aoi_registry,
        catalog=str(catalog),
        dask_cluster=dask_cluster,
        selection=["stac_items", "band_stack", "mosaic"],
        run_config={
            "ops": {"band_stack": {"config": {"mask_flags": [*DEFAULT_MASK_FLAGS, "snow"]}}}
        },
    )
    message = failure_message(masked)
    share = re.search(r"`snow` alone masked (\d+)% of the observations with data", message)
    assert share, message
    assert 50 <= int(share[1]) <= 99  # the rest: clouds, shadows, dilated rims
    assert "drop `snow` from `mask_flags`" in message


def test_automatic_k_on_the_demo_is_within_one_of_its_land_covers(demo, dask_cluster, tmp_path):
    out = tmp_path / "out"
    result = run(
        out,
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        run_config={"ops": {"clusters": {"config": {"n_clusters": "auto"}}}},
    )
    assert result.success
    meta = materialization(result, "clusters").metadata
    choice = meta["k_choice"].value
    k = meta["n_clusters"].value
    # k is the fewest clusters whose covers agree with their pixels' own: every cover of the
    # demo's ground then has a cluster named after it (at the knee, k=4, its water was named
    # shadow/dark).
    assert choice["chosen"] == choice["cover_best"] == k and choice["k_values"] == list(
        range(2, 13)
    )
    assert {"knee", "silhouette_best", "cover_best", "reason", "disagree"} <= set(choice)
    summary = json.loads((out / "clusters" / "demo" / DEMO_MONTH / "summary.json").read_text())
    assert summary["n_clusters"] == k and summary["k_choice"] == choice
    covers = {cover_of(c["name"]) for c in summary["classes"]}
    # forest, cropland and wetland, the river and lakes; the town is built-up or, in its dense
    # core, bare soil/rock (naming's documented limit)
    assert covers >= {WATER, DENSE_VEGETATION, SPARSE_VEGETATION}, summary["classes"]
    assert covers & {BUILT_UP, BARE}, summary["classes"]
    names = [c["name"] for c in summary["classes"]]
    assert len(set(names)) == len(names) == k
    diagnostics = materialization(result, "diagnostics").metadata
    assert diagnostics["silhouette_best_k"].value >= 2
    assert diagnostics["k_advice"].value.startswith(f"k={k} is the fewest clusters that separate")
    assert diagnostics["cover_best_k"].value == k
    # diagnostics reuse the curve k was chosen from: it is what fitting it again gives
    stored = open_clusters(out / "clusters" / "demo" / DEMO_MONTH)
    reused = pd.read_csv(out / "diagnostics" / "demo" / DEMO_MONTH / "elbow.csv")
    rows = subsample_index(len(stored.sample), ELBOW_SAMPLE_SIZE, 0)
    again = elbow_curve(
        stored.sample[rows],
        list(range(2, 13)),
        stored.model.settings,
        features=stored.model.features,
    )
    pd.testing.assert_frame_equal(reused, again, check_dtype=False)
    assert (out / "diagnostics" / "demo" / DEMO_MONTH / "elbow.png").stat().st_size > 0


def test_a_bad_n_clusters_is_refused_in_the_users_terms(demo, dask_cluster, tmp_path):
    result = run(
        tmp_path / "out",
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        selection=["clusters"],
        run_config={"ops": {"clusters": {"config": {"n_clusters": "atuo"}}}},
    )
    message = failure_message(result)
    assert "n_clusters='atuo' is invalid" in message and "'auto'" in message


def test_k_larger_than_the_valid_pixels(demo, dask_cluster, tmp_path):
    centre = _demo_polygon(demo).representative_point()
    tiny = shapely.box(
        centre.x, centre.y, centre.x + 0.0007, centre.y + 0.0007
    )  # about 2 x 2 pixels
    result = run(
        tmp_path / "out",
        registry=write_registry(tmp_path, shapely.geometry.mapping(tiny), "tiny"),
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        aoi_ids=("tiny",),
        key=partition_key("tiny", DEMO_MONTH),
        run_config={"ops": {"clusters": {"config": {"n_clusters": 12}}}},
    )
    message = failure_message(result)
    assert "n_clusters" in message or "k=12" in message
    assert not (tmp_path / "out" / "clusters").exists()


def test_unwritable_output_keeps_the_earlier_materialization(
    demo, demo_run, dask_cluster, tmp_path
):
    out, _ = demo_run
    folder = out / "geotiff" / "demo"
    before = _contents(folder / DEMO_MONTH)
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        result = run(
            out,
            registry=demo.aoi_registry,
            catalog=str(demo.catalog),
            dask_cluster=dask_cluster,
            selection=["geotiff"],
            run_config={"ops": {"geotiff": {"config": {"indices": ["ndvi", "ndwi"]}}}},
        )
        message = failure_message(result)
        assert "not writable" in message and "GEOCLUSTER_OUTPUT" in message
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    assert _contents(folder / DEMO_MONTH) == before
    assert _listing(folder) == [DEMO_MONTH, f"{DEMO_MONTH}.checks.json"]


def _contents(folder: Path) -> dict[str, bytes]:
    """Every file of a product folder, by name."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def _listing(folder: Path) -> list[str]:
    """What a user sees in an AOI's folder of products, after checking that no temporary is
    left (a folder product is a link to the hidden folder of its current version)."""
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_a_real_sentinel2_tile_through_the_whole_graph(s2_29rkh_item, dask_cluster, tmp_path):
    """Earth Search item, real COGs, SCL at 200 m masking 100 m bands, no thermal band."""
    items_file = tmp_path / "items.json"
    items_file.write_text(json.dumps(pystac.ItemCollection([s2_29rkh_item]).to_dict()))
    footprint = shapely.geometry.shape(s2_29rkh_item.geometry)
    aoi = shapely.geometry.polygon.orient(footprint.buffer(-0.05), 1.0)  # RFC 7946 winding
    key = partition_key("western_sahara", "2020-02-01")
    out = tmp_path / "out"
    result = run(
        out,
        registry=write_registry(tmp_path, shapely.geometry.mapping(aoi), "western_sahara"),
        catalog=str(items_file),
        dask_cluster=dask_cluster,
        aoi_ids=("western_sahara",),
        key=key,
        run_config={
            "ops": {
                "stac_items": {"config": {"collection": s2_29rkh_item.collection_id}},
                "band_stack": {
                    "config": {
                        "bands": ["blue", "green", "red", "nir"],
                        "resolution": 100,
                        "chunk_size": 256,
                    }
                },
                "clusters": {"config": {"n_clusters": 4, "sample_size": 50_000}},
                "diagnostics": {"config": {"elbow_k_max": 6}},
            }
        },
    )
    assert result.success
    geotiff_dir = out / "geotiff" / "western_sahara" / "2020-02-01"
    image = open_geotiff(geotiff_dir)
    assert list(image.data_vars) == ["blue", "green", "red", "nir", "ndvi"]  # no lwir, no lst
    red = image["red"].values
    with rasterio.open(geotiff_dir / "bands.tif") as src:
        rows, cols = np.indices(red.shape)
        xs, ys = rasterio.transform.xy(src.transform, rows.ravel(), cols.ravel())
    xs, ys = np.asarray(xs).reshape(red.shape), np.asarray(ys).reshape(red.shape)
    # Independent expectation: the real SCL file, each 200 m pixel looked up at the 100 m centres.
    with rasterio.open(S2_29RKH / "SCL.tif") as scl_src:
        scl = scl_src.read(1)
        scl_rows, scl_cols = rasterio.transform.rowcol(scl_src.transform, xs.ravel(), ys.ravel())
    scl_at = scl[np.asarray(scl_rows), np.asarray(scl_cols)].reshape(red.shape)
    inside = ~np.isnan(red) | np.isin(scl_at, [0, 3, 8, 9, 10, 11])
    assert np.isin(scl_at[inside & np.isnan(red)], [0, 3, 8, 9, 10, 11]).all()
    assert (~np.isnan(red))[inside & ~np.isin(scl_at, [0, 3, 8, 9, 10, 11])].all()
    assert (inside & np.isnan(red)).sum() > 10_000  # thin cirrus and cloud really were masked
    labels = rasterio.open(
        out / "clusters" / "western_sahara" / "2020-02-01" / "cluster_map.tif"
    ).read(1)
    assert np.array_equal(labels == 0, np.isnan(red))
    assert (out / "diagnostics" / "western_sahara" / "2020-02-01" / "red_nir_density.png").exists()


def test_disk_full_fails_cleanly_and_keeps_the_earlier_geotiff(demo, dask_cluster, tmp_path):
    out = tmp_path / "out"
    upstream = ["stac_items", "band_stack", "mosaic"]
    assert run(
        out,
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        selection=upstream,
    ).success
    folder = out / "geotiff" / "demo"
    folder.mkdir(parents=True)
    # A COG is copied from an uncompressed intermediate: first a disk with room for both, then
    # one too small for a 13-band intermediate beside the first COG.
    with rasterio.open(out / "mosaic" / "demo" / f"{DEMO_MONTH}.tif") as src:
        band_bytes = src.width * src.height * 4
    roomy_kib = (9 * band_bytes * 3) // 1024
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={roomy_kib}k", "tmpfs", str(folder)], check=True
    )
    try:
        first = run(
            out,
            registry=demo.aoi_registry,
            catalog=str(demo.catalog),
            dask_cluster=dask_cluster,
            selection=["geotiff"],
        )
        assert first.success
        before = _contents(folder / DEMO_MONTH)
        # Now shrink the disk: room for the COGs there and half the next intermediates.
        tight_kib = (sum(map(len, before.values())) + 13 * band_bytes // 2) // 1024
        subprocess.run(["mount", "-o", f"remount,size={tight_kib}k", str(folder)], check=True)
        bigger = {
            "ops": {
                "geotiff": {"config": {"indices": ["ndvi", "lst", "ndwi", "evi", "savi", "ndbi"]}}
            }
        }
        second = run(
            out,
            registry=demo.aoi_registry,
            catalog=str(demo.catalog),
            dask_cluster=dask_cluster,
            selection=["geotiff"],
            run_config=bigger,
        )
        message = failure_message(second)
        assert "disk is full" in message and str(folder) in message
        assert _contents(folder / DEMO_MONTH) == before
        assert _listing(folder) == [DEMO_MONTH, f"{DEMO_MONTH}.checks.json"]
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize(
    ("op", "config", "says"),
    [
        ("clusters", {"n_clusters": "six"}, "ops.clusters.config: n_clusters='six' is invalid"),
        (
            "diagnostics",
            {"elbow_k_min": 8, "elbow_k_max": 3},
            "use 2 <= elbow_k_min <= elbow_k_max",
        ),
        ("geotiff", {"compress_level": 99}, "compress_level=99 is invalid for zstd: use 1..22"),
        ("band_stack", {"bands": ["red", "nir", "red"]}, "`bands` names ['red'] more than once"),
    ],
)
def test_a_setting_that_cannot_work_fails_before_anything_is_rewritten(
    demo, demo_run, dask_cluster, op, config, says
):
    """The settings of every asset are checked at the run's first step: the earlier good
    products of the partition stay as they were."""
    out, _ = demo_run
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and ".locks" not in p.parts}
    result = run(
        out,
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        run_config={"ops": {op: {"config": config}}},
    )
    message = failure_message(result)
    assert says in message
    # one line, naming whose setting it is; no traceback of the settings' own check chained
    assert "\n" not in message.strip() and f"a setting of `{op}`" in message, message
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "stac_items"  # the first step: nothing after it ran
    assert failure.step_failure_data.user_failure_data.metadata["setting_of"].value == op
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and ".locks" not in p.parts}
    assert after == before


@pytest.mark.parametrize(
    ("run_config", "tags", "why"),
    [
        (
            {"ops": {"diagnostics": {"config": {"figures": False}}}},
            None,
            "ops.diagnostics.config.figures is false",
        ),
        # what a backfill's runs get from `dagster job backfill --tags`: no run config of theirs
        (None, {"geocluster/figures": "false"}, "run tag geocluster/figures=false"),
    ],
)
def test_diagnostics_without_figures_score_the_same_and_draw_nothing(
    demo_run, demo, dask_cluster, tmp_path, run_config, tags, why
):
    """figures: false, or the run tag (for backfills of many AOIs), keeps the scores, the elbow
    and the check, and leaves the figures out of the product, its metadata, the STAC Item and
    the report."""
    drawn, _ = demo_run
    out = tmp_path / "out"
    shutil.copytree(drawn, out, symlinks=True)
    result = run(
        out,
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        selection=["diagnostics", "stac_item"],
        run_config=run_config,
        tags=tags,
    )
    assert result.success
    part = Path("demo") / DEMO_MONTH
    folder = out / "diagnostics" / part
    assert sorted(p.name for p in folder.iterdir()) == ["elbow.csv", "scores.json"]
    for name in ("elbow.csv", "scores.json"):  # the same numbers as the run that drew
        assert (folder / name).read_bytes() == (drawn / "diagnostics" / part / name).read_bytes()
    metadata = materialization(result, "diagnostics").metadata
    assert metadata["figures"].value == f"not drawn ({why})"
    assert not [key for key in metadata if key.startswith(("preview_", "plot_"))]
    checks = [e for e in result.get_asset_check_evaluations() if e.check_name == "silhouette"]
    assert len(checks) == 1
    item = json.loads(item_file(out, "demo", DEMO_MONTH).read_text())
    assert not [a for a in item["assets"].values() if a["href"].endswith(".png")]


def test_a_figures_tag_it_cannot_read_fails_the_diagnostics_and_says_what_to_use(
    demo_run, demo, dask_cluster, tmp_path
):
    drawn, _ = demo_run
    out = tmp_path / "out"
    shutil.copytree(drawn, out, symlinks=True)
    before = _contents(out / "diagnostics" / "demo" / DEMO_MONTH)
    result = run(
        out,
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        selection=["diagnostics"],
        tags={"geocluster/figures": "no"},
    )
    message = failure_message(result)
    assert "geocluster/figures='no' is not understood: use false" in message
    assert _contents(out / "diagnostics" / "demo" / DEMO_MONTH) == before


def test_a_root_of_another_kind_of_date_window_is_refused_before_any_step(
    demo, dask_cluster, tmp_path, monkeypatch
):
    """A run launched from the UI with other date windows than the root's: the run's output
    resource refuses it, naming both kinds, and nothing is written."""
    import geocluster_dagster.defs.outputs as outputs_module

    out = tmp_path / "out"
    out.mkdir()
    (out / "geocluster_root.json").write_text('{"date_windows": "half_month"}')
    monkeypatch.setattr(outputs_module, "DATE_WINDOWS", "month")
    result = run(
        out, registry=demo.aoi_registry, catalog=str(demo.catalog), dask_cluster=dask_cluster,
        selection=["stac_items"],
    )  # fmt: skip
    assert not result.success
    errors = [getattr(e.event_specific_data, "error", None) for e in result.all_events]
    text = "\n".join(e.message for e in errors if e is not None)
    assert "holds products keyed by half_month windows, but GEOCLUSTER_DATE_WINDOWS=month" in text
    assert "Set GEOCLUSTER_DATE_WINDOWS=half_month" in text
    assert not (out / "stac_items").exists()


def test_a_run_that_rewrites_products_withdraws_the_item_until_it_publishes_again(
    demo, dask_cluster, tmp_path
):
    """The catalog never lists a checksum of a product that has since been rewritten: a run
    that fails after rewriting some products leaves the partition unpublished, not described
    by the products before."""
    out = tmp_path / "out"
    args = {
        "registry": demo.aoi_registry,
        "catalog": str(demo.catalog),
        "dask_cluster": dask_cluster,
    }
    assert run(out, **args).success
    item = item_file(out, "demo", DEMO_MONTH)
    report = out / "report" / "demo" / f"{DEMO_MONTH}.html"
    collection = out / "stac" / "demo" / "collection.json"
    assert item.exists() and report.exists()
    failed = run(
        out, **args, run_config={"ops": {"clusters": {"config": {"features": ["nosuch"]}}}}
    )
    assert "'nosuch'" in failure_message(failed)  # clusters failed after geotiff was rewritten
    assert not item.exists() and not report.exists()
    links = [link["href"] for link in json.loads(collection.read_text())["links"]]
    assert f"./{DEMO_MONTH[:4]}/catalog.json" not in links  # the year's only Item
    assert json.loads(collection.read_text())["extent"]["temporal"]["interval"] == [[None, None]]
    again = run(out, **args)
    assert again.success and item.exists() and report.exists()
    published = json.loads(item.read_text())
    for asset in published["assets"].values():
        if "file:checksum" in asset:
            target = (item.parent / asset["href"]).resolve()
            assert (
                asset["file:checksum"] == "1220" + hashlib.sha256(target.read_bytes()).hexdigest()
            )


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        (
            {"clusters": {"config": {"model": "aoi:nosuch"}}},
            "names AOI 'nosuch', which is not in the AOI registry (it has demo)",
        ),
        ({"clusters": {"config": {"model": "aoi:Bad|Id"}}}, "AOI id 'Bad|Id' is not valid"),
        (
            {"clusters": {"config": {"model": "aoi_reference"}}},
            "materialize cluster_model for AOI 'demo' first",
        ),
        (
            {"clusters": {"config": {"model": "/nowhere/model.json"}}},
            "There is no cluster model at /nowhere/model.json",
        ),
        (
            {"cluster_change": {"config": {"compare_with": DEMO_MONTH}}},
            f"compare_with={DEMO_MONTH} is this partition's own date",
        ),
        (
            {"cluster_change": {"config": {"compare_with": "2023-05-01"}}},
            "compare_with=2023-05-01 has no clusters map for this AOI",
        ),
    ],
)
def test_settings_that_name_another_thing_are_refused_before_any_product(
    demo, dask_cluster, tmp_path, ops, expected
):
    out = tmp_path / "out"
    result = run(
        out, registry=demo.aoi_registry, catalog=str(demo.catalog), dask_cluster=dask_cluster,
        run_config={"ops": ops},
    )  # fmt: skip
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "stac_items"  # the run's first step
    assert expected in failure_message(result)
    assert not (out / "stac_items").exists()  # nothing was written, so nothing was replaced
