"""Loading real scenes onto one grid: scaling, masking, pixel alignment, SCL resampling."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely

from geocluster_dagster.errors import AssetReadError, BandNotFound, ConfigError, NoOverlap
from geocluster_dagster.load import CLEAR, MASKED, NO_DATA, LoadSettings, load_band_stack

from .conftest import BRUMADINHO, S2_29RKH


def _footprint(item):
    return shapely.geometry.shape(item.geometry)


def test_landsat_scene_is_scaled_and_masked_like_the_readme_says(l8_008059_item):
    aoi = _footprint(l8_008059_item).buffer(-0.05)
    stack = load_band_stack(
        [l8_008059_item], aoi, LoadSettings(resolution=450, chunk_size=128)
    ).compute()
    state = stack.pixel_state.values
    data = state != NO_DATA
    # The README's 31 % fill sits mostly in the rotated collar; what has data is mostly cloud.
    assert (state[data] == MASKED).mean() == pytest.approx(0.87, abs=0.03)
    ndvi = ((stack.nir - stack.red) / (stack.nir + stack.red)).values
    # Clear tropical forest: NDVI mean 0.78, p10 0.71, p90 0.85 (README).
    assert np.nanmean(ndvi) == pytest.approx(0.78, abs=0.015)
    assert np.nanpercentile(ndvi, 10) == pytest.approx(0.71, abs=0.02)
    assert np.nanpercentile(ndvi, 90) == pytest.approx(0.85, abs=0.02)
    # Every band shares one mask: NaN exactly where the pixel is not clear.
    for band in ("blue", "red", "nir", "lwir"):
        assert np.array_equal(np.isnan(stack[band].values), state != CLEAR)
    lwir = stack.lwir.values
    assert 285 < np.nanmedian(lwir) < 310  # kelvin, tropical land surface
    assert stack.blue.dtype == np.float32


def test_thirty_metre_crops_stay_on_their_native_grid(brumadinho_items):
    item = brumadinho_items[1]  # 2019-01-30, the date the README's statistics describe
    settings = LoadSettings(bands=("blue", "red", "nir"), mask_clouds=False)
    stack = load_band_stack([item], _footprint(item).buffer(-0.001), settings)
    x, y = stack.x.values, stack.y.values
    # Landsat pixel centres lie on multiples of 30 m: no half-pixel shift, no resampling.
    assert np.allclose(x % 30, 0) and np.allclose(y % 30, 0)
    col0 = int(round((x[0] - 584400) / 30))
    row0 = int(round((-2222700 - y[0]) / 30))
    red = stack.red.isel(time=0).values
    window = np.s_[row0 : row0 + red.shape[0], col0 : col0 + red.shape[1]]
    dn = {
        b: rasterio.open(next((BRUMADINHO / "20190130").glob(f"*_{b}.TIF"))).read(1)[window]
        for b in ("SR_B2", "SR_B4")
    }
    expected = dn["SR_B4"] * np.float32(2.75e-05) - np.float32(0.2)
    # Where blue is fill (DN 0), the whole pixel is dropped in every band.
    assert np.array_equal(np.isnan(red), dn["SR_B2"] == 0)
    assert np.nanmax(np.abs(red - expected)) < 1e-6
    # README: median red 0.037, median NIR 0.286 over the crop.
    assert np.nanmedian(red) == pytest.approx(0.037, abs=0.003)
    assert np.nanmedian(stack.nir.isel(time=0).values) == pytest.approx(0.286, abs=0.01)


def test_chunk_edges_fall_on_the_source_tiles_without_changing_a_pixel(
    brumadinho_items, monkeypatch
):
    from geocluster_dagster import load

    item = brumadinho_items[1]
    settings = LoadSettings(bands=("red", "nir"), chunk_size=64, mask_clouds=False)
    aoi = _footprint(item).buffer(-0.004)  # the grid starts off the source's 64 px tiling
    aligned = load_band_stack([item], aoi, settings)
    monkeypatch.setattr(load, "ALIGN_MIN_CHUNKS", 10**6)
    unaligned = load_band_stack([item], aoi, settings)

    assert aligned.odc.geobox == unaligned.odc.geobox
    source_x0, source_y0 = (
        item.properties["proj:transform"][2],
        item.properties["proj:transform"][5],
    )
    x_edges = np.cumsum(aligned.red.data.chunks[2])[:-1]  # first pixel of chunks 2, 3, ...
    y_edges = np.cumsum(aligned.red.data.chunks[1])[:-1]
    x_left = aligned.x.values[x_edges] - 15  # pixel edges, 30 m pixels
    y_top = aligned.y.values[y_edges] + 15
    assert len(x_edges) >= 3 and len(y_edges) >= 3
    assert np.allclose(((x_left - source_x0) / 30) % 64, 0)
    assert np.allclose(((source_y0 - y_top) / 30) % 64, 0)
    assert unaligned.red.data.chunks[2][0] == 64  # the check above could fail without padding
    assert not np.allclose(((unaligned.x.values[64] - 15 - source_x0) / 30) % 64, 0)
    for band in ("red", "nir", "pixel_state"):
        np.testing.assert_array_equal(aligned[band].values, unaligned[band].values)


def test_scl_at_200m_is_resampled_nearest_onto_the_100m_band_grid(s2_29rkh_item):
    aoi = _footprint(s2_29rkh_item)
    settings = LoadSettings(bands=("blue", "red", "nir"), resolution=100, mask_flags=("cloud",))
    stack = load_band_stack([s2_29rkh_item], aoi, settings)
    assert stack.attrs["qa_kind"] == "scl"
    state = stack.pixel_state.isel(time=0).values
    # Each 200 m SCL pixel covers exactly 2 x 2 band pixels: cloud classes 8 + 9 (967 + 837).
    assert int((state == MASKED).sum()) == 4 * (967 + 837)
    # Sentinel-2 baseline 02.14: reflectance = DN / 10000 with no offset.
    with rasterio.open(S2_29RKH / "B04.tif") as src:
        dn_median = np.median(src.read(1)[src.read(1) > 0])
    assert np.nanmedian(stack.red.values) == pytest.approx(dn_median / 10000, rel=0.02)


def test_band_the_collection_lacks_is_named(s2_29rkh_item):
    with pytest.raises(BandNotFound, match="lwir"):
        load_band_stack(
            [s2_29rkh_item], _footprint(s2_29rkh_item), LoadSettings(bands=("red", "lwir"))
        )


def test_unreadable_asset_names_the_url(brumadinho_items, tmp_path):
    item = brumadinho_items[0]
    broken = tmp_path / "not_a_tiff.TIF"
    broken.write_text("<html>403 Forbidden</html>")
    item.assets["red"].href = str(broken)
    with pytest.raises(AssetReadError) as err:
        load_band_stack([item], _footprint(item), LoadSettings(bands=("red",), mask_clouds=False))
    assert "not_a_tiff.TIF" in str(err.value) and "'red'" in str(err.value)


def test_rasters_that_miss_the_aoi_are_refused(brumadinho_items):
    item = brumadinho_items[0]
    far_away = shapely.box(10.0, 10.0, 10.1, 10.1)
    with pytest.raises(NoOverlap, match="overlap the AOI"):
        load_band_stack([item], far_away, LoadSettings(bands=("red",), mask_clouds=False))


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="resampling"):
        LoadSettings(resampling="lanczos9")
    with pytest.raises(ConfigError, match="resolution"):
        LoadSettings(resolution=-30)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("proj:epsg", 32622, "CRS EPSG:32623 in the file, EPSG:32622 in proj:"),
        ("proj:shape", [100, 100], "in the file, [100, 100] in proj:"),
        ("proj:transform", [30.0, 0.0, 583585.0, 0.0, -30.0, -2222685.0], "3.33 px apart"),
    ],
)
def test_a_file_that_is_not_where_its_item_says_is_refused_with_the_numbers(
    brumadinho_items, field, value, says
):
    """odc-stac plans reads from proj: and reads pixels with the file's own grid: when they
    disagree, pixels are misplaced or dropped without an error, so the load refuses it."""
    item = brumadinho_items[0]
    honest = load_band_stack(
        [item], _footprint(item), LoadSettings(bands=("red",), mask_clouds=False)
    )
    assert honest.red.notnull().any()
    item.properties[field] = value
    with pytest.raises(AssetReadError) as err:
        load_band_stack([item], _footprint(item), LoadSettings(bands=("red",), mask_clouds=False))
    message = str(err.value)
    assert says in message and "'red'" in message and item.id in message
    assert "Fix the item's proj: fields" in message


def test_an_asset_level_proj_field_overrides_its_items(brumadinho_items):
    item = brumadinho_items[0]
    shape = item.properties["proj:shape"]
    item.properties["proj:shape"] = [1, 1]  # wrong for the item, but every asset says better
    for asset in item.assets.values():
        asset.extra_fields["proj:shape"] = shape
    stack = load_band_stack(
        [item], _footprint(item), LoadSettings(bands=("red",), mask_clouds=False)
    )
    assert stack.red.notnull().any()


def test_a_grid_much_finer_than_the_sensor_is_refused_before_any_read(brumadinho_items):
    import shapely

    from geocluster_dagster.errors import ConfigError

    item = brumadinho_items[1]
    BANDS = ("red", "nir")
    aoi = shapely.geometry.shape(item.geometry).buffer(-0.01)
    with pytest.raises(
        ConfigError,
        match=r"`resolution` 1 m is 30x finer than the sensor's native 30 m.*by 900.*at least 7.5 m.*max_upsampling",
    ):
        load_band_stack([item], aoi, LoadSettings(resolution=1.0, mask_clouds=False, bands=BANDS))
    # Allowed when asked for; 4x finer passes by default.
    load_band_stack([item], aoi, LoadSettings(resolution=7.5, mask_clouds=False, bands=BANDS))
    load_band_stack(
        [item], aoi, LoadSettings(resolution=1.0, max_upsampling=30, mask_clouds=False, bands=BANDS)
    )
