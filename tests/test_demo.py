"""Tests for the embedded offline demo catalog (geocluster_dagster.demo)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import odc.stac
import pandas as pd
import pystac
import pytest
import rasterio
import shapely
import shapely.geometry
import spyndex
from pyproj import Transformer
from pystac.extensions.raster import RasterExtension

from geocluster_dagster import demo
from geocluster_dagster.demo import (
    DEMO_AOI_ID,
    DEMO_CLASSES,
    DEMO_COLLECTION,
    DEMO_MONTH,
    DEMO_QA_CODES,
    build_demo,
    demo_ground,
    demo_truth,
)
from geocluster_dagster.demo import catalog as demo_catalog
from geocluster_dagster.errors import ConfigError, OutputNotWritable
from geocluster_dagster.storage import current_version

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_QA = (
    SHARED
    / "landsat8_c2l2_008059_20191201_downsampled"
    / "LC08_L2SP_008059_20191201_20200825_02_T1_QA_PIXEL.TIF"
)
PC_ITEMS = SHARED / "stac" / "pc_landsat-c2-l2_items_page_LC09_path084.json"

SR_KEYS = ("coastal", "blue", "green", "red", "nir08", "swir16", "swir22")
ASSET_KEYS = (*SR_KEYS, "lwir11", "qa_pixel")
GROUND_NAME = {key: key for key in ASSET_KEYS[:-1]} | {"nir08": "nir", "lwir11": "lwir"}
FILE_SUFFIX = {
    **{key: f"_SR_B{i}.TIF" for i, key in enumerate(SR_KEYS, start=1)},
    "lwir11": "_ST_B10.TIF",
    "qa_pixel": "_QA_PIXEL.TIF",
}


# QA_PIXEL decoding written here from the USGS bit table, independently of the module.
def flag(qa: np.ndarray, bit: int) -> np.ndarray:
    return (np.asarray(qa).astype(np.int64) >> bit) & 1 == 1


def confidence(qa: np.ndarray, offset: int) -> np.ndarray:
    return (np.asarray(qa).astype(np.int64) >> offset) & 3


FILL, DILATED, CIRRUS, CLOUD, SHADOW, SNOW, CLEAR, WATER = range(8)


def masked(qa: np.ndarray) -> np.ndarray:
    """Pixels a cloud mask must drop: fill, cloud, dilated cloud, cloud shadow."""
    return flag(qa, FILL) | flag(qa, CLOUD) | flag(qa, DILATED) | flag(qa, SHADOW)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> demo.DemoPaths:
    return build_demo(tmp_path_factory.mktemp("built") / "demo")


@pytest.fixture(scope="module")
def items(built: demo.DemoPaths) -> list[pystac.Item]:
    catalog = pystac.Catalog.from_file(str(built.catalog))
    return sorted(catalog.get_items(recursive=True), key=lambda item: item.id)


def read(item: pystac.Item, key: str) -> tuple[np.ndarray, rasterio.profiles.Profile]:
    with rasterio.open(item.assets[key].get_absolute_href()) as src:
        return src.read(1), src.profile


def decoded(item: pystac.Item, key: str) -> np.ndarray:
    """Physical values, decoded with the scale/offset the item's raster:bands announce."""
    band = RasterExtension.ext(item.assets[key]).bands[0]
    dn, _ = read(item, key)
    return dn * band.scale + band.offset


def pixel_centres(item: pystac.Item) -> tuple[np.ndarray, np.ndarray]:
    a, _, c, _, e, f = item.properties["proj:transform"]
    h, w = item.properties["proj:shape"]
    rows, cols = np.indices((h, w))
    return c + (cols + 0.5) * a, f + (rows + 0.5) * e


def tree_state(root: Path) -> dict[str, tuple[int, str]]:
    return {
        p.relative_to(root).as_posix(): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------------------------
# Building: paths, idempotence, atomicity


def test_build_returns_the_paths_of_a_complete_catalog(built, items) -> None:
    assert built.catalog == built.root / "catalog.json" and built.catalog.is_file()
    assert built.aoi_registry.is_file() and built.aoi_id == DEMO_AOI_ID
    assert sorted(built.item_ids) == [item.id for item in items] and len(items) == 4
    assert built.start.date().isoformat() == DEMO_MONTH
    assert all(built.start <= item.datetime < built.end for item in items)
    assert (built.end - built.start).days == 30  # June
    assert {item.collection_id for item in items} == {DEMO_COLLECTION}


def test_second_build_rewrites_nothing(built) -> None:
    before = tree_state(built.root)
    assert build_demo(built.root) == built
    assert tree_state(built.root) == before


def test_rebuilds_are_deterministic_and_repair_a_damaged_demo(built, tmp_path) -> None:
    root = tmp_path / "again"
    build_demo(root)
    first = tree_state(root)
    # same bytes as an independent build elsewhere: hrefs are relative, output is seeded
    reference = tree_state(built.root)
    assert {k: v[1] for k, v in first.items()} == {k: v[1] for k, v in reference.items()}

    victim = next(root.rglob("*_SR_B4.TIF"))
    victim.unlink()
    build_demo(root)
    assert victim.is_file()
    assert {k: v[1] for k, v in tree_state(root).items()} == {k: v[1] for k, v in first.items()}

    before = tree_state(root)
    build_demo(root, overwrite=True)
    after = tree_state(root)
    assert all(after[name][0] != before[name][0] for name in before)  # every file rewritten
    # no staging leftovers: the demo (a folder product: a link) and the one version it names
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["again", current_version(root).name]
    )


def test_a_failed_build_leaves_no_half_built_demo(tmp_path, monkeypatch) -> None:
    real_write = demo_catalog._write_cog
    calls = []

    def failing_write(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        real_write(*args, **kwargs)

    monkeypatch.setattr(demo_catalog, "_write_cog", failing_write)
    with pytest.raises(OutputNotWritable, match="writable"):
        build_demo(tmp_path / "fresh")
    assert list(tmp_path.iterdir()) == []
    assert calls and all(not p.exists() for p in calls)

    # replacing a complete demo: a failure keeps the old one whole and in place
    monkeypatch.setattr(demo_catalog, "_write_cog", real_write)
    root = build_demo(tmp_path / "kept").root
    before = tree_state(root)
    calls.clear()
    monkeypatch.setattr(demo_catalog, "_write_cog", failing_write)
    with pytest.raises(OutputNotWritable):
        build_demo(root, overwrite=True)
    assert tree_state(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["kept", current_version(root).name]
    )


def test_refuses_to_replace_a_directory_that_is_not_a_demo(tmp_path) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    with pytest.raises(ConfigError, match="overwrite=True"):
        build_demo(tmp_path)
    assert precious.read_text() == "keep me"
    with pytest.raises(ConfigError, match="is a file"):
        build_demo(precious)


# ---------------------------------------------------------------------------------------------
# Pixels: QA codes, cloud statistics, spectra


def test_qa_codes_are_real_usgs_codes_with_the_documented_bits() -> None:
    codes = {name: np.array([code]) for name, code in DEMO_QA_CODES.items()}
    assert DEMO_QA_CODES["clear_land"] == 21824
    assert DEMO_QA_CODES["clear_water"] == 21952
    assert DEMO_QA_CODES["cloud"] == 22280
    assert DEMO_QA_CODES["fill"] == 1
    for name in ("shadow_land", "shadow_water", "dilated_shadow"):
        assert flag(codes[name], SHADOW) and confidence(codes[name], 10) == 3, name
        assert not flag(codes[name], CLOUD), name
    for name in ("dilated_low", "dilated_medium", "dilated_shadow"):
        assert flag(codes[name], DILATED) and not flag(codes[name], CLEAR), name
    assert confidence(codes["dilated_medium"], 8) == 2
    # "clear" means neither cloud nor dilated cloud, so USGS sets it on shadow pixels
    assert flag(codes["shadow_land"], CLEAR) and flag(codes["shadow_water"], WATER)
    # the same values occur in a real USGS QA_PIXEL (which has no shadow over water)
    with rasterio.open(REAL_QA) as src:
        real = set(np.unique(src.read(1)).tolist())
    assert set(DEMO_QA_CODES.values()) - {DEMO_QA_CODES["shadow_water"]} <= real


def test_qa_statistics_agree_with_the_item_metadata(items) -> None:
    fills = {}
    for item in items:
        qa, profile = read(item, "qa_pixel")
        assert profile["nodata"] == 1
        assert set(np.unique(qa).tolist()) <= set(DEMO_QA_CODES.values())
        fill = flag(qa, FILL)
        cloud = flag(qa, CLOUD)
        expected = 100 * cloud[~fill].mean()
        assert item.properties["eo:cloud_cover"] == pytest.approx(expected, abs=0.006)
        assert 5 < expected < 40
        assert flag(qa, SHADOW)[~fill].mean() > 0.02
        assert (flag(qa, DILATED) & ~cloud)[~fill].mean() > 0.02
        land = ~fill & ~flag(qa, WATER) & ~cloud
        assert flag(qa, WATER)[~fill & ~cloud].mean() > 0.005
        assert land.mean() > 0.4
        fills[item.id] = fill.mean()

        for key in ASSET_KEYS[:-1]:
            dn, band_profile = read(item, key)
            assert band_profile["nodata"] == 0 and band_profile["dtype"] == "uint16"
            assert np.array_equal(dn == 0, fill), (item.id, key)  # SR/ST 0 exactly at fill

        blue, kelvin = decoded(item, "blue"), decoded(item, "lwir11")
        assert np.median(blue[cloud]) > 0.3  # bright
        assert kelvin[cloud].min() > 259 and np.median(kelvin[cloud]) < 280  # cold tops
        assert kelvin[~fill & ~cloud].min() > 280

        if fill.any():
            assert fill[:, 0].all() and not fill[:, -1].any()  # a collar on one edge
            assert (qa[fill] == 1).all()
    assert sorted(v > 0 for v in fills.values()) == [False, False, False, True]


def test_clear_pixels_decode_to_the_ground_and_to_real_spyndex_spectra(items) -> None:
    spectral = pd.read_json(Path(spyndex.__file__).parent / "data" / "spectral.json")
    sr_columns = [f"SR_B{b}" for b in range(1, 8)]
    rng = np.random.default_rng(0)
    half_dn = 0.5 * demo.SR_SCALE
    for item in items:
        qa, _ = read(item, "qa_pixel")
        clear = flag(qa, CLEAR) & ~flag(qa, SHADOW) & ~flag(qa, FILL)
        assert clear.mean() > 0.5
        x, y = pixel_centres(item)
        crs = item.properties["proj:code"]
        ground = demo_ground(x[clear], y[clear], crs)
        values = np.stack([decoded(item, key)[clear] for key in ASSET_KEYS[:-1]])
        for i, key in enumerate(ASSET_KEYS[:-1]):
            tolerance = 0.5 * demo.ST_SCALE if key == "lwir11" else half_dn
            assert np.abs(values[i] - ground[GROUND_NAME[key]]).max() <= tolerance + 1e-9, key

        # pure classes hold one real sample each, times a brightness factor within 5 %
        truth = demo_truth(x[clear], y[clear], crs)
        for name, source in (("water", "Water"), ("forest", "Vegetation"), ("urban", "Urban")):
            pixels = np.flatnonzero(truth == DEMO_CLASSES.index(name) + 1)
            pixels = rng.choice(pixels, size=min(200, len(pixels)), replace=False)
            rows = spectral.loc[spectral["class"] == source, sr_columns].to_numpy()
            kelvin = spectral.loc[spectral["class"] == source, "ST_B10"].to_numpy()
            observed = values[:7, pixels].T  # (pixels, 7)
            gain = observed @ rows.T / (rows * rows).sum(axis=1)  # (pixels, rows)
            misfit = np.abs(observed[:, None, :] - gain[..., None] * rows[None]).max(axis=2)
            best = misfit.argmin(axis=1)
            assert (misfit.min(axis=1) <= 2 * half_dn).all(), (item.id, name)
            assert (np.abs(gain[np.arange(len(best)), best] - 1) <= 0.05).all()
            assert (np.abs(values[7, pixels] - kelvin[best]) <= 0.6 + demo.ST_SCALE).all()


def test_masked_composite_is_cloud_free_and_unmasked_one_is_not(items) -> None:
    by_tile: dict[str, list[pystac.Item]] = {}
    for item in items:
        by_tile.setdefault(item.properties["proj:code"], []).append(item)
    for crs, pair in by_tile.items():
        assert len(pair) == 2 and pair[0].datetime.date() != pair[1].datetime.date()
        bad = [masked(read(item, "qa_pixel")[0]) for item in pair]
        assert not (bad[0] & bad[1]).any(), crs  # every pixel is clear on some date
        blue = np.stack([decoded(item, "blue") for item in pair])
        x, y = pixel_centres(pair[0])
        ground = demo_ground(x, y, crs)["blue"]
        composite = np.where(bad[0], blue[1], blue[0])
        assert np.abs(composite - ground).max() <= 0.5 * demo.SR_SCALE + 1e-9
        unmasked = np.where(bad[0] | bad[1], blue.mean(axis=0), blue[0])  # median of 2 = mean
        assert (np.abs(unmasked - ground) > 0.05).mean() > 0.02


# ---------------------------------------------------------------------------------------------
# Geometry: tiles, grids, AOI, truth


def test_tiles_are_in_two_utm_zones_overlap_and_sit_on_the_landsat_grid(items) -> None:
    codes = {item.properties["proj:code"] for item in items}
    assert codes == {"EPSG:32616", "EPSG:32617"}
    footprints = {
        item.properties["proj:code"]: shapely.geometry.shape(item.geometry) for item in items
    }
    a, b = footprints["EPSG:32616"], footprints["EPSG:32617"]
    assert a.is_valid and b.is_valid and a.exterior.is_ccw
    overlap = a.intersection(b).area
    assert 0.1 * a.area < overlap < 0.6 * a.area
    assert a.centroid.x < -84 < b.centroid.x  # zone 16 west of 84 W, zone 17 east

    for item in items:
        a_, _, c, _, e, f = item.properties["proj:transform"]
        assert (a_, e) == (30.0, -30.0)
        assert (c + 15) % 30 == 0 and (f - 15) % 30 == 0  # pixel centres on multiples of 30 m
        for key in ASSET_KEYS:
            _, profile = read(item, key)
            assert profile["crs"].to_epsg() == int(item.properties["proj:code"].split(":")[1])
            assert tuple(profile["transform"])[:6] == tuple(item.properties["proj:transform"])
            assert [profile["height"], profile["width"]] == item.properties["proj:shape"]
        left, bottom, right, top = item.properties["proj:bbox"]
        h, w = item.properties["proj:shape"]
        assert (right - left, top - bottom) == (30 * w, 30 * h)


def test_demo_truth_is_the_same_ground_in_both_projections(items) -> None:
    item_a = next(i for i in items if i.properties["proj:code"] == "EPSG:32616")
    item_b = next(i for i in items if i.properties["proj:code"] == "EPSG:32617")
    xb, yb = pixel_centres(item_b)
    to_a = Transformer.from_crs("EPSG:32617", "EPSG:32616", always_xy=True)
    xa, ya = to_a.transform(xb, yb)
    # the same points, expressed in either zone, get the same class
    truth_b = demo_truth(xb, yb, "EPSG:32617")
    assert truth_b.dtype == np.uint8 and set(np.unique(truth_b)) <= set(range(1, 6))
    assert np.array_equal(demo_truth(xa, ya, "EPSG:32616"), truth_b)
    assert np.array_equal(
        demo_truth(
            *Transformer.from_crs("EPSG:32617", "EPSG:4326", always_xy=True).transform(xb, yb),
            "EPSG:4326",
        ),
        truth_b,
    )

    # grid to grid: B's pixels and A's nearest pixels agree in class and in clear reflectance
    a, _, c, _, e, f = item_a.properties["proj:transform"]
    h, w = item_a.properties["proj:shape"]
    cols, rows = np.floor((xa - c) / a).astype(int), np.floor((ya - f) / e).astype(int)
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    assert 0.15 < inside.mean() < 0.6
    xa_grid, ya_grid = pixel_centres(item_a)
    truth_a = demo_truth(xa_grid, ya_grid, "EPSG:32616")
    same = truth_a[rows[inside], cols[inside]] == truth_b[inside]
    assert same.mean() > 0.85
    on_date = [i for i in items if i.datetime.date() == item_a.datetime.date()]
    red_a, red_b = (
        decoded(i, "red") for i in sorted(on_date, key=lambda i: i.properties["proj:code"])
    )
    qa_a, qa_b = (
        read(i, "qa_pixel")[0] for i in sorted(on_date, key=lambda i: i.properties["proj:code"])
    )
    both_clear = ~masked(qa_b)[inside] & ~masked(qa_a)[rows[inside], cols[inside]]
    diff = red_a[rows[inside], cols[inside]] - red_b[inside]
    assert np.median(np.abs(diff[both_clear & same])) < 0.01


def test_demo_truth_names_a_crs_it_cannot_read() -> None:
    with pytest.raises(ConfigError, match="EPSG:999999"):
        demo_truth(np.zeros(2), np.zeros(2), "EPSG:999999")


def test_aoi_registry_holds_a_ccw_polygon_across_the_zone_boundary(built, items) -> None:
    registry = json.loads(built.aoi_registry.read_text())
    assert registry["type"] == "FeatureCollection" and len(registry["features"]) == 1
    feature = registry["features"][0]
    assert feature["id"] == DEMO_AOI_ID and feature["properties"]["id"] == DEMO_AOI_ID
    assert feature["properties"]["name"]
    polygon = shapely.geometry.shape(feature["geometry"])
    assert polygon.geom_type == "Polygon" and polygon.is_valid
    assert polygon.exterior.is_ccw  # RFC 7946 winding
    assert polygon.bounds[0] < -84 < polygon.bounds[2]
    assert polygon.area < 0.85 * shapely.box(*polygon.bounds).area  # not its bbox
    union = shapely.union_all([shapely.geometry.shape(item.geometry) for item in items])
    assert union.contains(polygon)

    # both dates have clouds inside the AOI (where, differs: see the composite test)
    for item in items:
        qa, _ = read(item, "qa_pixel")
        x, y = pixel_centres(item)
        to_lonlat = Transformer.from_crs(item.properties["proj:code"], "EPSG:4326", always_xy=True)
        lon, lat = to_lonlat.transform(x[flag(qa, CLOUD)], y[flag(qa, CLOUD)])
        assert shapely.contains_xy(polygon, lon, lat).sum() > 200, item.id

    # every land-cover class is well represented inside the AOI
    item_a = items[0]
    x, y = pixel_centres(item_a)
    lon, lat = Transformer.from_crs(
        item_a.properties["proj:code"], "EPSG:4326", always_xy=True
    ).transform(x, y)
    truth = demo_truth(x, y, item_a.properties["proj:code"])[shapely.contains_xy(polygon, lon, lat)]
    shares = np.bincount(truth, minlength=len(DEMO_CLASSES) + 1)[1:] / truth.size
    assert (shares > 0.01).all(), dict(zip(DEMO_CLASSES, shares.round(3), strict=True))


# ---------------------------------------------------------------------------------------------
# STAC shape and odc-stac


def test_items_are_shaped_like_planetary_computer_items(built, items) -> None:
    real = json.loads(PC_ITEMS.read_text())
    real_item = next(f for f in real["features"] if "lwir11" in f["assets"])
    for item in items:
        assert set(item.assets) == set(ASSET_KEYS)
        props = item.properties
        assert props["geocluster:synthetic"] is True
        assert props["platform"] in {"landsat-8", "landsat-9"} and props["instruments"] == [
            "oli",
            "tirs",
        ]
        shared_keys = {
            k for k in real_item["properties"] if k.startswith(("landsat:", "view:", "eo:"))
        }
        shared_keys |= {"gsd", "platform", "instruments", "datetime"}
        assert shared_keys <= set(props), shared_keys - set(props)
        assert props["landsat:wrs_path"] in {"018", "019"} and props["landsat:wrs_row"] == "036"
        assert item.id.startswith(("LC08_L2SP_", "LC09_L2SP_")) and item.id.endswith("_02_T1")
        for key in ASSET_KEYS:
            ours, theirs = item.assets[key].to_dict(), real_item["assets"][key]
            assert ours["href"].startswith("./") and ours["href"].endswith(FILE_SUFFIX[key])
            assert ours["type"] == theirs["type"] and ours["roles"] == theirs["roles"]
            for field in ("scale", "offset", "nodata", "data_type", "unit", "spatial_resolution"):
                assert ours["raster:bands"][0].get(field) == theirs["raster:bands"][0].get(field), (
                    key,
                    field,
                )
            if "eo:bands" in theirs:
                for field in ("name", "common_name", "center_wavelength"):
                    assert ours["eo:bands"][0][field] == theirs["eo:bands"][0][field], (key, field)
        bitfields = item.assets["qa_pixel"].to_dict()["classification:bitfields"]
        assert [(b["name"], b["offset"], b["length"]) for b in bitfields] == [
            (b["name"], b["offset"], b["length"])
            for b in real_item["assets"]["qa_pixel"]["classification:bitfields"]
        ]
        for key in ASSET_KEYS:
            with rasterio.open(item.assets[key].get_absolute_href()) as src:
                assert src.driver == "GTiff" and src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
                assert src.profile["compress"] == "deflate" and src.block_shapes == [(256, 256)]
                assert src.overviews(1)

    collection = pystac.Collection.from_file(str(built.root / DEMO_COLLECTION / "collection.json"))
    assert collection.id == DEMO_COLLECTION and "SYNTHETIC" in collection.description
    assert collection.extra_fields["geocluster:synthetic"] is True
    catalog = pystac.Catalog.from_file(str(built.catalog))
    assert catalog.catalog_type == pystac.CatalogType.SELF_CONTAINED
    for path in built.root.rglob("*.json"):
        assert str(built.root) not in path.read_text(), path  # relative hrefs only


def test_items_load_with_odc_stac_using_raster_bands_metadata(items) -> None:
    metadata = odc.stac.extract_collection_metadata(items[0])
    bands = {name: band for (name, _), band in metadata.meta.bands.items()}
    assert bands["red"].nodata == 0 and bands["red"].data_type == "uint16"
    assert bands["lwir11"].units == "kelvin" and bands["qa_pixel"].nodata == 1

    tile_a = [item for item in items if item.properties["proj:code"] == "EPSG:32616"]
    ds = odc.stac.load(tile_a, bands=["red", "lwir11", "qa_pixel"], chunks={"x": 128, "y": 128})
    assert ds.red.chunks is not None and ds.red.dtype == np.uint16
    assert ds.red.attrs["nodata"] == 0 and ds.qa_pixel.attrs["nodata"] == 1
    assert ds.odc.geobox.crs.epsg == 32616 and ds.odc.geobox.shape == tuple(
        tile_a[0].properties["proj:shape"]
    )
    assert ds.sizes["time"] == 2
    loaded = ds.isel(time=0).compute()
    first = min(tile_a, key=lambda item: item.datetime)
    for key in ("red", "lwir11", "qa_pixel"):
        assert np.array_equal(loaded[key].values, read(first, key)[0]), key

    grid = dict(crs="EPSG:32617", resolution=30, chunks={"x": 256, "y": 256})
    # the two tiles of a date were taken minutes apart: group by solar day, not timestamp
    assert odc.stac.load(items, bands=["red"], **grid).sizes["time"] == 4
    mosaic = odc.stac.load(items, bands=["red"], groupby="solar_day", **grid)
    assert mosaic.sizes["time"] == 2
    assert mosaic.sizes["x"] > 1.3 * max(item.properties["proj:shape"][1] for item in items)
    covered = (mosaic.red.isel(time=0) != 0).mean().compute().item()
    assert covered > 0.7
