"""Values outside a band's documented valid range are counted, reported, and kept out of the
indices (or clamped, or masked).

The ranges are the producers' (USGS LSDS-1619 for Landsat Collection 2 Level-2, ESA for
Sentinel-2 L2A); the real Brumadinho crops hold dark pixels below Landsat's valid range,
whose raw NDVI reaches -85 and +85.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.windows import from_bounds

from geocluster_dagster.bands import LANDSAT_C2_L2, SENTINEL2_L2A
from geocluster_dagster.composite import CompositeSettings
from geocluster_dagster.encoding import DnEncoding
from geocluster_dagster.errors import ConfigError
from geocluster_dagster.export import open_cog
from geocluster_dagster.load import LoadSettings, load_band_stack
from geocluster_dagster.products.geotiff import open_geotiff, write_geotiff
from geocluster_dagster.products.mosaic import write_mosaic
from geocluster_dagster.quality import judge_reflectance
from geocluster_dagster.valid_range import (
    DONE_TO_THEM,
    LANDSAT_SR,
    LANDSAT_ST,
    SENTINEL2_SR,
    VALID_RANGE_TAG,
    RangePolicy,
    read_tag,
)

from .conftest import brumadinho_item

SCALE, OFFSET = np.float32(2.75e-5), np.float32(-0.2)


def _loaded(dn: list[int]) -> np.ndarray:
    """DN as the loader turns them into reflectance: float32 arithmetic, nodata 0 -> NaN."""
    values = np.asarray(dn, dtype="uint16").astype("float32") * SCALE + OFFSET
    values[np.asarray(dn) == 0] = np.nan
    return values.reshape(1, 1, -1)


def test_the_documented_ranges_in_physical_units():
    assert LANDSAT_SR.low == pytest.approx(0.0000075) and LANDSAT_SR.high == pytest.approx(0.99999)
    assert LANDSAT_ST.low == pytest.approx(150.0015, abs=1e-3)
    assert LANDSAT_ST.high == pytest.approx(359.0, abs=0.01)
    assert (SENTINEL2_SR.low, SENTINEL2_SR.high) == (0.0, 1.0)
    assert LANDSAT_C2_L2.valid_ranges["red"] is LANDSAT_SR
    assert LANDSAT_C2_L2.valid_ranges["lwir"] is LANDSAT_ST
    assert "lwir" not in SENTINEL2_L2A.valid_ranges


def test_clamp_keeps_the_bounds_themselves_and_counts_what_lay_beyond():
    block = _loaded([0, 7272, 7273, 20000, 43636, 43637, 60000])
    kept, counts = RangePolicy((LANDSAT_SR,)).apply(block)  # the default: counted only
    assert counts.tolist() == [[3, 6]] and np.array_equal(kept, block, equal_nan=True)
    clamped, counts = RangePolicy((LANDSAT_SR,), "clamp").apply(block)
    assert counts.tolist() == [[3, 6]]  # 7272, 43637, 60000 of the six with data
    values = clamped[0, 0]
    assert np.isnan(values[0])  # nodata stays nodata
    assert values[1] == pytest.approx(LANDSAT_SR.low) and values[5:].tolist() == pytest.approx(
        [LANDSAT_SR.high] * 2
    )
    assert values[2:5].tolist() == block[0, 0, 2:5].tolist()  # in range: untouched
    assert np.isnan(block[0, 0, 0]) and block[0, 0, 1] < 0  # the input block is not changed
    # stored back on the inputs' DN grid, the clamped values are the bounds' own DN
    encoded = DnEncoding((float(SCALE),), (float(OFFSET),)).encode(clamped)
    assert encoded[0, 0].tolist() == [0, 7273, 7273, 20000, 43636, 43636, 43636]


def test_mask_turns_the_values_beyond_into_nodata_band_by_band():
    block = np.concatenate([_loaded([7000, 8000]), _loaded([9000, 50000])])
    masked, counts = RangePolicy((LANDSAT_SR, None), "mask").apply(block)
    assert counts.tolist() == [[1, 2], [0, 0]]  # the second band has no range: not checked
    assert np.isnan(masked[0, 0, 0]) and not np.isnan(masked[0, 0, 1])
    assert masked[1, 0, 1] == block[1, 0, 1]


def test_an_unknown_policy_is_refused_naming_the_setting():
    with pytest.raises(ConfigError, match="out_of_range"):
        CompositeSettings(out_of_range="clip")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def dark_scene(tmp_path_factory):
    """The 14 January 2019 Brumadinho crop (dark water and shadow below the valid range)."""
    root = tmp_path_factory.mktemp("dark")
    item = brumadinho_item("20190114", root / "item")
    aoi = shapely.geometry.shape(item.geometry).buffer(-0.002)
    bands = ("blue", "green", "red", "nir", "swir16", "swir22")
    stack = load_band_stack([item], aoi, LoadSettings(mask_clouds=False, bands=bands))
    return root, item, aoi, stack


def _raw_window(item, band: str, like) -> np.ndarray:
    """The input DN of ``band`` under the grid of ``like`` (the same 30 m grid: a window)."""
    with rasterio.open(item.assets[band].href) as src:
        window = from_bounds(*like.rio.bounds(), transform=src.transform)
        return src.read(1, window=window.round_offsets().round_lengths())


@pytest.mark.parametrize("policy", ["keep", "clamp", "mask"])
def test_a_real_scene_keeps_its_reflectance_and_ndvi_in_range(dark_scene, policy):
    root, item, aoi, stack = dark_scene
    path = root / f"{policy}.tif"
    facts = write_mosaic(
        stack, aoi, path, CompositeSettings(out_of_range=policy), where="brumadinho"
    )
    mosaic = open_cog(path)
    tag = read_tag(mosaic.attrs[VALID_RANGE_TAG])
    inside = ~np.isnan(mosaic["swir16"].values)  # no swir16 value is beyond its range here
    red_dn = _raw_window(item, "red", mosaic)
    assert red_dn.shape == inside.shape
    raw = red_dn[inside]
    below = int(np.count_nonzero((raw > 0) & (raw < 7273)))
    assert below > 100  # the scene really has dark pixels below the range
    # counted from the input files, not from the code under test
    assert tag["red"]["outside"] == below and tag["red"]["checked"] == int(inside.sum())
    assert tag["red"]["policy"] == policy and "LSDS-1619" in tag["red"]["source"]
    assert facts.stats.outside["red"] == (below, int(inside.sum()))
    red = mosaic["red"].values[inside]
    if policy == "keep":  # as delivered: the dark pixels' reflectance is negative
        assert int((red < 0).sum()) == below and not np.isnan(red).any()
    elif policy == "clamp":
        assert np.nanmin(red) == pytest.approx(LANDSAT_SR.low, abs=2e-5)
        assert not np.isnan(red).any()
    else:
        assert int(np.isnan(red).sum()) == below and np.nanmin(red) >= LANDSAT_SR.low - 2e-5

    geotiff = write_geotiff(path, root / f"geotiff_{policy}", aoi_id="brumadinho")
    ndvi = open_geotiff(root / f"geotiff_{policy}")["ndvi"].values
    assert np.nanmin(ndvi) >= -1 and np.nanmax(ndvi) <= 1
    if policy != "clamp":  # no index from a value outside the range
        assert np.isnan(ndvi[inside]).sum() >= below
    # the same pixels from the raw DN: NDVI far outside its range
    nir = _raw_window(item, "nir08", mosaic).astype("float64") * 2.75e-5 - 0.2
    with np.errstate(divide="ignore", invalid="ignore"):
        raw_ndvi = (nir - (red_dn * 2.75e-5 - 0.2)) / (nir + (red_dn * 2.75e-5 - 0.2))
    assert np.nanmax(np.abs(raw_ndvi[inside])) > 1.5

    check = {j.name: j for j in geotiff.judge()}["physical_reflectance"]
    share = check.metadata["outside_valid_range_share"]["red"]
    assert share == pytest.approx(below / inside.sum(), abs=1e-6)
    assert check.passed, check.description  # about 0.4 % of red: under the 5 % warning
    assert DONE_TO_THEM[policy] in check.description and "red" in check.description


def test_the_check_warns_when_much_of_a_band_was_outside_and_names_the_setting():
    stats = {"nir": {"min": 0.0, "max": 0.6}}
    tag = {"nir": {"low": 0.0, "high": 1.0, "policy": "keep", "outside": 300, "checked": 1000}}
    verdict = judge_reflectance(stats, tag)
    assert not verdict.passed and "nir 30.0%" in verdict.description
    assert "out_of_range" in verdict.description
    # written values beyond the range (a wrong scale/offset) fail whatever the counts
    broken = judge_reflectance({"red": {"min": -0.3, "max": 0.5}}, {})
    assert not broken.passed and "scale/offset" in broken.description
