"""The silhouette's per-cluster sums as one matrix product give sklearn's values exactly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import pairwise_distances, silhouette_samples

from geocluster_dagster import silhouette
from geocluster_dagster.silhouette import silhouette_from_distances, silhouette_values


@pytest.fixture(scope="module")
def pixels() -> tuple[np.ndarray, np.ndarray]:
    """Three overlapping groups, a cluster of two pixels, one pixel alone, labels not 0..k-1."""
    rng = np.random.default_rng(7)
    features = np.vstack(
        [rng.normal(centre, 1.0, size=(n, 5)) for centre, n in ((0, 900), (2, 700), (5, 400))]
    )
    labels = np.repeat([3, 8, 12], [900, 700, 400])
    labels[[10, 11]] = 40
    labels[500] = 99
    return features, labels


def test_values_equal_sklearns_from_features(pixels):
    features, labels = pixels
    expected = silhouette_samples(features, labels)
    got = silhouette_values(features, labels)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert got[500] == 0.0  # alone in its cluster: sklearn's convention


def test_values_equal_sklearns_from_a_distance_matrix(pixels):
    features, labels = pixels
    distances = pairwise_distances(features)
    expected = silhouette_samples(distances, labels, metric="precomputed")
    np.testing.assert_allclose(
        silhouette_from_distances(distances, labels), expected, rtol=0, atol=1e-12
    )


def test_slices_of_the_distance_matrix_change_nothing(pixels, monkeypatch):
    features, labels = pixels
    monkeypatch.setattr(silhouette, "WORKING_MEMORY_MB", 1)  # slices of ~60 rows
    np.testing.assert_allclose(
        silhouette_values(features, labels), silhouette_samples(features, labels), atol=1e-12
    )


def test_defined_only_for_two_to_n_minus_one_clusters():
    assert not silhouette.defined(np.array([1, 1, 1]))
    assert not silhouette.defined(np.array([1, 2, 3]))
    assert silhouette.defined(np.array([1, 1, 2]))
