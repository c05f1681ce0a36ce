"""QA decoding against the counts in shared/data/README.md."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import rasterio

from geocluster_dagster.errors import ConfigError
from geocluster_dagster.mask import (
    qa_mask,
    qa_pixel_confidence,
    qa_pixel_flag,
    qa_pixel_mask,
    scl_mask,
)

from .conftest import L7_LABELED, L8_008059, L8_008059_PREFIX, S2_29RKH


@pytest.fixture(scope="module")
def qa_pixel() -> np.ndarray:
    with rasterio.open(L8_008059 / f"{L8_008059_PREFIX}_QA_PIXEL.TIF") as src:
        return src.read(1)


def test_qa_pixel_fractions_match_the_readme(qa_pixel):
    # README: 31 % fill; of the valid pixels 81 % cloud, 6 % shadow, 16 % clear.
    fill = qa_pixel_flag(qa_pixel, "fill")
    valid = ~fill
    assert fill.mean() == pytest.approx(0.31, abs=0.005)
    assert qa_pixel_flag(qa_pixel, "cloud")[valid].mean() == pytest.approx(0.81, abs=0.005)
    assert qa_pixel_flag(qa_pixel, "cloud_shadow")[valid].mean() == pytest.approx(0.06, abs=0.005)
    assert qa_pixel_flag(qa_pixel, "clear")[valid].mean() == pytest.approx(0.16, abs=0.005)
    assert len(np.unique(qa_pixel)) == 15


def test_known_usgs_codes_decode_as_documented():
    codes = np.array([1, 21824, 21952, 22280, 23888, 21762, 55052], dtype="uint16")
    assert qa_pixel_flag(codes, "fill").tolist() == [True] + [False] * 6
    # The C2 "clear" bit means "not cloud and not dilated cloud": shadow pixels (23888) carry it.
    assert qa_pixel_flag(codes, "clear").tolist() == [False, True, True, False, True, False, False]
    assert qa_pixel_flag(codes, "water").tolist() == [
        False,
        False,
        True,
        False,
        False,
        False,
        False,
    ]
    assert qa_pixel_flag(codes, "cloud")[3] and qa_pixel_confidence(codes, "cloud")[3] == 3
    assert qa_pixel_flag(codes, "cloud_shadow")[4]
    assert qa_pixel_flag(codes, "dilated_cloud")[5]
    assert qa_pixel_flag(codes, "cirrus")[6] and qa_pixel_confidence(codes, "cirrus")[6] == 3


def test_default_mask_is_not_the_clear_bit_alone(qa_pixel):
    usable = ~qa_pixel_mask(qa_pixel)
    clear = qa_pixel_flag(qa_pixel, "clear")
    shadow = qa_pixel_flag(qa_pixel, "cloud_shadow")
    cirrus = qa_pixel_flag(qa_pixel, "cirrus")
    # Usable pixels all carry the clear bit, but clear-bit pixels under shadow or cirrus are masked.
    assert usable.sum() > 0
    assert np.array_equal(usable, clear & ~shadow & ~cirrus)
    assert (clear & shadow).sum() == 6411 + 718 + 2  # codes 23888, 24144, 56660 of this scene


@pytest.mark.parametrize("use_dask", [False, True])
def test_numpy_and_dask_agree(qa_pixel, use_dask):
    data = da.from_array(qa_pixel, chunks=100) if use_dask else qa_pixel
    result = np.asarray(qa_pixel_mask(data))
    assert np.array_equal(result, qa_pixel_mask(qa_pixel))


def test_scl_class_counts_match_the_readme():
    with rasterio.open(S2_29RKH / "SCL.tif") as src:
        scl = src.read(1)
    # README: {2: 1, 5: 289159, 7: 3, 8: 967, 9: 837, 10: 10434}
    assert int(scl_mask(scl, ["cloud"]).sum()) == 967 + 837
    assert int(scl_mask(scl, ["cirrus"]).sum()) == 10434
    assert int(scl_mask(scl, ["fill"]).sum()) == (scl == 0).sum()
    default = scl_mask(scl)
    assert int((~default & (scl != 0)).sum()) == 1 + 289159 + 3


def test_fmask_band_of_the_landsat7_stack():
    with rasterio.open(L7_LABELED / "LE70220492002106EDC00_stack.gtif") as src:
        fmask = src.read(8)
    masked = qa_mask(fmask, "fmask", ["cloud", "cloud_shadow"])
    # README: 0 clear 73 %, 2 shadow 6.6 %, 4 cloud 20 %.
    assert masked.mean() == pytest.approx(0.066 + 0.20, abs=0.01)


def test_unknown_flag_is_a_config_error():
    with pytest.raises(ConfigError, match="mask_flags"):
        qa_pixel_mask(np.zeros(3, dtype="uint16"), ["clouds"])
    with pytest.raises(ConfigError, match="qa_pixel"):
        qa_mask(np.zeros(3), "fmask2")
