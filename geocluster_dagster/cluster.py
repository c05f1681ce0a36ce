"""Unsupervised clustering of per-pixel spectral signatures, chunk by chunk.

The model is fitted on a seeded, uniform sample of valid pixels (a pixel is valid when every
feature is finite), then applied block by block to the whole raster. Labels run 1..k in a
deterministic order (darkest cluster first); 0 is reserved for nodata.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import dask.array as da
import numpy as np
import pandas as pd
import pyproj
import rioxarray  # noqa: F401  (registers the .rio accessor used by pixel_area_m2)
import xarray as xr

from geocluster_dagster.bands import REFLECTANCE_BANDS
from geocluster_dagster.blocks import iter_blocks
from geocluster_dagster.density import DensityGrid, block_counts
from geocluster_dagster.errors import (
    BandNotFound,
    ConfigError,
    NoClearPixels,
    TooFewPixels,
)
from geocluster_dagster.fields import described
from geocluster_dagster.progress import tracked
from geocluster_dagster.storage import location

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

Algorithm = Literal["minibatch_kmeans", "kmeans", "bisecting_kmeans", "gaussian_mixture"]
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)

# uint8 labels with 0 reserved for nodata; 255 stays free for callers that need a second flag.
MAX_CLUSTERS = 254
NODATA_LABEL = 0

#: A label is confident when its simplified silhouette is above 0.25: Kaufman & Rousseeuw
#: (1990, *Finding Groups in Data*, p. 88) read a silhouette of 0.25 or less as "no substantial
#: structure", i.e. the pixel sits about as near another cluster as its own.
CONFIDENT_SILHOUETTE = 0.25
#: The confidence layer stores each pixel's simplified silhouette (see
#: :meth:`FittedClusterer.predict_with_confidence`) as a uint8 percentage, 0-100; 255 is nodata.
CONFIDENCE_NODATA = 255


@dataclass(frozen=True)
class ClusterSettings:
    """How to cluster the pixels of one composite."""

    n_clusters: int | Literal["auto"] = described(
        "auto",
        "'auto' (default): k chosen between auto_k_min and auto_k_max from the elbow curve's "
        "knee and the sampled silhouette; or a fixed number of clusters k (2..254; labels in "
        "the map run 1..k, 0 is nodata).",
    )
    auto_k_min: int = described(2, "With n_clusters: auto, the smallest k tried.")
    auto_k_max: int = described(12, "With n_clusters: auto, the largest k tried.")
    algorithm: Algorithm = described(
        "minibatch_kmeans",
        "Estimator: minibatch_kmeans (fast, default), kmeans, bisecting_kmeans (applied as "
        "nearest centre, like the others) or gaussian_mixture.",
    )
    pca_components: int | None = described(
        None,
        "Reduce the standardised features to this many principal components first; None = no PCA.",
    )
    sample_size: int = described(
        200_000,
        "Valid pixels drawn (seeded, uniformly over the raster) to fit the "
        "model; every pixel is then predicted.",
    )
    seed: int = described(
        0, "Seed of the pixel sample and the estimator: same seed and inputs give the same map."
    )
    features: tuple[str, ...] = described(
        (),
        "GeoTIFF bands used as features; empty = the reflectance bands (no thermal, no indices).",
    )

    def __post_init__(self) -> None:
        auto = self.n_clusters == "auto"
        given = int(self.n_clusters) if _is_int(self.n_clusters) else None
        if not auto and (given is None or not 2 <= given <= MAX_CLUSTERS):
            raise ConfigError(
                f"n_clusters={self.n_clusters!r} is invalid: use an integer between 2 and "
                f"{MAX_CLUSTERS} (labels are stored as uint8 with 0 reserved for nodata), or "
                "'auto' to choose k from the elbow curve and the silhouette."
            )
        if not (
            _is_int(self.auto_k_min)
            and _is_int(self.auto_k_max)
            and 2 <= self.auto_k_min < self.auto_k_max <= MAX_CLUSTERS
        ):
            raise ConfigError(
                f"auto_k_min={self.auto_k_min!r}, auto_k_max={self.auto_k_max!r} are invalid: "
                f"use integers with 2 <= auto_k_min < auto_k_max <= {MAX_CLUSTERS}."
            )
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(
                f"algorithm={self.algorithm!r} is not supported: use one of "
                f"{', '.join(ALGORITHMS)}."
            )
        if self.pca_components is not None and (
            not _is_int(self.pca_components) or self.pca_components < 1
        ):
            raise ConfigError(
                f"pca_components={self.pca_components!r} is invalid: use a positive integer "
                "(at most the number of features) or None to skip PCA."
            )
        largest_k = given if given is not None else self.auto_k_max
        if not _is_int(self.sample_size) or self.sample_size < largest_k:
            raise ConfigError(
                f"sample_size={self.sample_size!r} is invalid: use an integer >= n_clusters "
                f"({largest_k}); the default is 200000 pixels."
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r} is invalid: use a non-negative integer.")

    @property
    def k(self) -> int:
        """The number of clusters to fit; ConfigError while it is still 'auto'."""
        if self.n_clusters == "auto":
            raise ConfigError(
                "n_clusters is 'auto': choose k first (geocluster_dagster.evaluate.choose_k)."
            )
        return self.n_clusters

    @property
    def auto_k_values(self) -> list[int]:
        """The k tried by n_clusters: auto."""
        return list(range(self.auto_k_min, self.auto_k_max + 1))

    def feature_bands(self, ds: xr.Dataset) -> list[str]:
        """The configured features, or the reflectance bands ``ds`` has."""
        return list(self.features) or [b for b in REFLECTANCE_BANDS if b in ds.data_vars]


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Chunked access to the feature bands
# --------------------------------------------------------------------------------------------


def feature_stack(ds: xr.Dataset, features: Sequence[str]) -> tuple[da.Array, xr.DataArray]:
    """Features as one dask array (feature, y, x) with a single chunk along feature, plus a
    2-D template variable carrying the dims and coords of the output maps."""
    if len(features) == 0:
        raise ConfigError("features is empty: name at least one band to cluster on, e.g. 'red'.")
    missing = [name for name in features if name not in ds.data_vars]
    if missing:
        raise BandNotFound(
            f"feature band(s) {', '.join(map(repr, missing))} not in the dataset; available "
            f"variables: {', '.join(map(str, ds.data_vars)) or '(none)'}. Pick features among "
            "them or add the band/index upstream."
        )
    template = ds[features[0]]
    if template.ndim != 2:
        raise ConfigError(
            f"feature {features[0]!r} has dims {template.dims}; clustering needs 2-D (y, x) "
            "bands, e.g. a composite rather than a time stack."
        )
    bands = _on_grid(
        ds,
        features,
        template.dims,
        kind="feature",
        reference=repr(features[0]),
        fix="all features must share the same (y, x) grid.",
    )
    arrays = [da.asarray(band.data) for band in bands]
    # da.stack unifies the chunks of the bands; the feature axis must be one chunk so that a
    # block holds every feature of its pixels.
    stack = da.stack(arrays).rechunk({0: -1})
    return stack, template


def _on_grid(
    ds: xr.Dataset,
    names: Sequence[str],
    dims: tuple[Hashable, ...],
    *,
    kind: str,
    reference: str,
    fix: str,
) -> list[xr.DataArray]:
    """The variables ``names`` of ``ds`` in ``dims`` order; ConfigError for one on another grid."""
    variables = []
    for name in names:
        var = ds[name]
        if set(var.dims) != set(dims):
            raise ConfigError(
                f"{kind} {name!r} has dims {var.dims} but {reference} has {dims}; {fix}"
            )
        variables.append(var.transpose(*dims))
    return variables


def _is_lazy(obj: xr.Dataset | xr.DataArray) -> bool:
    if isinstance(obj, xr.DataArray):
        return obj.chunks is not None
    return any(var.chunks is not None for var in obj.data_vars.values())


def _valid_pixels(block: np.ndarray) -> np.ndarray:
    """Flat boolean mask of pixels whose every feature is finite; block is (feature, h, w)."""
    valid: np.ndarray = np.isfinite(block).all(axis=0).ravel()
    return valid


#: First pass keeps pixels whose random key is below this many times n / pixels: enough for a
#: raster at least 1 / SAMPLE_MARGIN valid, in expectation several times over.
SAMPLE_MARGIN = 4.0


def keyed_candidates(
    block: np.ndarray, index: tuple[slice, ...], *, seed: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """(keys, rows) of the valid pixels of the (feature, y, x) ``block`` at ``index`` whose key
    is below threshold, and its valid count: :func:`sample_valid_pixels`' first pass on it.

    Every pixel's key is drawn from a generator seeded by (seed, block position), so a pixel
    keeps its key whatever the threshold, and the same seed and chunking give the same keys.
    """
    valid = _valid_pixels(block)
    position = tuple(s.start for s in index[1:])
    keys = np.random.default_rng([seed, *position]).random(valid.size)
    chosen = np.flatnonzero(valid & (keys < threshold))
    rows = block.reshape(block.shape[0], -1)[:, chosen].T.astype(np.float32)
    return keys[chosen], rows, int(np.count_nonzero(valid))


def first_pass_threshold(n: int, pixels: int) -> float:
    """The key below which :func:`sample_valid_pixels`' first pass keeps a pixel."""
    return min(1.0, SAMPLE_MARGIN * n / max(pixels, 1))


def _smallest_keys(keys: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` smallest ``keys``, in their order (the sample keeps block order)."""
    winners: np.ndarray = np.sort(np.argpartition(keys, n - 1)[:n])
    return winners


def sample_valid_pixels(ds: xr.Dataset, features: Sequence[str], n: int, seed: int) -> np.ndarray:
    """Uniform sample without replacement of up to ``n`` valid pixels, as (m, features) float32.

    Bottom-k sampling: every valid pixel gets a uniform random key and the ``n`` smallest keys
    win, so every n-subset is equally likely. One pass over the blocks keeps only the pixels
    whose key is below ``SAMPLE_MARGIN * n / pixels`` (a few times the sample, never the
    raster); a raster so sparse that too few come back gets a second pass with the threshold
    set from the exact valid count. Rows come in block order.
    """
    if not _is_int(n) or n < 1:
        raise ConfigError(f"sample size n={n!r} is invalid: use a positive integer.")
    stack, _ = feature_stack(ds, features)
    drawn = SampleCandidates.of(ds)
    if drawn is not None and drawn.serves(features, seed, stack.chunks):
        taken = drawn.sample(n)
        if taken is not None:
            return taken
    pixels = stack.shape[1] * stack.shape[2]
    threshold = first_pass_threshold(n, pixels)
    while True:
        parts, n_valid = [], 0
        blocks = iter_blocks(stack)
        n_blocks = int(np.prod(stack.numblocks[1:]))
        for index, block in tracked(blocks, "sampling pixels", total=n_blocks):
            keys, rows, valid = keyed_candidates(block, index, seed=seed, threshold=threshold)
            parts.append((keys, rows))
            n_valid += valid
        if n_valid == 0:
            raise NoClearPixels(
                f"every pixel is masked (NaN in at least one of {', '.join(features)}), so there "
                "is nothing to cluster: raise max_cloud_cover (stac_items), use longer date "
                "windows, or drop mask flags (band_stack mask_flags)."
            )
        candidates = sum(len(keys) for keys, _ in parts)
        if candidates >= min(n, n_valid) or threshold >= 1.0:
            break
        threshold = min(1.0, 2.0 * SAMPLE_MARGIN * n / n_valid)
    keys = np.concatenate([k for k, _ in parts])
    rows = np.concatenate([r for _, r in parts], axis=0)
    if len(keys) > n:
        rows = rows[_smallest_keys(keys, n)]
    return rows


#: The attribute of an opened raster that names its :class:`SampleCandidates` file.
SAMPLE_ATTR = "sample_candidates"


@dataclass(frozen=True)
class SampleCandidates:
    """The valid pixels of a raster with the smallest keys of :func:`sample_valid_pixels`
    (the same keys, the same values, in block order), drawn by a pass that reads the pixels
    anyway (the geotiff's): a sample of up to ``len(keys)`` pixels is then taken from them
    without reading the raster again, equal to the one a pass of its own would draw.
    """

    features: tuple[str, ...]
    seed: int
    chunks: tuple[int, int]
    """The (y, x) block size the keys were drawn on: a pixel's key depends on its block."""
    valid: int
    """The raster's valid pixels (every feature finite)."""
    keys: np.ndarray = field(repr=False)
    rows: np.ndarray = field(repr=False)
    """(len(keys), features) float32."""

    @classmethod
    def collect(
        cls,
        parts: Sequence[tuple[np.ndarray, np.ndarray, int]],
        *,
        features: Sequence[str],
        seed: int,
        chunks: tuple[int, int],
        keep: int,
    ) -> SampleCandidates | None:
        """The ``keep`` smallest-keyed of the per-block :func:`keyed_candidates` ``parts`` (in
        block order); None when the pass kept too few to stand for the raster (a sparse one:
        :func:`sample_valid_pixels` then reads it twice itself)."""
        keys = np.concatenate([k for k, _, _ in parts]) if parts else np.zeros(0)
        rows = (
            np.concatenate([r for _, r, _ in parts], axis=0)
            if parts
            else np.zeros((0, len(features)), np.float32)
        )
        valid = int(sum(v for _, _, v in parts))
        if valid == 0 or len(keys) < min(keep, valid):
            return None
        if len(keys) > keep:
            winners = _smallest_keys(keys, keep)
            keys, rows = keys[winners], rows[winners]
        return cls(tuple(features), int(seed), chunks, valid, keys, rows)

    def serves(
        self, features: Sequence[str], seed: int, chunks: tuple[tuple[int, ...], ...]
    ) -> bool:
        """Whether a sample of ``features`` with ``seed`` from a raster read in ``chunks``
        ((band, y, x) dask chunks) can be taken from these candidates."""
        block = (chunks[-2][0], chunks[-1][0])
        return tuple(features) == self.features and seed == self.seed and block == self.chunks

    def sample(self, n: int) -> np.ndarray | None:
        """:func:`sample_valid_pixels`' rows for a sample of ``n``: the min(n, valid) smallest
        keys, in block order; None when that needs more candidates than were kept."""
        want = min(n, self.valid)
        if want > len(self.keys):
            return None
        if want == len(self.keys):
            return self.rows
        taken: np.ndarray = self.rows[_smallest_keys(self.keys, want)]
        return taken

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:
            np.savez(
                handle,
                keys=self.keys,
                rows=self.rows,
                features=np.array(self.features),
                header=np.array([self.seed, *self.chunks, self.valid], dtype=np.int64),
            )

    @classmethod
    def load(cls, path: Path | str) -> SampleCandidates:
        with location(path).open("rb") as handle, np.load(handle, allow_pickle=False) as data:
            seed, y, x, valid = (int(v) for v in data["header"])
            return cls(
                tuple(str(f) for f in data["features"]),
                seed,
                (y, x),
                valid,
                data["keys"],
                data["rows"],
            )

    @classmethod
    def of(cls, ds: xr.Dataset) -> SampleCandidates | None:
        """The candidates an opened raster names in :data:`SAMPLE_ATTR`, if any."""
        path = ds.attrs.get(SAMPLE_ATTR)
        return cls.load(path) if path else None


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """A PCA projection: the mean removed first, then the principal axes."""

    mean: np.ndarray
    """(features,) mean removed before projecting."""
    components: np.ndarray
    """(components, features) principal axes."""


@dataclass(frozen=True)
class Mixture:
    """A Gaussian mixture's weights and precision Cholesky factors, in label order."""

    weights: np.ndarray
    """(k,) mixing weights."""
    precisions_cholesky: np.ndarray
    """(k, d, d) Cholesky factors of the components' precision matrices (sklearn's
    ``precisions_cholesky_``, full covariance)."""


@dataclass(frozen=True, eq=False)
class FittedClusterer:
    """A fitted model as plain arrays: standardise [+ PCA], then the nearest centre (k-means)
    or the most likely component (Gaussian mixture). Labels are 1..k, darkest cluster first.

    scikit-learn fits it (:func:`fit_clusterer`); applying it needs only these arrays, so a
    model file holds numbers, never code (see :mod:`geocluster_dagster.model_file`).
    """

    features: tuple[str, ...]
    """Feature (band) names, in the column order the model expects."""
    settings: ClusterSettings
    """Settings the model was fitted with."""
    scale_mean: np.ndarray = field(repr=False)
    """(features,) mean removed by the standardisation."""
    scale: np.ndarray = field(repr=False)
    """(features,) standard deviation divided by (1 where a feature is constant)."""
    pca: Projection | None = field(repr=False)
    """The PCA after the standardisation, or None without PCA."""
    model_centers: np.ndarray = field(repr=False)
    """(k, model dims) centres (component means) in model space; row i is label i + 1."""
    mixture: Mixture | None = field(default=None, repr=False)
    """The mixture's parameters when the estimator is a Gaussian mixture."""
    label_ids: np.ndarray | None = field(default=None, repr=False)
    """(k,) the id in the map of row i's cluster, when the ids were matched to a reference
    model (:mod:`geocluster_dagster.reference`); None = ids 1..k in row order."""
    class_names: tuple[str, ...] | None = None
    """(k,) the land-cover name of row i's cluster (:mod:`geocluster_dagster.naming`), or None."""

    def __post_init__(self) -> None:
        if self.label_ids is not None:
            ids = np.asarray(self.label_ids)
            if (
                ids.shape != (self.n_clusters,)
                or len(set(ids.tolist())) != len(ids)
                or ids.min() < 1
                or ids.max() > MAX_CLUSTERS
            ):
                raise ValueError(
                    f"label_ids must be {self.n_clusters} distinct ids in 1..{MAX_CLUSTERS}; "
                    f"got {ids.tolist()}"
                )
        if self.class_names is not None and (
            len(self.class_names) != self.n_clusters
            or not all(isinstance(n, str) and n.strip() for n in self.class_names)
        ):
            raise ValueError(
                f"class_names must be {self.n_clusters} non-empty names; got {self.class_names!r}"
            )

    @property
    def n_clusters(self) -> int:
        """Number of clusters k."""
        return int(self.model_centers.shape[0])

    @property
    def ids(self) -> np.ndarray:
        """(k,) uint8 id in the map of each cluster, row order (1..k unless matched)."""
        if self.label_ids is None:
            return np.arange(1, self.n_clusters + 1, dtype=np.uint8)
        return np.asarray(self.label_ids, dtype=np.uint8)

    @property
    def max_id(self) -> int:
        """The largest id the map can hold."""
        return int(self.ids.max())

    def with_ids(self, ids: Sequence[int] | np.ndarray) -> FittedClusterer:
        """The same model, writing ``ids[i]`` for the cluster of row i."""
        return dataclasses.replace(self, label_ids=np.asarray(ids, dtype=np.int64))

    def with_names(self, names_by_id: dict[int, str]) -> FittedClusterer:
        """The same model, its clusters named (by id)."""
        return dataclasses.replace(self, class_names=tuple(names_by_id[int(i)] for i in self.ids))

    @property
    def names_by_id(self) -> dict[int, str]:
        """Cluster id -> name; empty when the model's clusters have no names."""
        if self.class_names is None:
            return {}
        return dict(zip((int(i) for i in self.ids), self.class_names, strict=True))

    def _check(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ValueError(
                f"expected an array of shape (n_pixels, {len(self.features)}) with columns "
                f"{', '.join(self.features)}; got shape {X.shape}."
            )
        return X

    def transform(self, X: np.ndarray) -> np.ndarray:
        """X in the model's feature space (standardised [+ PCA]), where distances are measured."""
        Z: np.ndarray = (self._check(X) - self.scale_mean) / self.scale
        if self.pca is not None:
            Z = (Z - self.pca.mean) @ self.pca.components.T
        return Z

    @functools.cached_property
    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        """``A`` (features, dims) and ``b`` (dims,) with ``z = X A + b``: the standardisation
        and the PCA are linear, so a block of pixels reaches model space in one matrix
        product instead of a subtraction, a division and the PCA's product."""
        A = np.diag(1.0 / self.scale)
        b = -self.scale_mean / self.scale
        if self.pca is not None:
            A = A @ self.pca.components.T
            b = (b - self.pca.mean) @ self.pca.components.T
        return A, b

    @functools.cached_property
    def _centre_distances(self) -> tuple[np.ndarray, np.ndarray]:
        """``W`` (features, k) and ``c0`` (k,) with ``X @ W + c0 = ||z - c||^2 - ||z||^2`` for
        each centre ``c``, ``z`` being ``X`` in model space: with :attr:`_affine` folded into
        the centres, a block of pixels needs one matrix product, not its transform first
        (about a quarter less time per block, half with a PCA)."""
        A, b = self._affine
        C = self.model_centers
        return -2.0 * (A @ C.T), (C**2).sum(axis=1) - 2.0 * (b @ C.T)

    @functools.cached_property
    def _distances_and_transform(self) -> np.ndarray:
        """(features, k + dims): :attr:`_centre_distances`' ``W`` beside :attr:`_affine`'s ``A``."""
        return np.hstack([self._centre_distances[0], self._affine[0]])

    def _nearest(self, X: np.ndarray) -> np.ndarray:
        """0-based label of each row of ``X`` (original feature units)."""
        if self.mixture is None:
            W, c0 = self._centre_distances
            nearest: np.ndarray = np.argmin(X @ W + c0, axis=1)
            return nearest
        # The component of highest weighted log density (sklearn's predict), constants dropped.
        Z = self.transform(X)
        chol = self.mixture.precisions_cholesky
        log_det = np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        scores = np.empty((len(Z), self.n_clusters))
        for k in range(self.n_clusters):
            whitened = Z @ chol[k] - self.model_centers[k] @ chol[k]
            scores[:, k] = np.log(self.mixture.weights[k]) + log_det[k] - 0.5 * (whitened**2).sum(1)
        likeliest: np.ndarray = np.argmax(scores, axis=1)
        return likeliest

    def predict(self, X: np.ndarray) -> np.ndarray:
        """uint8 cluster ids (1..k unless matched, see :attr:`ids`) for rows of finite values."""
        X = self._check(X)
        if len(X) == 0:
            return np.zeros(0, dtype=np.uint8)
        labels: np.ndarray = self.ids[self._nearest(X)]
        return labels

    def predict_with_confidence(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 ids and each row's confidence: its simplified silhouette ``1 - a / b``, ``a``
        the distance to its cluster's centre and ``b`` to the nearest other centre, in model
        space (Hruschka et al. 2004; Vendramin, Campello & Hruschka 2010). 1 at a centre, 0 on
        the boundary between two clusters, where a small shift flips the label."""
        X = self._check(X)
        if len(X) == 0:
            return np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.float32)
        # One product gives, per pixel, ||z - c||^2 - ||z||^2 for every centre c and z itself,
        # as rows of pixels: every per-pixel step below then runs along contiguous rows (a
        # minimum along the short axis of a (pixels, k) array costs several times more).
        (_, c0), (_, b) = self._centre_distances, self._affine
        k = self.n_clusters
        product = self._distances_and_transform.T @ X.T
        relative = product[:k]
        relative += c0[:, np.newaxis]
        Z = product[k:]
        Z += b[:, np.newaxis]
        norms = np.einsum("ij,ij->j", Z, Z)
        if self.mixture is None:
            nearest, second, rows = _two_smallest(relative)
        else:
            rows = self._nearest(X)
            columns = np.arange(len(rows))
            nearest = relative[rows, columns]
            relative[rows, columns] = np.inf
            second = relative.min(axis=0) if k > 1 else np.full(len(rows), np.inf)
        own = nearest + norms
        other = second + norms
        np.maximum(own, 0.0, out=own)  # rounding can leave -1e-16
        np.maximum(other, 0.0, out=other)
        with np.errstate(divide="ignore", invalid="ignore"):
            confidence = 1.0 - np.sqrt(own / other)
        confidence = np.where(np.isfinite(confidence), confidence, 0.0).astype(np.float32)
        ids: np.ndarray = self.ids[rows]
        return ids, confidence

    def centers(self) -> np.ndarray:
        """(k, n_features) cluster centres in the original feature units, row i = id ``ids[i]``."""
        Z = self.model_centers
        if self.pca is not None:
            Z = Z @ self.pca.components + self.pca.mean
        original: np.ndarray = Z * self.scale + self.scale_mean
        return original

    def inertia(self, X: np.ndarray) -> float:
        """Sum of squared distances, in model space, from each row to its assigned centre."""
        X = self._check(X)
        Z = self.transform(X)
        if len(Z) == 0:
            return 0.0
        assigned = self.model_centers[self._nearest(X)]
        return float(np.sum((Z - assigned) ** 2, dtype=np.float64))


def _two_smallest(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``rows`` (k, n): its smallest value, its second smallest (inf for k = 1)
    and the row of the smallest (the first of equal ones, as argmin), in one walk over the
    rows."""
    best = rows[0].copy()
    second = np.full(rows.shape[1], np.inf)
    index = np.zeros(rows.shape[1], dtype=np.intp)
    for j in range(1, len(rows)):
        row = rows[j]
        np.minimum(second, np.maximum(best, row), out=second)
        index[row < best] = j
        np.minimum(best, row, out=best)
    return best, second, index


def _make_estimator(settings: ClusterSettings) -> Any:
    # scikit-learn takes a second to import: only the steps that fit a model pay for it.
    from sklearn.cluster import BisectingKMeans, KMeans, MiniBatchKMeans
    from sklearn.mixture import GaussianMixture

    k, seed = settings.k, settings.seed
    if settings.algorithm == "minibatch_kmeans":
        return MiniBatchKMeans(n_clusters=k, n_init=3, batch_size=4096, random_state=seed)
    if settings.algorithm == "kmeans":
        return KMeans(n_clusters=k, n_init=4, random_state=seed)
    if settings.algorithm == "bisecting_kmeans":
        return BisectingKMeans(n_clusters=k, n_init=3, random_state=seed)
    return GaussianMixture(n_components=k, covariance_type="full", random_state=seed)


def fit_clusterer(
    samples: np.ndarray, features: Sequence[str], settings: ClusterSettings
) -> FittedClusterer:
    """Fit StandardScaler -> optional PCA -> estimator on sampled pixels (rows x features)."""
    samples = np.asarray(samples)
    features = tuple(features)
    if samples.ndim != 2 or samples.shape[1] != len(features):
        raise ValueError(
            f"samples must have shape (n_pixels, {len(features)}) for features "
            f"{', '.join(features)}; got {samples.shape}."
        )
    if not np.isfinite(samples).all():
        raise ValueError(
            "samples contain NaN or infinite values; draw them with sample_valid_pixels."
        )
    k = settings.k
    n_distinct = _distinct_rows(samples, at_least=k) if len(samples) >= k else len(samples)
    if n_distinct < k:
        raise TooFewPixels(
            f"cannot form n_clusters={k} clusters from {len(samples)} valid pixels "
            f"({n_distinct} distinct spectra): lower n_clusters or enlarge the AOI / date range "
            "so that more clear pixels are available."
        )
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps: list[tuple[str, object]] = [("scale", StandardScaler())]
    if settings.pca_components is not None:
        if settings.pca_components > min(len(features), len(samples)):
            raise ConfigError(
                f"pca_components={settings.pca_components} exceeds the {len(features)} features "
                f"({', '.join(features)}): lower pca_components or set it to None."
            )
        steps.append(("pca", PCA(n_components=settings.pca_components, random_state=settings.seed)))
    steps.append(("cluster", _make_estimator(settings)))
    pipeline = Pipeline(steps).fit(samples)
    return _as_plain_model(pipeline, features, settings)


def _distinct_rows(samples: np.ndarray, *, at_least: int) -> int:
    """How many distinct rows ``samples`` has, or any number >= ``at_least`` once that many are
    found in its head: the fit only needs to know that k clusters can be formed, and counting
    every distinct row of a large sample (np.unique with axis=0) costs more than the fit's own
    start."""
    # +0.0 makes -0.0 equal to 0.0 before rows are compared as bytes.
    rows = np.ascontiguousarray(samples + 0.0)
    as_bytes = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    head = len(np.unique(as_bytes[: 100 * at_least]))
    return head if head >= at_least else len(np.unique(as_bytes))


def _as_plain_model(
    pipeline: Pipeline, features: tuple[str, ...], settings: ClusterSettings
) -> FittedClusterer:
    """The fitted pipeline's parameters, clusters reordered darkest first."""
    from sklearn.mixture import GaussianMixture

    scaler, estimator = pipeline.named_steps["scale"], pipeline[-1]
    pca = pipeline.named_steps.get("pca")
    is_mixture = isinstance(estimator, GaussianMixture)
    centers = np.asarray(estimator.means_ if is_mixture else estimator.cluster_centers_)
    # Order clusters by the mean standardised value of their centre: a unit-free brightness in
    # which a kelvin or index feature cannot outweigh the reflectances. Darkest cluster -> 1.
    in_features = pipeline[:-1].inverse_transform(centers)
    brightness = scaler.transform(in_features).mean(axis=1)
    order = np.argsort(brightness, kind="stable")
    mixture = (
        Mixture(
            weights=np.asarray(estimator.weights_, dtype=np.float64)[order],
            precisions_cholesky=np.asarray(estimator.precisions_cholesky_, dtype=np.float64)[order],
        )
        if is_mixture
        else None
    )
    return FittedClusterer(
        features=features,
        settings=settings,
        scale_mean=np.asarray(scaler.mean_, dtype=np.float64),
        scale=np.asarray(scaler.scale_, dtype=np.float64),
        pca=None
        if pca is None
        else Projection(
            mean=np.asarray(pca.mean_, dtype=np.float64),
            components=np.asarray(pca.components_, dtype=np.float64),
        ),
        model_centers=np.asarray(centers, dtype=np.float64)[order],
        mixture=mixture,
    )


# --------------------------------------------------------------------------------------------
# Applying the model and summarising the map
# --------------------------------------------------------------------------------------------


def _predict_block(block: np.ndarray, model: FittedClusterer) -> np.ndarray:
    n_features, height, width = block.shape
    X = block.reshape(n_features, -1).T
    valid = np.isfinite(X).all(axis=1)
    labels = np.full(height * width, NODATA_LABEL, dtype=np.uint8)
    if valid.any():
        labels[valid] = model.predict(X[valid])
    return labels.reshape(height, width)


def predict_map(ds: xr.Dataset, model: FittedClusterer) -> xr.DataArray:
    """uint8 (y, x) cluster map: 0 where any feature is NaN, else 1..k; lazy when ds is dask."""
    stack, template = feature_stack(ds, model.features)
    labels = da.map_blocks(_predict_block, stack, model=model, drop_axis=0, dtype=np.uint8)
    data = labels if _is_lazy(ds[list(model.features)]) else labels.compute()
    return xr.DataArray(
        data,
        dims=template.dims,
        coords=template.coords,
        name="cluster",
        attrs={
            "nodata": NODATA_LABEL,
            "n_clusters": model.max_id,
            "long_name": "cluster label (0 = nodata)",
        },
    )


def sum_over_blocks(
    func: Callable[..., np.ndarray],
    arrays: Sequence[xr.DataArray | np.ndarray | da.Array],
    out_shape: tuple[int, ...],
    dtype: type = np.float64,
) -> np.ndarray:
    """Sum ``func(*blocks)`` over the aligned blocks of same-shaped 2-D arrays.

    ``func`` gets one numpy block per array and returns an ``out_shape`` array (e.g. per-label
    counts); dask adds the per-block results in a tree, so only small results are ever held.
    """
    dask_arrays = [da.asarray(a.data if isinstance(a, xr.DataArray) else a) for a in arrays]
    first = dask_arrays[0]
    for other in dask_arrays[1:]:
        if other.shape != first.shape:
            raise ValueError(f"arrays differ in shape: {first.shape} vs {other.shape}.")
    aligned = [first, *(a.rechunk(first.chunks) for a in dask_arrays[1:])]

    def per_block(*blocks: np.ndarray) -> np.ndarray:
        return np.asarray(func(*blocks), dtype=dtype)[np.newaxis, np.newaxis]

    grid = tuple((1,) * len(c) for c in first.chunks)
    per_block_results = da.map_blocks(
        per_block,
        *aligned,
        new_axis=list(range(2, 2 + len(out_shape))),
        chunks=grid + tuple((size,) for size in out_shape),
        dtype=dtype,
    )
    total: np.ndarray = per_block_results.sum(axis=(0, 1)).compute()
    return total


def n_clusters_of_map(cluster_map: xr.DataArray, n_clusters: int | None = None) -> int:
    """k of a cluster map: the given value, else attrs["n_clusters"], else its largest label."""
    if n_clusters is None:
        n_clusters = cluster_map.attrs.get("n_clusters")
    if n_clusters is None:  # a map read back from disk: one cheap pass for the largest label
        n_clusters = int(da.asarray(cluster_map.data).max().compute())
    return int(n_clusters)


def _label_stats_block(labels: np.ndarray, *values: np.ndarray, n_bins: int) -> np.ndarray:
    """(1 + n_values, 3, n_bins): pixel counts, then per value finite count, sum, sum of squares."""
    labels = labels.ravel().astype(np.intp)
    if labels.size and labels.max() >= n_bins:
        raise ValueError(
            f"cluster map holds label {labels.max()} but n_clusters is {n_bins - 1}; pass the "
            "model's n_clusters."
        )
    out = np.zeros((1 + len(values), 3, n_bins))
    out[0, 0] = np.bincount(labels, minlength=n_bins)
    for i, value in enumerate(values, start=1):
        x = value.ravel()
        finite = np.isfinite(x)
        if finite.all():  # most blocks of a clear scene: no copies of the finite pixels
            lab, out[i, 0] = labels, out[0, 0]
        else:
            lab, x = labels[finite], x[finite]
            out[i, 0] = np.bincount(lab, minlength=n_bins)
        # bincount sums its weights in float64 whatever their type; the squares are taken
        # in float64 too (a float32 square of a temperature loses digits the std needs).
        out[i, 1] = np.bincount(lab, weights=x, minlength=n_bins)
        out[i, 2] = np.bincount(lab, weights=np.square(x, dtype=np.float64), minlength=n_bins)
    return out


def cluster_signatures(
    ds: xr.Dataset,
    cluster_map: xr.DataArray,
    pixel_area_m2: float | None,
    *,
    n_clusters: int | None = None,
) -> pd.DataFrame:
    """One row per cluster 1..k: size, and mean/std of every data variable of ds in it.

    Columns: cluster, pixel_count, fraction (of all labelled pixels), area_ha (NaN without a
    pixel area), then ``<var>_mean`` and ``<var>_std`` (population std, NaN ignored per variable).
    ``n_clusters`` defaults to ``cluster_map.attrs["n_clusters"]`` (set by predict_map).
    To summarise a map while it is predicted and written, see :class:`LabelledBlocks`.
    """
    k = n_clusters_of_map(cluster_map, n_clusters)
    names = [str(name) for name in ds.data_vars]
    values = _on_grid(
        ds,
        names,
        cluster_map.dims,
        kind="variable",
        reference="the cluster map",
        fix="pass a dataset of 2-D bands on the map's grid.",
    )

    def block_stats(labels: np.ndarray, *blocks: np.ndarray) -> np.ndarray:
        return _label_stats_block(labels, *blocks, n_bins=k + 1)

    stats = sum_over_blocks(block_stats, [cluster_map, *values], (1 + len(values), 3, k + 1))
    return _signature_table(stats, names, pixel_area_m2)


def _signature_table(
    stats: np.ndarray,
    names: Sequence[str],
    pixel_area_m2: float | None,
    ids: np.ndarray | None = None,
) -> pd.DataFrame:
    """The table of :func:`cluster_signatures` from summed :func:`_label_stats_block` results,
    one row per id of ``ids`` in increasing order (default: every label 1..)."""
    ids = np.arange(1, stats.shape[2]) if ids is None else np.sort(np.asarray(ids))
    stats = stats[:, :, ids.astype(np.intp)]  # label 0 (nodata) and unused ids drop out
    k = stats.shape[2]
    pixel_count = stats[0, 0].astype(np.int64)
    total = pixel_count.sum()
    table: dict[str, np.ndarray] = {
        "cluster": ids.astype(np.int64),
        "pixel_count": pixel_count,
        "fraction": pixel_count / total if total else np.full(k, np.nan),
        "area_ha": pixel_count * (pixel_area_m2 / 10_000.0)
        if pixel_area_m2 is not None
        else np.full(k, np.nan),
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, name in enumerate(names, start=1):
            count, total_sum, total_sq = stats[i]
            mean = np.where(count > 0, total_sum / count, np.nan)
            variance = np.where(count > 0, total_sq / count - mean * mean, np.nan)
            table[f"{name}_mean"] = mean
            table[f"{name}_std"] = np.sqrt(np.clip(variance, 0.0, None))
    frame: pd.DataFrame = pd.DataFrame(table)
    return frame


def _predict_block_with_confidence(
    block: np.ndarray, model: FittedClusterer
) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) uint8 labels and float32 confidence (NaN where a feature is missing)."""
    n_features, height, width = block.shape
    X = block.reshape(n_features, -1).T
    valid = np.isfinite(X).all(axis=1)
    if valid.all():  # most blocks of a clear scene: no copy in, no scatter out
        labels, confidence = model.predict_with_confidence(X)
        return labels.reshape(height, width), confidence.reshape(height, width)
    labels = np.full(height * width, NODATA_LABEL, dtype=np.uint8)
    confidence = np.full(height * width, np.nan, dtype=np.float32)
    if valid.any():
        labels[valid], confidence[valid] = model.predict_with_confidence(X[valid])
    return labels.reshape(height, width), confidence.reshape(height, width)


def confidence_percent(confidence: np.ndarray) -> np.ndarray:
    """Confidence 0-1 (NaN: no label) as the stored uint8 percentage (:data:`CONFIDENCE_NODATA`)."""
    stored = np.full(confidence.shape, CONFIDENCE_NODATA, dtype=np.uint8)
    known = np.isfinite(confidence)
    stored[known] = np.rint(np.clip(confidence[known], 0.0, 1.0) * 100).astype(np.uint8)
    return stored


def _confidence_stats(labels: np.ndarray, confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """(2, n_bins): per label, the sum of its pixels' confidence and how many are not
    confident (at most :data:`CONFIDENT_SILHOUETTE`)."""
    flat = labels.ravel().astype(np.intp)
    values = np.nan_to_num(confidence.ravel().astype(np.float64))
    low = (values <= CONFIDENT_SILHOUETTE).astype(np.float64)
    return np.stack(
        [
            np.bincount(flat, weights=values, minlength=n_bins),
            np.bincount(flat, weights=low, minlength=n_bins),
        ]
    )


def _labels_and_stats(
    block: np.ndarray,
    *,
    model: FittedClusterer,
    feature_rows: Sequence[int],
    n_bins: int,
    density: tuple[DensityGrid, int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    rows = list(feature_rows)
    contiguous = rows == list(range(rows[0], rows[0] + len(rows))) if rows else False
    # The default features are the first bands in order: a view, not a copy of the block.
    features = block[rows[0] : rows[0] + len(rows)] if contiguous else block[rows]
    labels, confidence = _predict_block_with_confidence(features, model)
    counts = None
    if density is not None:
        grid, red, nir = density
        counts = block_counts(labels, block[red], block[nir], grid=grid, k=model.max_id)
    return (
        labels,
        confidence_percent(confidence),
        _label_stats_block(labels, *block, n_bins=n_bins),
        counts,
        _confidence_stats(labels, confidence, n_bins),
    )


class LabelledBlocks:
    """The cluster map of ``ds``, block by block, summarised per cluster on the way.

    Iterating yields ``(index, labels)`` blocks of the (1, y, x) uint8 map, for
    :func:`geocluster_dagster.export.write_cog` (``blocks=``, with :attr:`grid` as its
    raster). The task that predicts a
    block also sums every variable of ``ds`` per label, so writing the map and computing
    :meth:`signatures` read and predict each pixel once, where :func:`predict_map` followed by
    :func:`cluster_signatures` does both twice. Labels equal :func:`predict_map`'s.

    With ``density`` (and red and NIR among ``ds``'s variables) the same task also counts the
    red-vs-NIR density per cluster (:meth:`red_nir_density`), equal to
    :func:`geocluster_dagster.evaluate.red_nir_density` of the written map.

    Each label's confidence (:meth:`FittedClusterer.predict_with_confidence`) comes from the
    same distances: ``confidence_sink(index, block)`` receives the (1, y, x) uint8 percentage
    blocks of the confidence layer as the labels are yielded, and :meth:`signatures` gains
    each cluster's ``confidence_mean`` and ``low_confidence_share``.
    """

    def __init__(
        self,
        ds: xr.Dataset,
        model: FittedClusterer,
        *,
        in_flight: int = 4,
        density: DensityGrid | None = None,
        confidence_sink: Callable[[tuple[slice, ...], np.ndarray], None] | None = None,
    ) -> None:
        feature_stack(ds, model.features)  # names a missing or misshapen feature band
        self.names = [str(name) for name in ds.data_vars]
        self.model = model
        self._stack, template = feature_stack(ds, self.names)
        #: The map's grid, name and dtype, for the writer; its pixels are never computed.
        self.grid = xr.zeros_like(template, dtype=np.uint8).rename("cluster")
        self.density_grid = density if {"red", "nir"} <= set(self.names) else None
        self._apply = functools.partial(
            _labels_and_stats,
            model=model,
            feature_rows=[self.names.index(name) for name in model.features],
            n_bins=model.max_id + 1,
            density=(self.density_grid, self.names.index("red"), self.names.index("nir"))
            if self.density_grid is not None
            else None,
        )
        self._in_flight = in_flight
        self._confidence_sink = confidence_sink
        self._sums: np.ndarray | None = None
        self._density: np.ndarray | None = None
        self._confidence: np.ndarray | None = None

    def __iter__(self) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
        self._sums = self._density = self._confidence = None
        sums = np.zeros((1 + len(self.names), 3, self.model.max_id + 1))
        confidence_sums = np.zeros((2, self.model.max_id + 1))
        density = None
        for index, (labels, confidence, stats, counts, sure) in iter_blocks(
            self._stack, in_flight=self._in_flight, apply=self._apply
        ):
            sums += stats
            confidence_sums += sure
            if counts is not None:
                density = counts if density is None else density + counts
            where = (slice(0, 1), *index[1:])
            if self._confidence_sink is not None:
                self._confidence_sink(where, confidence[np.newaxis])
            yield where, labels[np.newaxis]
        self._sums, self._density, self._confidence = sums, density, confidence_sums

    def red_nir_density(self) -> np.ndarray | None:
        """The (k, bins, bins) red-vs-NIR counts, once every block has been iterated; None
        without a density grid or without red and NIR bands."""
        if self._sums is None:
            raise RuntimeError(
                "the density is counted while the blocks are iterated: write them first"
            )
        return self._density

    def signatures(self, pixel_area_m2: float | None) -> pd.DataFrame:
        """The :func:`cluster_signatures` table, once every block has been iterated."""
        if self._sums is None:
            raise RuntimeError(
                "signatures are summed while the blocks are iterated: write them first"
            )
        table = _signature_table(self._sums, self.names, pixel_area_m2, self.model.ids)
        assert self._confidence is not None  # summed with the signatures
        ids = np.sort(np.asarray(self.model.ids)).astype(np.intp)
        sizes = self._sums[0, 0, ids]
        total, low = self._confidence[:, ids]
        with np.errstate(invalid="ignore", divide="ignore"):
            table["confidence_mean"] = np.where(sizes > 0, total / sizes, np.nan)
            table["low_confidence_share"] = np.where(sizes > 0, low / sizes, np.nan)
        return table


def pixel_area_m2(ds: xr.Dataset | xr.DataArray) -> float | None:
    """Area of one pixel in m² when the CRS is projected in metres, else None."""
    crs = ds.rio.crs
    if crs is None:
        return None
    crs = pyproj.CRS.from_user_input(crs.to_wkt())
    units = {(axis.unit_name, axis.unit_conversion_factor) for axis in crs.axis_info}
    if not crs.is_projected or not all(
        name in ("metre", "meter") and factor == 1.0 for name, factor in units
    ):
        return None
    # |determinant| is |a*e| for north-up grids and stays right for rotated ones.
    return float(abs(ds.rio.transform().determinant))
