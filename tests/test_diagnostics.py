"""What the diagnostics say about the k a map was made with."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from geocluster_dagster.density import DensityGrid
from geocluster_dagster.products.clusters import StoredClusters
from geocluster_dagster.products.diagnostics import k_advice


def test_a_k_away_from_the_knee_is_pointed_out_with_what_to_try():
    advice = k_advice(6, 4, 4)
    assert advice.startswith("k=6 was used") and "try n_clusters: 4, or n_clusters: auto" in advice


def test_a_k_at_the_knee_and_a_curve_without_one():
    assert k_advice(4, 4, 3).startswith("k=4 is at the elbow's knee")
    assert "no knee" in k_advice(5, None, 2) and "k=2" in k_advice(5, None, 2)


def test_the_stored_elbow_is_reused_only_for_the_same_k_and_subset(tmp_path):
    curve = pd.DataFrame({"k": [2, 3, 4], "inertia": [9.0, 4.0, 3.0], "silhouette": [0.5] * 3})

    def stored(elbow, sample_size):
        return StoredClusters(
            directory=tmp_path,
            cluster_map=None,  # type: ignore[arg-type]  # not used here
            model=None,  # type: ignore[arg-type]
            signatures=pd.DataFrame(),
            sample=None,  # type: ignore[arg-type]
            summary={"elbow_sample_size": sample_size},
            elbow=elbow,
        )

    assert stored(curve, 20_000).elbow_for([2, 3, 4], 20_000) is curve
    assert stored(curve, 20_000).elbow_for([2, 3, 4, 5], 20_000) is None  # other k
    assert stored(curve, 20_000).elbow_for([2, 3, 4], 5_000) is None  # other subset
    assert stored(None, None).elbow_for([2, 3, 4], 20_000) is None  # a given k: no curve


def test_the_stored_density_is_reused_only_for_its_own_grid_and_model(tmp_path):
    counts = np.arange(3 * 4 * 4).reshape(3, 4, 4)

    def stored(grid, max_id=3):
        return StoredClusters(
            directory=tmp_path,
            cluster_map=None,  # type: ignore[arg-type]  # not used here
            model=SimpleNamespace(max_id=max_id),  # type: ignore[arg-type]
            signatures=pd.DataFrame(),
            sample=None,  # type: ignore[arg-type]
            summary={"red_nir_density": grid.as_dict() if grid else None},
            density=counts if grid else None,
        )

    assert stored(DensityGrid(bins=4)).density_for(DensityGrid(bins=4)) is counts
    assert stored(DensityGrid(bins=4)).density_for(DensityGrid(bins=8)) is None  # other bins
    other_range = DensityGrid(bins=4, red_range=(0.0, 0.3))
    assert stored(DensityGrid(bins=4)).density_for(other_range) is None
    assert stored(DensityGrid(bins=4), max_id=4).density_for(DensityGrid(bins=4)) is None
    assert stored(None).density_for(DensityGrid(bins=4)) is None  # an older product
