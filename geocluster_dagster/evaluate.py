"""How good is a clustering? Internal scores, elbow curve, agreement with labels, red/NIR density.

Scores whose exact computation is quadratic in the number of pixels (silhouette) run on a
capped, seeded subsample; everything else runs on all given samples, or block by block over
the whole raster for map-level statistics.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from scipy.optimize import linear_sum_assignment

from geocluster_dagster import silhouette
from geocluster_dagster.cluster import (
    NODATA_LABEL,
    ClusterSettings,
    FittedClusterer,
    fit_clusterer,
    n_clusters_of_map,
    sum_over_blocks,
)
from geocluster_dagster.density import (
    DENSITY_BINS,
    NIR_RANGE,
    RED_RANGE,
    DensityGrid,
    block_counts,
)
from geocluster_dagster.errors import BandNotFound, ConfigError
from geocluster_dagster.progress import tracked

#: Label rasters or vectors: numpy, dask or xarray, or a plain sequence of labels.
Labels = np.ndarray | da.Array | xr.DataArray | Sequence[int]


@dataclass(frozen=True)
class ClusterScores:
    """Internal quality scores of a clustering, all measured in the model's feature space."""

    silhouette: float
    """Mean silhouette coefficient (-1..1, higher is better) on a capped seeded subsample."""
    calinski_harabasz: float
    """Calinski-Harabasz index (higher is better) on all samples."""
    davies_bouldin: float
    """Davies-Bouldin index (>= 0, lower is better) on all samples."""
    inertia: float
    """Sum of squared distances to the assigned centre (lower is tighter) on all samples."""
    n_scored: int
    """Number of samples behind calinski_harabasz, davies_bouldin and inertia."""
    n_silhouette: int
    """Number of samples behind silhouette (at most max_silhouette_samples)."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


#: How to read each score: (the better direction and range, what it measures).
SCORE_GUIDE: dict[str, tuple[str, str]] = {
    "silhouette": (
        "higher is better, -1..1",
        "how much nearer each pixel is to its own cluster than to the next (sampled)",
    ),
    "calinski_harabasz": (
        "higher is better, > 0",
        "between-cluster over within-cluster dispersion",
    ),
    "davies_bouldin": (
        "lower is better, >= 0",
        "each cluster's mean similarity to its most similar cluster",
    ),
    "inertia": (
        "lower is tighter; compare only at the same k and sample",
        "sum of squared distances to the assigned centres, in standardised units",
    ),
}


def subsample_index(n: int, max_samples: int, seed: int) -> np.ndarray:
    """Sorted seeded indices of at most max_samples rows out of n."""
    if n <= max_samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))


def _silhouette_input(
    model: FittedClusterer, samples: np.ndarray, max_samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if max_samples < 2:
        raise ConfigError(f"max_silhouette_samples={max_samples} is too small: use at least 2.")
    rows = np.asarray(samples)[subsample_index(len(samples), max_samples, seed)]
    # float64: sklearn measures float32 distances by upcasting chunk by chunk, ~3x slower than
    # the float64 path, for the same accuracy.
    return model.transform(rows).astype(np.float64), model.predict(rows)


def _mean_silhouette(Z: np.ndarray, labels: np.ndarray) -> float:
    if not silhouette.defined(labels):
        return float("nan")
    return float(np.mean(silhouette.silhouette_values(Z, labels)))


def score_clustering(
    model: FittedClusterer,
    samples: np.ndarray,
    *,
    max_silhouette_samples: int = 10_000,
    seed: int = 0,
    silhouettes: tuple[np.ndarray, np.ndarray] | None = None,
) -> ClusterScores:
    """Silhouette (subsampled), Calinski-Harabasz, Davies-Bouldin and inertia of the samples.

    A score that is undefined (fewer than 2 populated clusters) is NaN rather than an error.
    ``silhouettes``: what :func:`silhouette_sample` returned for the same samples, settings and
    seed; the average is then taken from it instead of computing every distance again.
    """
    samples = np.asarray(samples)
    Z, labels = model.transform(samples), model.predict(samples)
    n_populated = len(np.unique(labels))
    if 2 <= n_populated <= len(labels) - 1:
        from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

        calinski = float(calinski_harabasz_score(Z, labels))
        davies = float(davies_bouldin_score(Z, labels))
    else:
        calinski = davies = float("nan")

    if silhouettes is not None:
        values, labels_s = silhouettes
        mean = float(np.mean(values)) if silhouette.defined(labels_s) else float("nan")
    else:
        Zs, labels_s = _silhouette_input(model, samples, max_silhouette_samples, seed)
        mean = _mean_silhouette(Zs, labels_s)
    return ClusterScores(
        silhouette=mean,
        calinski_harabasz=calinski,
        davies_bouldin=davies,
        inertia=model.inertia(samples),
        n_scored=len(samples),
        n_silhouette=len(labels_s),
    )


def silhouette_sample(
    model: FittedClusterer, samples: np.ndarray, *, max_samples: int = 10_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample silhouette values and labels 1..k on the same subsample score_clustering uses.

    With fewer than 2 populated clusters the values are NaN.
    """
    Z, labels = _silhouette_input(model, samples, max_samples, seed)
    if not silhouette.defined(labels):
        return np.full(len(labels), np.nan), labels
    return silhouette.silhouette_values(Z, labels), labels


def elbow_curve(
    samples: np.ndarray,
    k_values: Sequence[int],
    settings: ClusterSettings,
    *,
    max_silhouette_samples: int = 5_000,
    features: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Columns k, inertia, silhouette, cover_agreement: one fit per k with the settings'
    algorithm and seed.

    Inertia is in the standardised feature space, which is the same for every k (the scaler
    depends only on the samples), so the values are comparable along the curve.
    ``cover_agreement`` (with the band names of the samples' columns as ``features``, NaN
    without them) is the share of the samples whose cluster has the land cover of the pixel
    itself: both named by the same index rules (:func:`geocluster_dagster.naming.pixel_covers`),
    the cluster from its centre.
    """
    from .naming import cover_of, name_clusters, pixel_covers

    samples = np.asarray(samples)
    if len(k_values) == 0:
        raise ConfigError("k_values is empty: pass the cluster counts to try, e.g. range(2, 11).")
    names = list(features) if features else [f"feature_{i}" for i in range(samples.shape[1])]
    distances = _SharedDistances()
    own = pixel_covers(samples, names) if {"red", "nir"} <= set(names) else None

    def point(k: int) -> dict[str, float]:
        model = fit_clusterer(samples, names, replace(settings, n_clusters=k))
        Zs, labels = _silhouette_input(model, samples, max_silhouette_samples, settings.seed)
        mean = distances.mean_silhouette(Zs, labels)
        agreement = float("nan")
        if own is not None:
            centres = {
                int(i): dict(zip(names, map(float, row), strict=True))
                for i, row in zip(model.ids, model.centers(), strict=True)
            }
            cover = {c.id: cover_of(c.name) for c in name_clusters(centres)}
            ids = model.predict(samples)
            lookup = np.array([cover.get(i, "") for i in range(int(ids.max()) + 1)], object)
            agreement = float(np.mean(lookup[ids] == own))
        return {
            "k": k,
            "inertia": model.inertia(samples),
            "silhouette": mean,
            "cover_agreement": agreement,
        }

    # The fits are independent and spend their time in numpy/BLAS, which release the GIL:
    # one thread per core, same numbers as fitting one k after the other (benchmarks/README.md).
    ks = sorted(set(int(k) for k in k_values))
    with ThreadPoolExecutor(max_workers=min(len(ks), os.cpu_count() or 1)) as pool:
        rows = list(
            tracked(pool.map(point, ks), "fitting the elbow curve", total=len(ks), unit="k")
        )
    curve: pd.DataFrame = pd.DataFrame(
        rows, columns=["k", "inertia", "silhouette", "cover_agreement"]
    )
    return curve


class _SharedDistances:
    """The silhouettes of one elbow curve from one distance matrix.

    Every k scores the same subsample in the same standardised space (the scaler, and a PCA,
    depend only on the samples), so the pairwise distances are the same for every k: computed
    once, each k's silhouette comes from the matrix, the same number as from the features
    and an order of magnitude faster. The matrix is reused only for features
    equal to the ones it was computed from.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._features: np.ndarray | None = None
        self._matrix = np.empty((0, 0))

    def mean_silhouette(self, Z: np.ndarray, labels: np.ndarray) -> float:
        if not silhouette.defined(labels):
            return float("nan")
        from sklearn.metrics import pairwise_distances

        with self._lock:
            if self._features is None or not np.array_equal(self._features, Z):
                self._matrix = pairwise_distances(Z)
                self._features = Z
            matrix = self._matrix
        return float(np.mean(silhouette.silhouette_from_distances(matrix, labels)))


#: Pixels (a seeded subset of the fit sample) the elbow curve refits the estimator on.
ELBOW_SAMPLE_SIZE = 20_000


#: How close to the best cover agreement of the curve a k must come to be chosen: one
#: percentage point, about the sampling error of a share near 0.9 on the elbow's 20,000 pixels
#: (2 x sqrt(0.9 x 0.1 / 20000) = 0.004) with room for the fits' own variation between k.
COVER_AGREEMENT_TOLERANCE = 0.01


@dataclass(frozen=True)
class KChoice:
    """The number of clusters n_clusters: auto chose, and why."""

    chosen: int
    knee: int | None
    """The elbow curve's knee (kneed's Kneedle on inertia against k), None if it has none."""
    silhouette_best: int
    """The k of the highest sampled mean silhouette (the smaller k on a tie)."""
    reason: str
    k_values: tuple[int, ...]
    cover_best: int | None = None
    """The smallest k whose clusters agree with their pixels' own land covers within
    :data:`COVER_AGREEMENT_TOLERANCE` of the best k; None without red and NIR bands."""

    @property
    def disagree(self) -> bool:
        """The knee and the silhouette are more than one cluster apart."""
        return self.knee is not None and abs(self.knee - self.silhouette_best) > 1

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "disagree": self.disagree}


def k_candidates(curve: pd.DataFrame) -> tuple[int | None, int]:
    """(knee, silhouette-best k) of an :func:`elbow_curve`."""
    curve = curve.sort_values("k")
    ks = [int(k) for k in curve["k"]]
    # kneed imports matplotlib (for its plots) when it is imported: only when a knee is sought.
    from kneed import KneeLocator

    knee = None
    if len(ks) >= 3:
        # Inertia falls with k and flattens: a convex, decreasing curve (Satopaa et al. 2011).
        located = KneeLocator(ks, curve["inertia"], curve="convex", direction="decreasing").knee
        knee = None if located is None else int(located)
    silhouettes = curve["silhouette"].to_numpy(dtype=float)
    best = ks[int(np.nanargmax(silhouettes))] if np.isfinite(silhouettes).any() else ks[0]
    return knee, best


def cover_best_k(curve: pd.DataFrame) -> int | None:
    """The smallest k whose cover agreement is within :data:`COVER_AGREEMENT_TOLERANCE` of the
    curve's best; None when the curve has no agreement (no red or NIR band)."""
    if "cover_agreement" not in curve or curve["cover_agreement"].isna().all():
        return None
    curve = curve.dropna(subset=["cover_agreement"]).sort_values("k")
    good = curve["cover_agreement"] >= curve["cover_agreement"].max() - COVER_AGREEMENT_TOLERANCE
    return int(curve.loc[good, "k"].iloc[0])


def choose_k(curve: pd.DataFrame) -> KChoice:
    """k from an elbow curve: the fewest clusters that separate the land covers, else the knee.

    Clusters are named by land cover, and a cluster holding two covers (a rare one, such as a
    fresh mudflow, inside a common one) hides the rarer one from the map and from change. So k
    is the smallest k whose clusters agree with the covers of their own pixels (the same index
    rules, per pixel) about as well as any k tried (:func:`cover_best_k`). The knee (where more
    clusters stop paying off in inertia) and the silhouette (which favours a few
    well-separated groups, water against the rest) are recorded beside it; the knee decides
    when the bands cannot be named (no red or NIR), and the silhouette when there is no knee.
    """
    knee, best = k_candidates(curve)
    ks = tuple(int(k) for k in sorted(curve["k"]))
    by_cover = cover_best_k(curve)
    if by_cover is not None:
        agreement = float(curve.loc[curve["k"] == by_cover, "cover_agreement"].iloc[0])
        reason = (
            f"k={by_cover}: the fewest clusters whose land covers agree with their pixels' own "
            f"({agreement:.1%}) within {COVER_AGREEMENT_TOLERANCE:.0%} of the best k; elbow "
            f"knee at k={knee}, best silhouette at k={best}"
        )
        return KChoice(by_cover, knee, best, reason, ks, by_cover)
    if knee is None:
        return KChoice(best, None, best, "no knee in the elbow curve: highest silhouette", ks)
    if abs(knee - best) <= 1:
        reason = f"elbow knee at k={knee}, the silhouette agrees (best at k={best})"
    else:
        reason = (
            f"elbow knee at k={knee}; the silhouette is best at k={best}, more than one away: "
            "look at the elbow plot, or set n_clusters"
        )
    return KChoice(knee, knee, best, reason, ks)


# --------------------------------------------------------------------------------------------
# Agreement with reference labels, from a contingency table built block by block
# --------------------------------------------------------------------------------------------


def _pair_contingency(
    cluster_labels: Labels, reference_labels: Labels
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contingency table (reference x cluster) over pixels with both labels non-zero, plus the
    reference and cluster label values of its rows and columns (empty ones dropped)."""
    cluster_labels = _as_2d_labels(cluster_labels)
    reference_labels = _as_2d_labels(reference_labels)
    n_cluster = _n_label_values(cluster_labels)
    n_reference = _n_label_values(reference_labels)

    def block_table(clusters: np.ndarray, references: np.ndarray) -> np.ndarray:
        clusters = clusters.ravel().astype(np.int64)
        references = references.ravel().astype(np.int64)
        keep = (clusters > NODATA_LABEL) & (references > 0)
        pairs = references[keep] * n_cluster + clusters[keep]
        return np.bincount(pairs, minlength=n_reference * n_cluster).reshape(n_reference, n_cluster)

    table = sum_over_blocks(
        block_table, [cluster_labels, reference_labels], (n_reference, n_cluster), np.int64
    )
    rows, cols = np.flatnonzero(table.sum(axis=1)), np.flatnonzero(table.sum(axis=0))
    return table[np.ix_(rows, cols)], rows, cols


def _as_2d_labels(labels: Labels) -> np.ndarray | da.Array:
    data = labels.data if isinstance(labels, xr.DataArray) else labels
    array: np.ndarray | da.Array = data if isinstance(data, da.Array) else np.asarray(data)
    if array.ndim == 1:  # label vectors (e.g. sampled pixels) are a 1-row raster
        array = array[np.newaxis]
    return array


def _n_label_values(labels: np.ndarray | da.Array) -> int:
    """Size of the label alphabet 0..max; uint8 maps need no extra pass over the data."""
    if labels.dtype == np.uint8:
        return 256
    if not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"labels must be integers (got {labels.dtype}); 0 marks unlabelled.")
    maximum = labels.max()
    maximum = int(maximum.compute() if hasattr(maximum, "compute") else maximum)
    return max(maximum, 0) + 1


def _adjusted_rand_from_table(table: np.ndarray) -> float:
    """Adjusted Rand index from a contingency table (same formula as sklearn's)."""
    table = table.astype(np.float64)
    n = table.sum()
    sum_squares = (table**2).sum()
    both_same = sum_squares - n
    same_cluster_only = (table.sum(axis=0) ** 2).sum() - sum_squares
    same_class_only = (table.sum(axis=1) ** 2).sum() - sum_squares
    neither = n**2 - same_cluster_only - same_class_only - sum_squares
    if same_cluster_only == 0 and same_class_only == 0:
        return 1.0
    return float(
        2.0
        * (both_same * neither - same_class_only * same_cluster_only)
        / (
            (both_same + same_class_only) * (same_class_only + neither)
            + (both_same + same_cluster_only) * (same_cluster_only + neither)
        )
    )


def _entropy_from_counts(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _normalized_mutual_info_from_table(table: np.ndarray) -> float:
    """NMI with the arithmetic-mean normaliser, as sklearn's default."""
    if table.shape[0] == table.shape[1] == 1:
        return 1.0
    from sklearn.metrics import mutual_info_score

    mutual_info = mutual_info_score(None, None, contingency=table)
    if mutual_info == 0:
        return 0.0
    normaliser = 0.5 * (
        _entropy_from_counts(table.sum(axis=1)) + _entropy_from_counts(table.sum(axis=0))
    )
    return float(mutual_info / normaliser)


def label_agreement(cluster_labels: Labels, reference_labels: Labels) -> dict[str, Any]:
    """ARI, NMI and Hungarian-matched accuracy of a cluster map against reference labels.

    Pixels with reference <= 0 (unlabelled) or cluster 0 (nodata) are ignored. Accepts numpy,
    dask or xarray label rasters (or 1-D label vectors); dask inputs are read block by block.
    Returns ``ari``, ``nmi``, ``matched_accuracy`` and ``n_pixels`` (pixels compared) plus
    ``matching`` ({cluster: reference class} of the one-to-one matching).
    """
    table, reference_ids, cluster_ids = _pair_contingency(cluster_labels, reference_labels)
    n_pixels = int(table.sum())
    if n_pixels == 0:
        nan = float("nan")
        return {"ari": nan, "nmi": nan, "matched_accuracy": nan, "n_pixels": 0, "matching": {}}
    # One-to-one matching of clusters to classes that maximises the matched pixels; with more
    # clusters than classes the unmatched clusters count as errors.
    rows, cols = linear_sum_assignment(table, maximize=True)
    matching = zip(cluster_ids[cols], reference_ids[rows], strict=True)
    return {
        "ari": _adjusted_rand_from_table(table),
        "nmi": _normalized_mutual_info_from_table(table),
        "matched_accuracy": float(table[rows, cols].sum() / n_pixels),
        "n_pixels": n_pixels,
        "matching": {int(cluster): int(reference) for cluster, reference in matching},
    }


# --------------------------------------------------------------------------------------------
# Red / NIR feature space per cluster
# --------------------------------------------------------------------------------------------


def red_nir_density(
    ds: xr.Dataset,
    cluster_map: xr.DataArray,
    *,
    bins: int = DENSITY_BINS,
    red_range: tuple[float, float] = RED_RANGE,
    nir_range: tuple[float, float] = NIR_RANGE,
    n_clusters: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-D histogram of (red, nir) per cluster over all valid pixels, block by block.

    Returns ``counts`` of shape (k, bins, bins) where ``counts[c - 1, i, j]`` is the number of
    pixels of cluster c with red in bin i and nir in bin j, plus the red and nir bin edges.
    Pixels outside the ranges, with NaN red/nir or cluster 0 are not counted
    (:func:`geocluster_dagster.density.block_counts`).
    """
    for band in ("red", "nir"):
        if band not in ds.data_vars:
            raise BandNotFound(
                f"band {band!r} is needed for the red/NIR density but the dataset has only "
                f"{', '.join(map(str, ds.data_vars))}; load it with the composite."
            )
    if bins < 1 or red_range[1] <= red_range[0] or nir_range[1] <= nir_range[0]:
        raise ConfigError(
            f"bins={bins}, red_range={red_range}, nir_range={nir_range}: use bins >= 1 and "
            "ranges with low < high."
        )
    k = n_clusters_of_map(cluster_map, n_clusters)
    grid = DensityGrid(bins, red_range, nir_range)
    arrays = [cluster_map, *(ds[band].transpose(*cluster_map.dims) for band in ("red", "nir"))]
    counts = sum_over_blocks(
        functools.partial(block_counts, grid=grid, k=k), arrays, (k, bins, bins), np.int64
    )
    return counts, grid.red_edges, grid.nir_edges
