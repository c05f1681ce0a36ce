"""The geotiff product: DN bands and float indices in two COGs, read back as one image."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from geocluster_dagster.encoding import STACK_ATTR, stack_attr
from geocluster_dagster.errors import AssetReadError
from geocluster_dagster.products import geotiff as geotiff_product
from geocluster_dagster.products.geotiff import BANDS, INDICES, open_geotiff, write_image

from .helpers import LANDSAT_SR, LANDSAT_ST, loaded

GEOBOX = GeoBox((300, 200), Affine(30, 0, 500000, 0, -30, 7009000), "EPSG:32723")


def _image(*, encoded: bool = True) -> xr.Dataset:
    """red, nir (reflectance) and lwir (K) as the loader makes them of DNs, NDVI and LST."""
    rng = np.random.default_rng(1)
    dn = rng.integers(7000, 40000, size=(3, *GEOBOX.shape)).astype("uint16")
    scaling = {"red": LANDSAT_SR, "nir": LANDSAT_SR, "lwir": LANDSAT_ST}
    values = {name: loaded(dn[i], *scaling[name]) for i, name in enumerate(scaling)}
    for band in values.values():
        band[:20, :30] = np.nan  # outside the AOI
    values["ndvi"] = (values["nir"] - values["red"]) / (values["nir"] + values["red"])
    values["lst"] = values["lwir"] - np.float32(273.15)
    image = xr.Dataset(
        {
            name: xr.DataArray(v, dims=("y", "x"), coords=xr_coords(GEOBOX)).chunk(128)
            for name, v in values.items()
        }
    )
    if encoded:
        image.attrs[STACK_ATTR] = stack_attr(scaling)
    return image


def test_bands_as_dn_indices_as_float_and_back_as_they_were(tmp_path):
    image = _image()
    facts = write_image(image, tmp_path / "g", ["ndvi", "lst"], tags={"aoi_id": "x"})
    assert facts.encoded and facts.files == {
        BANDS: ["red", "nir", "lwir"],
        INDICES: ["ndvi", "lst"],
    }
    with rasterio.open(tmp_path / "g" / BANDS) as src:
        assert src.dtypes == ("uint16",) * 3 and src.nodata == 0 and src.tags()["aoi_id"] == "x"
        assert src.units == ("reflectance", "reflectance", "K")
        assert STACK_ATTR not in src.tags()
    with rasterio.open(tmp_path / "g" / INDICES) as src:
        assert src.dtypes == ("float32",) * 2 and np.isnan(src.nodata)
        assert src.units == ("index", "degree_Celsius") and src.tags()["aoi_id"] == "x"
    back = open_geotiff(tmp_path / "g")
    assert list(back.data_vars) == ["red", "nir", "lwir", "ndvi", "lst"]
    for name in image.data_vars:  # DN values exactly, the indices as computed
        np.testing.assert_array_equal(back[name].values, image[name].values)
    assert back.attrs["source_path"] == str(tmp_path / "g" / BANDS)
    assert facts.stats.count["ndvi"] == facts.stats.count["red"] == np.isfinite(image.red).sum()
    assert facts.stats.mean("lst") == pytest.approx(float(image.lst.mean()), rel=1e-5)
    # opened, the bands say how they are stored: written again, they are DN again
    again = write_image(back, tmp_path / "g2", ["ndvi", "lst"])
    assert again.encoded


def test_bands_without_one_encoding_stay_float(tmp_path):
    facts = write_image(_image(encoded=False), tmp_path / "g", ["ndvi", "lst"])
    assert not facts.encoded
    with rasterio.open(tmp_path / "g" / BANDS) as src:
        assert src.dtypes == ("float32",) * 3 and np.isnan(src.nodata)


def test_no_index_no_indices_file(tmp_path):
    image = _image().drop_vars(["ndvi", "lst"])
    facts = write_image(image, tmp_path / "g", [])
    assert list(facts.files) == [BANDS] and not (tmp_path / "g" / INDICES).exists()
    assert list(open_geotiff(tmp_path / "g").data_vars) == ["red", "nir", "lwir"]


def test_a_failed_indices_file_keeps_the_earlier_product_whole(tmp_path, monkeypatch):
    folder = tmp_path / "g"
    write_image(_image(), folder, ["ndvi", "lst"])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real = geotiff_product.write_cog

    def fails_on_indices(ds, target, **kwargs):
        if target.name == INDICES:
            raise OSError("simulated failure after the bands were written")
        return real(ds, target, **kwargs)

    monkeypatch.setattr(geotiff_product, "write_cog", fails_on_indices)
    changed = _image().assign(red=lambda d: d.red + np.float32(0.01))
    with pytest.raises(OSError, match="simulated"):
        write_image(changed, folder, ["ndvi", "lst"])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_earlier_versions_single_file_asks_for_a_rematerialization(tmp_path):
    (tmp_path / "2023-06-01").mkdir()
    with pytest.raises(AssetReadError, match="materialize geotiff for this partition again"):
        open_geotiff(tmp_path / "2023-06-01")
