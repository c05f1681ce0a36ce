"""The minimum mapping unit: specks take their surroundings' class, seamlessly block by block."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from geocluster_dagster.sieve import halo_for, sieve, sieved_blocks, unit_in_pixels


def test_a_speck_takes_the_class_around_it_and_a_region_at_the_unit_stays():
    field = np.full((9, 9), 1, dtype=np.uint8)
    field[1, 1] = 2  # one pixel
    field[4:6, 4:6] = 3  # four pixels
    assert sieve(field, 2).tolist() == np.where(field == 2, 1, field).tolist()
    assert (sieve(field, 4) == np.where(field == 2, 1, field)).all()  # 4 px: at the unit, kept
    assert (sieve(field, 5) == 1).all()  # both below a 5-pixel unit


def test_nodata_is_never_changed_nor_counted_as_surroundings():
    field = np.zeros((7, 7), dtype=np.uint8)
    field[3, 3] = 4  # a speck in nodata only: nothing to take from
    field[0, :3] = 2
    field[1, :3] = 2
    field[0, 1] = 5  # a speck in class 2, next to nodata
    done = sieve(field, 3)
    assert done[3, 3] == 4 and done[0, 1] == 2
    assert (done[field == 0] == 0).all()


def test_ties_go_to_the_smaller_class():
    field = np.array([[1, 1, 1], [2, 9, 1], [2, 2, 2]], dtype=np.uint8)  # 4 contacts each
    assert sieve(field, 2)[1, 1] == 1


def _salt_and_pepper(shape=(300, 260), seed=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.normal(size=shape), 6)
    classes = np.digitize(smooth, np.quantile(smooth, [0.25, 0.5, 0.75])) + 1
    noise = rng.random(shape) < 0.08
    classes[noise] = rng.integers(1, 5, size=int(noise.sum()))
    classes[:20, :30] = 0  # nodata
    return classes.astype(np.uint8)


@pytest.mark.parametrize("unit", [2, 6, 12])
def test_block_by_block_with_its_halo_equals_the_whole_map(unit):
    labels = _salt_and_pepper()
    whole = sieve(labels, unit)
    assert (whole != labels).mean() > 0.03  # the sieve did something
    out = np.zeros_like(labels)

    def read(row, col, rows, cols):
        return labels[row : row + rows, col : col + cols]

    for (rows, cols), block in sieved_blocks(read, *labels.shape, 64, unit):
        out[rows, cols] = block
    np.testing.assert_array_equal(out, whole)
    # without the halo the blocks disagree with the whole map at their edges
    seams = np.zeros_like(labels)
    for row in range(0, labels.shape[0], 64):
        for col in range(0, labels.shape[1], 64):
            part = labels[row : row + 64, col : col + 64]
            seams[row : row + 64, col : col + 64] = sieve(part, unit)
    assert (seams != whole).any()


def test_the_unit_in_pixels_and_the_halo():
    assert unit_in_pixels(0.5, 900.0) == 6  # 0.5 ha of 30 m pixels: 5.6, so 6
    assert unit_in_pixels(0.09, 900.0) == 1 and unit_in_pixels(0, 900.0) == 0
    assert unit_in_pixels(1.0, 100.0) == 100  # Sentinel-2's 10 m
    assert halo_for(6, 3) == 21


def test_every_small_region_is_gone_after_the_sieve():
    labels = _salt_and_pepper(seed=5)
    done = sieve(labels, 6)
    for value in np.unique(done):
        if value == 0:
            continue
        regions, count = ndimage.label(done == value, structure=np.ones((3, 3), bool))
        sizes = np.bincount(regions.ravel())[1:]
        # what is left below the unit touches only nodata and itself
        for index in np.flatnonzero(sizes < 6) + 1:
            ring = ndimage.binary_dilation(regions == index, np.ones((3, 3), bool)) & (
                regions != index
            )
            assert set(np.unique(done[ring])) <= {0, int(value)}


def test_the_clusters_product_with_a_minimum_mapping_unit(tmp_path):
    """A real map (the Landsat 7 scene, k = 5): sieved to 0.5 ha (6 pixels of 30 m), no region
    below the unit is left but where only nodata surrounds it, and the class areas are the
    sieved map's own."""
    import json

    import rasterio

    from geocluster_dagster.cluster import ClusterSettings
    from geocluster_dagster.products.clusters import CLUSTER_MAP, write_clusters
    from geocluster_dagster.sieve import SieveSettings

    from .helpers import REFLECTANCE, STACK_1999, landsat7_dataset

    ds = landsat7_dataset(STACK_1999)[REFLECTANCE]
    settings = ClusterSettings(n_clusters=5)
    plain = write_clusters(ds, settings, tmp_path / "plain", aoi_id="l7")
    sieved = write_clusters(
        ds, settings, tmp_path / "sieved", aoi_id="l7", sieve=SieveSettings(0.5)
    )
    with (
        rasterio.open(tmp_path / "plain" / CLUSTER_MAP) as a,
        rasterio.open(tmp_path / "sieved" / CLUSTER_MAP) as b,
    ):
        before, after = a.read(1), b.read(1)
        assert b.colormap(1)[1] == a.colormap(1)[1]  # still drawn in the classes' colours
    summary = json.loads((tmp_path / "sieved" / "summary.json").read_text())
    unit = summary["min_mapping_unit"]
    assert unit["pixels"] == 6 and unit["changed_pixels"] == int((before != after).sum()) > 0
    np.testing.assert_array_equal(after, sieve(before, 6))  # block by block = whole map
    assert ((before == 0) == (after == 0)).all()  # nodata untouched
    counts = dict(zip(sieved.signatures["cluster"], sieved.signatures["pixel_count"], strict=True))
    assert counts == {c: int((after == c).sum()) for c in counts}
    assert sieved.signatures["area_ha"].sum() == pytest.approx((after > 0).sum() * 0.09)
    # the means are those of each pixel's own label: the same model, the same signatures
    np.testing.assert_allclose(
        sieved.signatures["red_mean"], plain.signatures["red_mean"], rtol=1e-12
    )
