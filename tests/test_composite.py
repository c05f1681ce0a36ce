"""Compositing the partially overlapping real Brumadinho pair, and clipping to the AOI polygon."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import xarray as xr

from geocluster_dagster.composite import (
    CompositeSettings,
    aoi_mask,
    check_coverage,
    clip,
    composite,
    coverage_counts,
)
from geocluster_dagster.errors import ConfigError, NoClearPixels, NoOverlap
from geocluster_dagster.load import CLEAR, MASKED, NO_DATA, LoadSettings, load_band_stack

BANDS = ("red", "nir")


@pytest.fixture
def pair(brumadinho_items):
    union = shapely.union_all([shapely.geometry.shape(i.geometry) for i in brumadinho_items])
    aoi = union.buffer(-0.0001)
    settings = LoadSettings(bands=BANDS, mask_clouds=False, groupby="id", chunk_size=128)
    return load_band_stack(brumadinho_items, aoi, settings), aoi


def _column_of(stack, x_centre):
    return int(np.argmin(np.abs(stack.x.values - x_centre)))


def test_the_pair_lands_on_one_grid_offset_by_thirty_columns(pair):
    stack, _ = pair
    present = (stack.pixel_state != NO_DATA).values
    assert stack.sizes["time"] == 2
    first_col = [np.flatnonzero(present[t].any(axis=0))[0] for t in range(2)]
    assert first_col[1] - first_col[0] == 30  # README: exactly 30 columns (900 m)


@pytest.mark.parametrize("use_dask", [True, False])
def test_median_averages_the_overlap_and_keeps_single_coverage(pair, use_dask):
    stack, _ = pair
    if not use_dask:
        stack = stack.compute()
    out = composite(stack, "median").compute()
    red = stack.red.values
    both = ~np.isnan(red).any(axis=0)
    only_first = ~np.isnan(red[0]) & np.isnan(red[1])
    only_second = np.isnan(red[0]) & ~np.isnan(red[1])
    assert both.sum() > 0 and only_first.sum() > 0 and only_second.sum() > 0
    np.testing.assert_allclose(out.red.values[both], red[:, both].mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(out.red.values[only_first], red[0][only_first])
    np.testing.assert_array_equal(out.red.values[only_second], red[1][only_second])
    assert out.red.dtype == np.float32


def test_first_clear_takes_the_least_cloudy_scene(pair):
    stack, _ = pair
    out = composite(stack, "first_clear").compute()
    red = stack.red.values
    both = ~np.isnan(red).any(axis=0)
    clearer = int(np.argmin(stack.cloud_cover.values))  # 2019-01-30 (1.07 %) beats 9.86 %
    assert stack.item_ids.values[clearer].endswith("20190130_20200829_02_T1")
    np.testing.assert_array_equal(out.red.values[both], red[clearer][both])
    only_other = ~np.isnan(red[1 - clearer]) & np.isnan(red[clearer])
    np.testing.assert_array_equal(out.red.values[only_other], red[1 - clearer][only_other])


def test_clip_follows_the_polygon_not_its_bounding_box(pair):
    stack, aoi = pair
    west, south, east, north = aoi.bounds
    triangle = shapely.Polygon([(west, south), (east, south), (west, north)])
    inside = aoi_mask(stack, triangle)
    mosaic = clip(composite(stack), inside).compute()
    inside = inside.values
    fraction = inside.mean()
    assert 0.4 < fraction < 0.6  # half of the bounding box, give or take the projection
    assert np.isnan(mosaic.red.values[~inside]).all()
    assert not np.isnan(mosaic.red.values[inside]).all()
    # The same mask computed in one block agrees with the chunked one.
    whole = aoi_mask(stack.chunk({"y": -1, "x": -1}), triangle).values
    np.testing.assert_array_equal(whole, inside)


def test_coverage_counts_and_refusals(pair):
    stack, aoi = pair
    inside = aoi_mask(stack, aoi)
    counts = coverage_counts(stack, inside)
    assert counts.aoi_pixels == counts.with_data == counts.clear > 0
    check_coverage(counts, where="this partition")

    cloudy = stack.assign(
        pixel_state=xr.where(stack.pixel_state == CLEAR, MASKED, stack.pixel_state)
    )
    with pytest.raises(NoClearPixels, match="max_cloud_cover"):
        check_coverage(coverage_counts(cloudy, inside), where="aoi x|2019-01")

    empty = stack.assign(pixel_state=xr.zeros_like(stack.pixel_state))
    with pytest.raises(NoOverlap, match="do not overlap"):
        check_coverage(coverage_counts(empty, inside), where="aoi x|2019-01")


def test_unknown_method_is_refused():
    with pytest.raises(ConfigError, match="method"):
        CompositeSettings(method="mean")


# 12: past the sorting network; 70: more dates than np.choose takes arrays
@pytest.mark.parametrize("dates", [1, 2, 3, 4, 7, 8, 12, 70])
def test_nan_median_equals_numpys_on_gappy_stacks(dates):
    from geocluster_dagster.composite import nan_median

    rng = np.random.default_rng(dates)
    values = rng.normal(size=(50, 40, dates)).astype("float32")
    values[rng.random(values.shape) < 0.4] = np.nan
    values[0, :, :] = np.nan  # pixels with no clear date at all
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning, match="All-NaN"):
        expected = np.nanmedian(values, axis=-1)
    got = nan_median(values)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.isnan(got[0]).all() and np.isfinite(got[1:]).sum() > 0
