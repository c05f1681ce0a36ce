"""The mosaic on the inputs' DN grid: exact for observed values, half a step for the rest."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from geocluster_dagster.composite import CompositeSettings, aoi_mask, clip, composite
from geocluster_dagster.encoding import STACK_ATTR, DnEncoding, stack_attr
from geocluster_dagster.export import open_cog, write_cog
from geocluster_dagster.load import STATE_LAYERS, LoadSettings, load_band_stack
from geocluster_dagster.products.mosaic import write_mosaic

from .helpers import LANDSAT_SR, LANDSAT_ST, loaded

SENTINEL2 = (1e-4, -0.1)


@pytest.mark.parametrize("scaling", [LANDSAT_SR, LANDSAT_ST, SENTINEL2])
def test_observed_values_come_back_bit_for_bit(scaling):
    dn = np.arange(1, 65536, dtype="uint16").reshape(1, 255, 257)
    values = loaded(dn, *scaling)
    values[0, 0, :3] = np.nan
    encoding = DnEncoding.for_bands({STACK_ATTR: stack_attr({"b": scaling})}, ["b"])
    encoded = encoding.encode(values)
    assert encoded.dtype == np.uint16
    assert (encoded[0, 0, :3] == 0).all()  # NaN is the inputs' fill, DN 0
    assert np.array_equal(encoded[0, 0, 3:], dn[0, 0, 3:]) and np.array_equal(
        encoded[0, 1:], dn[0, 1:]
    )
    back = loaded(encoded, *encoding_pair(encoding))
    back[encoded == 0] = np.nan
    assert np.array_equal(back, values, equal_nan=True)


def encoding_pair(encoding: DnEncoding) -> tuple[float, float]:
    return encoding.scales[0], encoding.offsets[0]


def test_values_between_steps_move_at_most_half_a_step_and_stay_in_range():
    scale, offset = LANDSAT_SR
    low, high = np.array([[[100, 7000, 65534]]]), np.array([[[101, 7003, 65535]]])
    median = (loaded(low, scale, offset) + loaded(high, scale, offset)) / 2
    beyond = np.array([[[offset - scale, offset + 70000 * scale]]], dtype="float32")
    encoding = DnEncoding((float(np.float32(scale)),), (float(np.float32(offset)),))
    encoded = encoding.encode(median)
    assert np.abs(loaded(encoded, scale, offset) - median).max() <= scale / 2 + 1e-7
    # Below DN 1 would read as fill, above 65535 would wrap: both are held at the range's ends.
    assert encoding.encode(beyond).tolist() == [[[1, 65535]]]


def test_statistics_are_physical_and_a_partial_encoding_is_none():
    scale, offset = LANDSAT_SR
    encoding = DnEncoding((scale,), (offset,))
    summary = encoding.physical_summary(np.array([[4.0, 10.0 + 20.0 + 30.0 + 40.0, 10.0, 40.0]]))
    assert summary[0, 0] == 4
    assert summary[0, 1] == pytest.approx(100 * scale + 4 * offset)
    assert summary[0, 2:] == pytest.approx([10 * scale + offset, 40 * scale + offset])
    attrs = {STACK_ATTR: stack_attr({"red": LANDSAT_SR})}
    assert DnEncoding.for_bands(attrs, ["red", "ndvi"]) is None
    assert DnEncoding.for_bands({}, ["red"]) is None


def test_an_encoded_geotiff_reads_back_as_the_physical_values(tmp_path):
    dn = np.random.default_rng(0).integers(1, 65536, size=(2, 300, 200)).astype("uint16")
    values = np.stack([loaded(dn[0], *LANDSAT_SR), loaded(dn[1], *LANDSAT_ST)])
    values[:, :10, :10] = np.nan
    geobox = GeoBox((300, 200), Affine(30, 0, 500000, 0, -30, 7009000), "EPSG:32723")
    ds = xr.Dataset(
        {
            name: xr.DataArray(values[i], dims=("y", "x"), coords=xr_coords(geobox)).chunk(128)
            for i, name in enumerate(("red", "lwir"))
        }
    )
    attrs = {STACK_ATTR: stack_attr({"red": LANDSAT_SR, "lwir": LANDSAT_ST})}
    stats = write_cog(ds, tmp_path / "m.tif", encoding=DnEncoding.for_bands(attrs, ["red", "lwir"]))
    with rasterio.open(tmp_path / "m.tif") as src:
        assert src.dtypes == ("uint16", "uint16") and src.nodata == 0
        assert src.scales == pytest.approx((LANDSAT_SR[0], LANDSAT_ST[0]))
        assert src.offsets == pytest.approx((LANDSAT_SR[1], LANDSAT_ST[1]))
    back = open_cog(tmp_path / "m.tif")
    assert back.red.dtype == np.float32
    assert np.array_equal(back.red.values, values[0], equal_nan=True)
    assert np.array_equal(back.lwir.values, values[1], equal_nan=True)
    assert stats.count["red"] == np.isfinite(values[0]).sum()
    assert stats.minimum["lwir"] == pytest.approx(np.nanmin(values[1]), abs=1e-4)
    assert stats.mean("red") == pytest.approx(np.nanmean(values[0].astype("float64")), rel=1e-6)


def test_a_real_landsat_mosaic_is_stored_as_its_collection_2_dns(brumadinho_items, tmp_path):
    union = shapely.union_all([shapely.geometry.shape(i.geometry) for i in brumadinho_items])
    aoi = union.buffer(-0.001)
    settings = LoadSettings(bands=("red", "nir"), mask_clouds=False, groupby="id", chunk_size=256)
    stack = load_band_stack(brumadinho_items, aoi, settings)
    path = tmp_path / "mosaic.tif"
    facts = write_mosaic(stack, aoi, path, CompositeSettings(method="first_clear"), where="test")
    with rasterio.open(path) as src:
        assert src.dtypes == ("uint16", "uint16")
        assert src.scales == pytest.approx((2.75e-5, 2.75e-5))
        assert src.offsets == pytest.approx((-0.2, -0.2))
        assert "dn_encoding" not in src.tags()
        assert int(src.read(1, masked=True).count()) == facts.coverage.clear
    # First clear observation: every stored value is one the loader read, bit for bit.
    expected = clip(
        composite(stack.drop_vars(list(STATE_LAYERS)), "first_clear"), aoi_mask(stack, aoi)
    )
    back = open_cog(path)
    for band in ("red", "nir"):
        assert np.array_equal(back[band].values, expected[band].values, equal_nan=True), band
