"""The geotiff product: the mosaic's DN bands and float indices in two COGs, read back as one image."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from geocluster_dagster import cluster
from geocluster_dagster.bands import band_unit
from geocluster_dagster.cluster import (
    SAMPLE_ATTR,
    ClusterSettings,
    SampleCandidates,
    sample_valid_pixels,
)
from geocluster_dagster.encoding import STACK_ATTR, DnEncoding, stack_attr
from geocluster_dagster.errors import AssetReadError
from geocluster_dagster.export import COG_SETTINGS_TAG, STATISTICS_TAG, CogSettings, write_cog
from geocluster_dagster.indices import IndexSettings
from geocluster_dagster.products import geotiff as geotiff_product
from geocluster_dagster.products.geotiff import (
    BANDS,
    INDICES,
    SAMPLE,
    open_geotiff,
    write_geotiff,
)

from .helpers import LANDSAT_SR, LANDSAT_ST, gdalinfo_json, loaded

GEOBOX = GeoBox((300, 200), Affine(30, 0, 500000, 0, -30, 7009000), "EPSG:32723")


def _image(*, encoded: bool = True) -> xr.Dataset:
    """red, nir (reflectance) and lwir (K) as the loader makes them of DNs."""
    rng = np.random.default_rng(1)
    dn = rng.integers(7000, 40000, size=(3, *GEOBOX.shape)).astype("uint16")
    scaling = {"red": LANDSAT_SR, "nir": LANDSAT_SR, "lwir": LANDSAT_ST}
    values = {name: loaded(dn[i], *scaling[name]) for i, name in enumerate(scaling)}
    for band in values.values():
        band[:20, :30] = np.nan  # outside the AOI
    image = xr.Dataset(
        {
            name: xr.DataArray(v, dims=("y", "x"), coords=xr_coords(GEOBOX)).chunk(128)
            for name, v in values.items()
        }
    )
    if encoded:
        image.attrs[STACK_ATTR] = stack_attr(scaling)
    return image


def _mosaic(image: xr.Dataset, path, cog: CogSettings | None = None):
    """``image`` written as the mosaic step writes its COG (DN encoding, statistics tag)."""
    cog = cog or CogSettings()
    bands = [str(b) for b in image.data_vars]
    write_cog(
        image,
        path,
        cog=True,
        tags={"aoi_id": "x", COG_SETTINGS_TAG: cog.as_tag()},
        compress=cog.compress,
        compress_level=cog.compress_level,
        statistics=True,
        units={band: band_unit(band) for band in bands},
        encoding=DnEncoding.for_bands(image.attrs, bands),
    )
    return path


def test_bands_are_the_mosaics_file_and_indices_are_float(tmp_path):
    image = _image()
    mosaic = _mosaic(image, tmp_path / "mosaic.tif")
    facts = write_geotiff(mosaic, tmp_path / "g", aoi_id="x")
    assert facts.encoded and facts.files == {
        BANDS: ["red", "nir", "lwir"],
        INDICES: ["ndvi", "lst"],
    }
    # not a second encoding: the very file, linked (no byte copied)
    assert (tmp_path / "g" / BANDS).samefile(mosaic)
    with rasterio.open(tmp_path / "g" / BANDS) as src:
        assert src.dtypes == ("uint16",) * 3 and src.nodata == 0 and src.tags()["aoi_id"] == "x"
        assert src.units == ("reflectance", "reflectance", "K")
        assert STACK_ATTR not in src.tags()
    with rasterio.open(tmp_path / "g" / INDICES) as src:
        assert src.dtypes == ("float32",) * 2 and np.isnan(src.nodata)
        assert src.units == ("index", "degree_Celsius") and src.tags()["aoi_id"] == "x"
        assert STATISTICS_TAG not in src.tags()  # the bands' statistics are not the indices'
    back = open_geotiff(tmp_path / "g")
    assert list(back.data_vars) == ["red", "nir", "lwir", "ndvi", "lst"]
    for name in image.data_vars:  # DN values exactly
        np.testing.assert_array_equal(back[name].values, image[name].values)
    red, nir = image.red.values, image.nir.values
    np.testing.assert_allclose(back.ndvi.values, (nir - red) / (nir + red), rtol=1e-6)
    np.testing.assert_allclose(back.lst.values, image.lwir.values - 273.15, rtol=1e-6)
    assert back.attrs["source_path"] == str(tmp_path / "g" / BANDS)
    # the bands' statistics, carried from the mosaic's tag, are those of its pixels
    assert facts.stats.count["ndvi"] == facts.stats.count["red"] == np.isfinite(red).sum()
    assert facts.stats.mean("red") == pytest.approx(float(np.nanmean(red)), rel=1e-5)
    assert facts.stats.maximum["lwir"] == pytest.approx(float(np.nanmax(image.lwir)), rel=1e-6)
    assert facts.stats.mean("lst") == pytest.approx(float(np.nanmean(back.lst)), rel=1e-5)


def test_a_remade_mosaic_leaves_the_geotiff_made_before_as_it_was(tmp_path):
    mosaic = _mosaic(_image(), tmp_path / "mosaic.tif")
    write_geotiff(mosaic, tmp_path / "g", aoi_id="x")
    before = (tmp_path / "g" / BANDS).read_bytes()
    _mosaic(_image().assign(red=lambda d: d.red + np.float32(0.01)), mosaic)
    assert (tmp_path / "g" / BANDS).read_bytes() == before
    assert not (tmp_path / "g" / BANDS).samefile(mosaic)


def test_other_compression_encodes_the_bands_again_with_the_same_values(tmp_path):
    image = _image()
    mosaic = _mosaic(image, tmp_path / "mosaic.tif")
    deflate = CogSettings(compress="deflate", compress_level=6)
    facts = write_geotiff(mosaic, tmp_path / "g", cog=deflate, aoi_id="x")
    assert not (tmp_path / "g" / BANDS).samefile(mosaic)
    for name in facts.files:
        with rasterio.open(tmp_path / "g" / name) as src:
            assert src.compression.name == "deflate"
            assert CogSettings.of_file(src.tags()) == deflate
    back = open_geotiff(tmp_path / "g")
    for name in image.data_vars:
        np.testing.assert_array_equal(back[name].values, image[name].values)
    assert facts.stats.count["red"] == np.isfinite(image.red.values).sum()


def test_bands_without_one_encoding_stay_float(tmp_path):
    mosaic = _mosaic(_image(encoded=False), tmp_path / "mosaic.tif")
    facts = write_geotiff(mosaic, tmp_path / "g", aoi_id="x")
    assert not facts.encoded
    with rasterio.open(tmp_path / "g" / BANDS) as src:
        assert src.dtypes == ("float32",) * 3 and np.isnan(src.nodata)


def test_no_index_no_indices_file(tmp_path):
    mosaic = _mosaic(_image(), tmp_path / "mosaic.tif")
    facts = write_geotiff(mosaic, tmp_path / "g", IndexSettings(indices=()), aoi_id="x")
    assert list(facts.files) == [BANDS] and not (tmp_path / "g" / INDICES).exists()
    assert list(open_geotiff(tmp_path / "g").data_vars) == ["red", "nir", "lwir"]


def test_a_mosaic_of_an_earlier_version_asks_to_be_made_again(tmp_path):
    path = tmp_path / "mosaic.tif"
    write_cog(_image(), path, cog=True)  # no statistics tag
    with pytest.raises(AssetReadError, match="materialize mosaic for this partition again"):
        write_geotiff(path, tmp_path / "g", aoi_id="x")
    assert not (tmp_path / "g").exists()


def test_a_failed_indices_file_keeps_the_earlier_product_whole(tmp_path, monkeypatch):
    folder = tmp_path / "g"
    mosaic = _mosaic(_image(), tmp_path / "mosaic.tif")
    write_geotiff(mosaic, folder, aoi_id="x")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real = geotiff_product.write_cog

    def fails_on_indices(ds, target, **kwargs):
        if target.name == INDICES:
            raise OSError("simulated failure after the bands were written")
        return real(ds, target, **kwargs)

    monkeypatch.setattr(geotiff_product, "write_cog", fails_on_indices)
    _mosaic(_image().assign(red=lambda d: d.red + np.float32(0.01)), mosaic)
    with pytest.raises(OSError, match="simulated"):
        write_geotiff(mosaic, folder, aoi_id="x")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_earlier_versions_single_file_asks_for_a_rematerialization(tmp_path):
    (tmp_path / "2023-06-01").mkdir()
    with pytest.raises(AssetReadError, match="materialize geotiff for this partition again"):
        open_geotiff(tmp_path / "2023-06-01")


def test_the_products_codec_opens_in_debians_gdal(tmp_path):
    """The oldest reader we promise (GDAL 3.6, which QGIS 3.22 uses on Debian 12) decodes the
    geotiff written with the default compression, every pixel (gdalinfo's min/max)."""
    image = _image()
    facts = write_geotiff(_mosaic(image, tmp_path / "mosaic.tif"), tmp_path / "g", aoi_id="x")
    for name, bands in facts.files.items():
        info = gdalinfo_json(tmp_path / "g" / name, "-mm")
        assert info["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"] == CogSettings().compress.upper()
        with rasterio.open(tmp_path / "g" / name) as src:
            for band, reported in zip(src.read(masked=True), info["bands"], strict=True):
                assert (reported["computedMin"], reported["computedMax"]) == pytest.approx(
                    (float(band.min()), float(band.max())),
                    abs=5e-4,  # gdalinfo prints 3 decimals
                )
        assert [b["description"] for b in info["bands"]] == bands


@pytest.mark.parametrize("n", [500, 20_000, 200_000])
def test_the_fit_sample_drawn_with_the_indices_equals_a_pass_of_its_own(tmp_path, monkeypatch, n):
    image = _image()
    image["red"][50:60, :] = np.nan  # invalid pixels inside the AOI too
    mosaic = _mosaic(image, tmp_path / "mosaic.tif")
    write_geotiff(mosaic, tmp_path / "g", aoi_id="x", chunks=128)
    opened = open_geotiff(tmp_path / "g", chunks=128)
    assert opened.attrs[SAMPLE_ATTR].endswith(SAMPLE)
    features = ClusterSettings().feature_bands(opened)
    assert features == ["red", "nir"]
    reading = opened.copy()
    reading.attrs = {k: v for k, v in opened.attrs.items() if k != SAMPLE_ATTR}
    read = sample_valid_pixels(reading, features, n, ClusterSettings().seed)
    with monkeypatch.context() as patched:  # taken from the candidates: no block is read
        patched.setattr(cluster, "iter_blocks", lambda *a, **k: pytest.fail("read the bands"))
        drawn = sample_valid_pixels(opened, features, n, ClusterSettings().seed)
    np.testing.assert_array_equal(drawn, read)  # the same pixels, values and order
    assert len(drawn) == min(n, int(np.isfinite(image.red.values).sum()))
    # another seed, other features or another block size: the candidates do not serve
    candidates = SampleCandidates.load(opened.attrs[SAMPLE_ATTR])
    assert candidates.serves(features, 0, ((2,), (128, 72), (128, 128, 44)))
    assert not candidates.serves(features, 1, ((2,), (128, 72), (128, 128, 44)))
    assert not candidates.serves(["nir"], 0, ((1,), (128, 72), (128, 128, 44)))
    assert not candidates.serves(features, 0, ((2,), (200,), (300,)))
    np.testing.assert_array_equal(
        sample_valid_pixels(opened, features, n, 1), sample_valid_pixels(reading, features, n, 1)
    )
