"""Land-cover names from published index thresholds, on real labelled Landsat and Sentinel-2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

from geocluster_dagster.cluster import ClusterSettings, fit_clusterer
from geocluster_dagster.errors import ConfigError
from geocluster_dagster.model_file import load_model, save_model
from geocluster_dagster.naming import (
    BARE,
    BUILT_UP,
    CLOUD,
    DARK,
    DENSE_VEGETATION,
    SNOW,
    SPARSE_VEGETATION,
    UNLABELLED,
    WATER,
    NamingSettings,
    cover_of,
    name_clusters,
    pixel_covers,
    propose_name,
)
from geocluster_dagster.products.clusters import ModelPlan, open_clusters, write_clusters

from .conftest import L7_LABELED, S2_29RKH, SHARED_DATA
from .helpers import STACK_1999, landsat7_dataset

L8_BANDS = {"SR_B2": "blue", "SR_B3": "green", "SR_B4": "red", "SR_B5": "nir"}
L8_BANDS |= {"SR_B6": "swir16", "SR_B7": "swir22"}
L7_CLASSES = {1: "forest", 2: "water", 3: "herbaceous", 4: "barren", 5: "urban"}


def _dominant(labels: np.ndarray, truth: np.ndarray) -> dict[int, str]:
    """Each cluster's most frequent labelled class."""
    table = pd.crosstab(labels, truth)
    return {int(c): str(table.loc[c].idxmax()) for c in table.index}


def test_the_spyndex_samples_are_named_water_vegetation_and_built_up():
    samples = pd.read_json(SHARED_DATA / "landsat8_sr_labeled_samples_spyndex" / "spectral.json")
    samples = samples.rename(columns=L8_BANDS)
    bands = list(L8_BANDS.values())
    model = fit_clusterer(samples[bands].to_numpy(), bands, ClusterSettings(n_clusters=3))
    labels = model.predict(samples[bands].to_numpy())
    means = {int(c): samples.loc[labels == c, bands].mean().to_dict() for c in np.unique(labels)}
    named = {c.id: c.name for c in name_clusters(means)}
    expected = {"Water": WATER, "Vegetation": DENSE_VEGETATION, "Urban": BUILT_UP}
    for cluster, label in _dominant(labels, samples["class"].to_numpy()).items():
        assert named[cluster] == expected[label], (cluster, label, named)


@pytest.fixture(scope="module")
def landsat7_clusters(tmp_path_factory):
    folder = tmp_path_factory.mktemp("l7") / "clusters"
    ds = landsat7_dataset(STACK_1999)[["blue", "green", "red", "nir", "swir16", "swir22"]]
    facts = write_clusters(ds, ClusterSettings(n_clusters=5), folder, aoi_id="l7")
    return facts, open_clusters(folder)


def test_the_labelled_landsat7_scene_names_vegetation_and_built_up(landsat7_clusters):
    facts, stored = landsat7_clusters
    with rasterio.open(L7_LABELED / "training_data.gtif") as src:
        truth = src.read(1)
    labelled = truth > 0
    labels = stored.cluster_map.values[labelled]
    named = {c.id: c.name for c in facts.classes}
    dominant = _dominant(labels, np.vectorize(L7_CLASSES.get)(truth[labelled]))
    for cluster, label in dominant.items():
        if label in ("forest", "herbaceous"):
            assert cover_of(named[cluster]) == DENSE_VEGETATION, (cluster, label, named)
        if label == "urban":
            assert cover_of(named[cluster]) == BUILT_UP, (cluster, label, named)
    # No two classes of the map share a name.
    assert len(set(named.values())) == len(named), named
    assert "urban" in dominant.values() and "forest" in dominant.values()
    # Its 16 "water" pixels (NDVI 0.17-0.48, NIR 0.12-0.2) are not open water by any published
    # water index, and no cluster is mostly them.
    assert "water" not in dominant.values()
    # Every name says which rule gave it, with the index values.
    signatures = pd.read_csv(stored.directory / "signatures.csv")
    assert list(signatures.columns[:3]) == ["cluster", "name", "name_rule"]
    summary = json.loads((stored.directory / "summary.json").read_text())
    assert {"id", "name", "rule", "indices"} <= set(summary["classes"][0])
    assert load_model(stored.directory / "model.json").names_by_id == named


def test_the_sentinel2_desert_tile_is_mostly_bare_soil(tmp_path):
    bands = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
    arrays = {}
    for file, band in bands.items():
        with rasterio.open(S2_29RKH / f"{file}.tif") as src:
            dn = src.read(1).astype(np.float32)
            transform, crs = src.transform, src.crs
        arrays[band] = np.where(dn == 0, np.nan, dn / 10_000)  # Earth Search v0: DN / 10000
    height, width = arrays["red"].shape
    ds = xr.Dataset(
        {b: (("y", "x"), a) for b, a in arrays.items()},
        coords={
            "x": transform.c + transform.a * (np.arange(width) + 0.5),
            "y": transform.f + transform.e * (np.arange(height) + 0.5),
        },
    ).rio.write_crs(crs)
    facts = write_clusters(
        ds.chunk(256), ClusterSettings(n_clusters=5), tmp_path / "c", aoi_id="s2"
    )
    signatures = facts.signatures
    bare = signatures.loc[signatures["name"].map(cover_of) == BARE, "fraction"].sum()
    assert signatures["name"].is_unique, signatures["name"]
    assert bare > 0.9, signatures[["cluster", "name", "fraction"]]
    # No SWIR on this tile: the rules that need it say so rather than guess.
    assert all(np.isnan(c.indices["NDBI"]) for c in facts.classes)


# Cloud from the demo's flat bright spectrum; snow, dark and edge cases from typical values.
CLOUD_SPECTRUM = dict(zip(["blue", "green", "red", "nir", "swir16", "swir22"], [0.51, 0.52, 0.53, 0.56, 0.44, 0.33], strict=True))  # fmt: skip


@pytest.mark.parametrize(
    ("means", "name", "rule"),
    [
        (dict(blue=0.8, green=0.8, red=0.75, nir=0.65, swir16=0.05), SNOW, "Hall et al. 1995"),
        (CLOUD_SPECTRUM, CLOUD, "HOT > 0"),
        (dict(blue=0.03, green=0.05, red=0.03, nir=0.02, swir16=0.01), WATER, "McFeeters"),
        (
            dict(blue=0.006, green=0.026, red=0.028, nir=0.098, swir16=0.062),
            DARK,
            "mean reflectance",
        ),
        (dict(blue=0.2, green=0.28, red=0.35, nir=0.4), BARE, "0 <= NDVI < 0.2"),
        (dict(blue=0.05, green=0.08, red=0.08, nir=0.2), SPARSE_VEGETATION, "no SWIR band"),
        (dict(blue=0.05, green=0.08), UNLABELLED, "no red or NIR"),
    ],
)
def test_each_rule_names_its_cover_and_says_why(means, name, rule):
    proposed, why, indices = propose_name(means)
    assert proposed == name and rule in why
    assert set(indices) == {"NDVI", "NDWI", "MNDWI", "NDSI", "NDBI", "BI"}


def test_names_can_be_overridden_by_id_and_a_wrong_id_is_refused():
    means = {1: dict(blue=0.03, green=0.05, red=0.03, nir=0.02, swir16=0.01)}
    named = name_clusters(means, {"1": "reservoir"})
    assert named[0].name == "reservoir" and "proposed: water" in named[0].rule
    with pytest.raises(
        ConfigError, match=r"cluster id\(s\) \['7'\], which the model does not have"
    ):
        name_clusters(means, {"7": "mine"})
    with pytest.raises(ConfigError, match="is not a cluster id"):
        NamingSettings(class_names={"water": "lake"})


def test_a_reference_models_names_are_kept_by_the_maps_that_use_it(tmp_path, landsat7_clusters):
    facts, stored = landsat7_clusters
    reference = stored.model.with_names({i: f"cover {i}" for i in stored.model.names_by_id})
    save_model(reference, tmp_path / "model.json")
    reference = load_model(tmp_path / "model.json")
    ds = landsat7_dataset(STACK_1999)[list(reference.features)]
    applied = write_clusters(
        ds, ClusterSettings(n_clusters=5), tmp_path / "a", aoi_id="l7",
        plan=ModelPlan("apply", reference, str(tmp_path / "model.json")),
    )  # fmt: skip
    assert [c.name for c in applied.classes] == [f"cover {i}" for i in range(1, 6)]
    assert all("the name in the reference model" in c.rule for c in applied.classes)
    overridden = write_clusters(
        ds, ClusterSettings(n_clusters=5), tmp_path / "b", aoi_id="l7",
        plan=ModelPlan("apply", reference, "ref"), naming=NamingSettings(class_names={"2": "pines"}),
    )  # fmt: skip
    assert [c.name for c in overridden.classes][:2] == ["cover 1", "pines"]


def test_clusters_the_rules_name_alike_get_distinct_names_by_brightness():
    dark = dict(blue=0.02, green=0.04, red=0.03, nir=0.30, swir16=0.12)
    mid = {b: v * 1.3 for b, v in dark.items()}
    bright = {b: v * 1.6 for b, v in dark.items()}
    water = dict(blue=0.03, green=0.05, red=0.03, nir=0.02, swir16=0.01)
    named = {c.id: c for c in name_clusters({4: bright, 2: dark, 3: mid, 1: water})}
    assert named[1].name == WATER  # a name only one cluster has stays as it is
    assert [named[i].name for i in (2, 3, 4)] == [
        f"{DENSE_VEGETATION} (darkest)",
        f"{DENSE_VEGETATION} (mid-brightness)",
        f"{DENSE_VEGETATION} (brightest)",
    ]
    assert "brightest of the 3 clusters so named" in named[4].rule
    assert {cover_of(named[i].name) for i in (2, 3, 4)} == {DENSE_VEGETATION}
    two = name_clusters({1: dark, 2: bright})
    assert [c.name for c in two] == [
        f"{DENSE_VEGETATION} (darker)",
        f"{DENSE_VEGETATION} (brighter)",
    ]
    five = name_clusters({i: {b: v * (1 + i / 10) for b, v in dark.items()} for i in range(1, 6)})
    assert five[0].name == f"{DENSE_VEGETATION} (brightness 1 of 5)"
    assert cover_of("tailings mud") == "tailings mud"  # a name given by the user stays whole


def test_pixel_covers_follow_the_same_rules_as_cluster_names():
    spectra = [
        dict(blue=0.02, green=0.04, red=0.03, nir=0.30, swir16=0.12, swir22=0.05),
        dict(blue=0.03, green=0.05, red=0.03, nir=0.02, swir16=0.01, swir22=0.01),
        dict(blue=0.2, green=0.28, red=0.35, nir=0.4, swir16=0.45, swir22=0.4),
        CLOUD_SPECTRUM | {"swir22": 0.3},
    ]
    features = ["blue", "green", "red", "nir", "swir16", "swir22"]
    X = np.array([[s[f] for f in features] for s in spectra])
    assert list(pixel_covers(X, features)) == [propose_name(s)[0] for s in spectra]
    assert list(pixel_covers(X, features)) == [DENSE_VEGETATION, WATER, BARE, CLOUD]


def test_one_name_given_to_two_clusters_makes_them_one_cover_told_apart_in_the_legend():
    dark = dict(blue=0.02, green=0.04, red=0.03, nir=0.30, swir16=0.12)
    bright = {b: v * 1.5 for b, v in dark.items()}
    named = name_clusters({4: dark, 5: bright}, {"4": "cropland", "5": "cropland"})
    assert [c.name for c in named] == ["cropland (darker)", "cropland (brighter)"]
    assert {cover_of(c.name) for c in named} == {"cropland"}
    assert all("set in class_names" in c.rule for c in named)


def test_a_class_name_longer_than_a_legend_holds_is_refused():
    NamingSettings(class_names={"3": "x" * 60})
    with pytest.raises(
        ConfigError, match=r"class_names\['3'\] is 5000 characters long: give a name of at most 60"
    ):
        NamingSettings(class_names={"3": "x" * 5000})
