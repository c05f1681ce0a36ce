"""Spectral indices on real Landsat 8 C2 L2 spectra (spyndex's labelled samples)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import spyndex
import xarray as xr

from geocluster_dagster.errors import BandNotFound, ConfigError
from geocluster_dagster.indices import add_indices, compute_index

from .conftest import SHARED_DATA

SAMPLES = SHARED_DATA / "landsat8_sr_labeled_samples_spyndex" / "spectral.json"
COLUMNS = {
    "SR_B1": "coastal",
    "SR_B2": "blue",
    "SR_B3": "green",
    "SR_B4": "red",
    "SR_B5": "nir",
    "SR_B6": "swir16",
    "SR_B7": "swir22",
    "ST_B10": "lwir",
}


@pytest.fixture(scope="module")
def spectra() -> tuple[xr.Dataset, np.ndarray]:
    doc = json.loads(SAMPLES.read_text())
    keys = sorted(doc["SR_B1"], key=int)
    data = {
        COLUMNS[c]: ("x", np.array([doc[c][k] for k in keys], dtype="float32")) for c in COLUMNS
    }
    ds = xr.Dataset(data).expand_dims(y=1).chunk({"x": 40})
    labels = np.array([doc["class"][k] for k in keys])
    return ds, labels


def test_ndvi_separates_the_labelled_classes(spectra):
    ds, labels = spectra
    ndvi = compute_index(ds, "NDVI").values[0]
    expected = (ds.nir - ds.red) / (ds.nir + ds.red)
    np.testing.assert_allclose(ndvi, expected.values[0], rtol=1e-6)
    assert ndvi[labels == "Vegetation"].mean() > 0.6
    assert ndvi[labels == "Water"].mean() < 0.1


def test_lst_is_celsius_from_the_kelvin_thermal_band(spectra):
    ds, _ = spectra
    lst = compute_index(ds, "lst")
    np.testing.assert_allclose(lst.values, ds.lwir.values - 273.15, atol=1e-4)
    assert lst.attrs["units"] == "degC"


@pytest.mark.parametrize("name", ["NDWI", "EVI", "SAVI", "NDBI", "NBRT1"])
def test_catalogue_indices_match_spyndex_itself(spectra, name):
    ds, _ = spectra
    ours = compute_index(ds, name).values[0]
    index = spyndex.indices[name]
    symbols = {
        "A": "coastal",
        "B": "blue",
        "G": "green",
        "R": "red",
        "N": "nir",
        "S1": "swir16",
        "S2": "swir22",
        "T": "lwir",
    }
    params = {s: ds[symbols[s]].values[0].astype("float64") for s in index.bands if s in symbols}
    params.update({s: spyndex.constants[s].default for s in index.bands if s not in params})
    theirs = np.asarray(spyndex.computeIndex(name, params=params), dtype="float64")
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def test_indices_are_lazy_and_added_as_lowercase_variables(spectra):
    ds, _ = spectra
    out = add_indices(ds, ["NDVI", "ndwi", "ndvi"])
    assert {"ndvi", "ndwi"} <= set(out.data_vars)
    assert out.ndvi.chunks is not None and out.ndvi.dtype == np.float32


def test_division_by_zero_is_missing_not_infinite():
    ds = xr.Dataset(
        {
            "red": ("x", np.array([0.0, 0.1], "float32")),
            "nir": ("x", np.array([0.0, 0.3], "float32")),
        }
    )
    ndvi = compute_index(ds, "ndvi").values
    assert np.isnan(ndvi[0]) and ndvi[1] == pytest.approx(0.5)


def test_unknown_index_suggests_close_names(spectra):
    ds, _ = spectra
    with pytest.raises(ConfigError, match="NDVI"):
        compute_index(ds, "NDVIx")


def test_missing_band_names_the_index_and_the_fix(spectra):
    ds, _ = spectra
    with pytest.raises(BandNotFound, match=r"'lst'.*lwir.*thermal"):
        compute_index(ds.drop_vars("lwir"), "lst")
