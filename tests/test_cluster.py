"""Tests of geocluster_dagster.cluster on the real Landsat 7 LEDAPS stacks of shared/data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401
import xarray as xr
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from geocluster_dagster.cluster import (
    ClusterSettings,
    LabelledBlocks,
    _make_estimator,
    cluster_signatures,
    fit_clusterer,
    pixel_area_m2,
    predict_map,
    sample_valid_pixels,
)
from geocluster_dagster.density import DensityGrid
from geocluster_dagster.errors import (
    BandNotFound,
    ConfigError,
    NoClearPixels,
    TooFewPixels,
)
from geocluster_dagster.evaluate import red_nir_density

from .helpers import REFLECTANCE, STACK_1999, STACK_2002, landsat7_dataset


@pytest.fixture(scope="module")
def ds_1999():
    return landsat7_dataset(STACK_1999)


@pytest.fixture(scope="module")
def ds_2002_masked():
    return landsat7_dataset(STACK_2002, mask_clouds=True)


@pytest.fixture(scope="module")
def model_1999(ds_1999):
    settings = ClusterSettings(n_clusters=5, sample_size=20_000, seed=0)
    samples = sample_valid_pixels(ds_1999, REFLECTANCE, settings.sample_size, settings.seed)
    return fit_clusterer(samples, REFLECTANCE, settings)


# ---------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"n_clusters": 1}, "n_clusters"),
        ({"n_clusters": 255}, "n_clusters"),
        ({"n_clusters": 2.5}, "n_clusters"),
        ({"algorithm": "dbscan"}, "algorithm"),
        ({"pca_components": 0}, "pca_components"),
        ({"sample_size": 0}, "sample_size"),
        ({"n_clusters": 10, "sample_size": 5}, "sample_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_settings_raise_config_error_naming_the_field(kwargs, field_name):
    with pytest.raises(ConfigError, match=field_name):
        ClusterSettings(**kwargs)


def test_pca_components_above_feature_count_is_a_config_error(ds_1999):
    samples = sample_valid_pixels(ds_1999, ["red", "nir"], 500, 0)
    with pytest.raises(ConfigError, match="pca_components"):
        fit_clusterer(samples, ["red", "nir"], ClusterSettings(n_clusters=3, pca_components=3))


# ---------------------------------------------------------------------------------- sampling


def test_sample_is_deterministic_and_depends_on_seed(ds_2002_masked):
    first = sample_valid_pixels(ds_2002_masked, REFLECTANCE, 3_000, seed=7)
    again = sample_valid_pixels(ds_2002_masked, REFLECTANCE, 3_000, seed=7)
    other = sample_valid_pixels(ds_2002_masked, REFLECTANCE, 3_000, seed=8)
    assert first.shape == (3_000, 6) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.isfinite(first).all()


def test_sample_is_without_replacement_and_capped_at_valid_pixels(ds_2002_masked):
    direct = np.stack([ds_2002_masked[b].values.ravel() for b in REFLECTANCE], axis=1)
    valid_rows = direct[np.isfinite(direct).all(axis=1)]
    everything = sample_valid_pixels(ds_2002_masked, REFLECTANCE, 10**9, seed=0)
    assert len(everything) == len(valid_rows) < direct.shape[0]  # clouds were left out
    # Every valid pixel exactly once: compare the two row multisets.
    np.testing.assert_array_equal(
        np.unique(everything, axis=0, return_counts=True)[1],
        np.unique(valid_rows, axis=0, return_counts=True)[1],
    )


def test_sample_is_uniform_over_the_whole_raster(ds_2002_masked):
    """A seeded sample of 5 000 of the ~45 700 clear pixels has each band's mean within 4
    standard errors of the population mean; a sample biased to some blocks would not."""
    sample = sample_valid_pixels(ds_2002_masked, REFLECTANCE, 5_000, seed=3)
    direct = np.stack([ds_2002_masked[b].values.ravel() for b in REFLECTANCE], axis=1)
    population = direct[np.isfinite(direct).all(axis=1)]
    standard_error = population.std(axis=0) / np.sqrt(len(sample))
    assert np.all(np.abs(sample.mean(axis=0) - population.mean(axis=0)) < 4 * standard_error)


def test_missing_feature_names_the_band_and_the_available_ones(ds_1999):
    with pytest.raises(BandNotFound, match="'ndvi'") as excinfo:
        sample_valid_pixels(ds_1999, ["red", "ndvi"], 100, 0)
    assert "swir16" in str(excinfo.value)


def test_all_masked_raster_raises_no_clear_pixels(ds_1999):
    masked = ds_1999.where(False)
    with pytest.raises(
        NoClearPixels, match="raise max_cloud_cover .stac_items., use longer date windows"
    ):
        sample_valid_pixels(masked, REFLECTANCE, 100, 0)


# ---------------------------------------------------------------------------------- fitting


def test_more_clusters_than_valid_pixels_raises_too_few_pixels(ds_1999):
    keep = np.zeros((ds_1999.sizes["y"], ds_1999.sizes["x"]), dtype=bool)
    keep[100, 100:103] = True
    sparse = ds_1999.where(xr.DataArray(keep, dims=("y", "x")))
    samples = sample_valid_pixels(sparse, REFLECTANCE, 1_000, 0)
    assert len(samples) == 3
    with pytest.raises(TooFewPixels, match=r"n_clusters=5.*3 valid pixels"):
        fit_clusterer(samples, REFLECTANCE, ClusterSettings(n_clusters=5))


def test_more_clusters_than_distinct_spectra_raises_too_few_pixels():
    samples = np.tile(np.array([[0.1, 0.3], [0.2, 0.1]], dtype=np.float32), (50, 1))
    with pytest.raises(TooFewPixels, match="2 distinct"):
        fit_clusterer(samples, ["red", "nir"], ClusterSettings(n_clusters=3))
    # -0.0 is the same spectrum as 0.0, however far down the sample the third one comes
    late = np.vstack([samples, np.tile([[0.1, -0.0], [0.1, 0.0]], (400, 1))]).astype(np.float32)
    with pytest.raises(TooFewPixels, match="3 distinct"):
        fit_clusterer(late, ["red", "nir"], ClusterSettings(n_clusters=4))
    assert fit_clusterer(late, ["red", "nir"], ClusterSettings(n_clusters=3)).n_clusters == 3


@pytest.mark.parametrize(
    "algorithm", ["minibatch_kmeans", "kmeans", "bisecting_kmeans", "gaussian_mixture"]
)
@pytest.mark.parametrize("pca_components", [None, 3])
def test_every_algorithm_fits_and_orders_clusters_dark_to_bright(
    ds_1999, algorithm, pca_components
):
    settings = ClusterSettings(
        n_clusters=4, algorithm=algorithm, pca_components=pca_components, sample_size=5_000
    )
    samples = sample_valid_pixels(ds_1999, REFLECTANCE, settings.sample_size, settings.seed)
    model = fit_clusterer(samples, REFLECTANCE, settings)
    labels = model.predict(samples)
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) == {1, 2, 3, 4}
    assert model.transform(samples).shape == (len(samples), pca_components or 6)
    centers = model.centers()
    assert centers.shape == (4, 6)
    brightness = ((centers - model.scale_mean) / model.scale).mean(axis=1)
    assert np.all(np.diff(brightness) > 0)
    assert model.inertia(samples) > 0


def _sklearn_pipeline(samples, settings):
    """The scikit-learn pipeline fit_clusterer fits, fitted the same way, for comparison."""
    steps = [("scale", StandardScaler())]
    if settings.pca_components:
        steps.append(("pca", PCA(n_components=settings.pca_components, random_state=settings.seed)))
    steps.append(("cluster", _make_estimator(settings)))
    return Pipeline(steps).fit(samples)


def test_inertia_is_the_kmeans_inertia_in_model_space(ds_1999):
    settings = ClusterSettings(n_clusters=5, algorithm="kmeans", sample_size=5_000)
    samples = sample_valid_pixels(ds_1999, REFLECTANCE, settings.sample_size, 0)
    model = fit_clusterer(samples, REFLECTANCE, settings)
    reference = _sklearn_pipeline(samples, settings)
    assert model.inertia(samples) == pytest.approx(reference[-1].inertia_, rel=1e-3)


@pytest.mark.parametrize(
    ("algorithm", "pca_components", "agreement"),
    [
        ("minibatch_kmeans", None, 1.0),
        ("kmeans", 3, 1.0),
        ("gaussian_mixture", None, 1.0),
        ("gaussian_mixture", 3, 1.0),
        # scikit-learn descends BisectingKMeans' tree of splits, the plain model takes the
        # nearest final centre: pixels near a boundary drawn by an early split differ (3.7 % here)
        ("bisecting_kmeans", None, 0.95),
    ],
)
def test_the_plain_model_predicts_what_scikit_learn_predicts(
    ds_1999, algorithm, pca_components, agreement
):
    settings = ClusterSettings(
        n_clusters=5, algorithm=algorithm, pca_components=pca_components, sample_size=5_000
    )
    samples = sample_valid_pixels(ds_1999, REFLECTANCE, settings.sample_size, 0)
    ours = fit_clusterer(samples, REFLECTANCE, settings).predict(samples)
    theirs = _sklearn_pipeline(samples, settings).predict(samples)
    # the same partition of the pixels, up to the darkest-first renumbering
    matches = sum(np.bincount(ours[theirs == raw]).max() for raw in np.unique(theirs))
    assert matches / len(samples) >= agreement * 0.9999


def test_same_seed_same_model_other_seed_other_sample(ds_1999):
    settings = ClusterSettings(n_clusters=5, sample_size=5_000, seed=1)
    first = sample_valid_pixels(ds_1999, REFLECTANCE, settings.sample_size, settings.seed)
    second = sample_valid_pixels(ds_1999, REFLECTANCE, settings.sample_size, settings.seed)
    a = fit_clusterer(first, REFLECTANCE, settings)
    b = fit_clusterer(second, REFLECTANCE, settings)
    np.testing.assert_array_equal(a.centers(), b.centers())
    np.testing.assert_array_equal(predict_map(ds_1999, a).values, predict_map(ds_1999, b).values)


# ---------------------------------------------------------------------------------- maps


@pytest.mark.parametrize("dask", [False, True])
def test_predict_map_chunked_equals_in_memory(ds_2002_masked, dask):
    samples = sample_valid_pixels(ds_2002_masked, REFLECTANCE, 10_000, 0)
    model = fit_clusterer(samples, REFLECTANCE, ClusterSettings(n_clusters=5))
    ds = ds_2002_masked if dask else ds_2002_masked.compute()

    cluster_map = predict_map(ds, model)
    assert (cluster_map.chunks is not None) == dask
    assert cluster_map.dims == ("y", "x") and cluster_map.dtype == np.uint8
    assert cluster_map.name == "cluster" and cluster_map.attrs["nodata"] == 0
    assert cluster_map.rio.crs == ds_2002_masked.rio.crs
    np.testing.assert_array_equal(cluster_map.x, ds.x)

    pixels = np.stack([ds_2002_masked[b].values.ravel() for b in REFLECTANCE], axis=1)
    valid = np.isfinite(pixels).all(axis=1)
    expected = np.zeros(len(pixels), dtype=np.uint8)
    expected[valid] = model.predict(pixels[valid])
    values = cluster_map.values.ravel()
    np.testing.assert_array_equal(values, expected)
    assert (values[~valid] == 0).all() and (values[valid] >= 1).all()


@pytest.mark.parametrize("dask", [False, True])
def test_cluster_signatures_match_a_direct_numpy_computation(ds_2002_masked, model_1999, dask):
    ds = ds_2002_masked if dask else ds_2002_masked.compute()
    cluster_map = predict_map(ds, model_1999)
    # One more cluster than the model has: an empty cluster must still get its row.
    table = cluster_signatures(ds, cluster_map, pixel_area_m2(ds), n_clusters=6)

    labels = cluster_map.values
    assert list(table["cluster"]) == [1, 2, 3, 4, 5, 6]
    for row in table.itertuples():
        in_cluster = labels == row.cluster
        assert row.pixel_count == in_cluster.sum()
        assert row.area_ha == pytest.approx(in_cluster.sum() * 900 / 10_000)
        for name in [*REFLECTANCE, "lwir"]:  # lwir is not a feature but is summarised too
            values = ds_2002_masked[name].values[in_cluster]
            if row.pixel_count == 0:
                assert np.isnan(getattr(row, f"{name}_mean"))
                continue
            assert getattr(row, f"{name}_mean") == pytest.approx(np.nanmean(values), rel=1e-6)
            assert getattr(row, f"{name}_std") == pytest.approx(np.nanstd(values), rel=1e-4)
    assert table["pixel_count"].iloc[-1] == 0
    assert table["fraction"].sum() == pytest.approx(1.0)


def test_signatures_ignore_nan_per_variable(ds_1999, model_1999):
    cluster_map = predict_map(ds_1999, model_1999)
    ds = ds_1999.assign(lwir=ds_1999["lwir"].where(ds_1999.x < ds_1999.x.mean()))
    table = cluster_signatures(ds, cluster_map, None)
    labels, lwir = cluster_map.values, ds["lwir"].values
    for row in table.itertuples():
        assert row.lwir_mean == pytest.approx(np.nanmean(lwir[labels == row.cluster]), rel=1e-6)
    assert table["area_ha"].isna().all()


def test_labelled_blocks_give_predict_maps_labels_and_the_signatures_in_one_read(
    ds_2002_masked, model_1999, tmp_path
):
    import threading

    import dask

    from geocluster_dagster.export import write_cog

    reads, lock = [], threading.Lock()

    def counted(block):
        with lock:
            reads.append(block.shape)
        return block

    # Every variable read through a counter: one pass must read each of its blocks once.
    counted_ds = ds_2002_masked.map(
        lambda var: var.copy(data=var.data.map_blocks(counted, meta=np.array((), var.dtype)))
    )
    labelled = LabelledBlocks(counted_ds, model_1999, density=DensityGrid(bins=64))
    with pytest.raises(RuntimeError, match="write them first"):
        labelled.signatures(900.0)
    expected_map = predict_map(ds_2002_masked, model_1999)
    with dask.config.set(scheduler="threads"):
        write_cog(expected_map, tmp_path / "map.tif", cog=True, nodata=0, blocks=labelled)
    blocks_per_variable = ds_2002_masked["red"].data.npartitions
    assert len(reads) == blocks_per_variable * len(ds_2002_masked.data_vars)

    with rasterio.open(tmp_path / "map.tif") as src:
        np.testing.assert_array_equal(src.read(1), expected_map.values)
    expected = cluster_signatures(ds_2002_masked, expected_map, 900.0)
    got = labelled.signatures(900.0)
    # ... plus each cluster's confidence, which only the labelling pass knows
    confidence = ["confidence_mean", "low_confidence_share"]
    assert list(got.columns) == [*expected.columns, *confidence]
    plain = got.drop(columns=confidence)
    np.testing.assert_allclose(plain.to_numpy(float), expected.to_numpy(float), rtol=1e-9)
    assert got["confidence_mean"].between(0, 1).all()
    # The red-vs-NIR density came from the same reads: the counts of the written map.
    density, _, _ = red_nir_density(
        ds_2002_masked, expected_map, bins=64, n_clusters=model_1999.max_id
    )
    assert density.sum() > 0.5 * np.isfinite(ds_2002_masked["red"].values).sum()
    np.testing.assert_array_equal(labelled.red_nir_density(), density)


def test_labelled_blocks_name_a_missing_feature(ds_2002_masked, model_1999):
    with pytest.raises(BandNotFound, match="'nir'"):
        LabelledBlocks(ds_2002_masked.drop_vars("nir"), model_1999)


def test_pixel_area_is_known_only_for_metric_projected_crs(ds_1999):
    assert pixel_area_m2(ds_1999) == pytest.approx(900.0)
    geographic = ds_1999.rio.write_crs("EPSG:4326")
    assert pixel_area_m2(geographic) is None
    assert pixel_area_m2(ds_1999.drop_vars("spatial_ref")) is None


# ---------------------------------------------------------------------------------- files


def test_importing_the_science_modules_does_not_import_matplotlib():
    code = (
        "import sys, geocluster_dagster.cluster, geocluster_dagster.evaluate; "
        "sys.exit('matplotlib' in sys.modules)"
    )
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
