"""The clusters product of one partition: a folder with the map, the model and what describes it.

``cluster_map.tif`` (COG, uint8, 1..k, 0 = nodata, the GeoTIFF's grid), ``model.json`` (plain
parameters, see :mod:`geocluster_dagster.model_file`),
``signatures.csv``/``.json`` (per-cluster mean/std of every band, pixel count, area, fraction),
``fit_sample.npy`` (the pixels the model was fitted on, for scores downstream) and
``summary.json``. The folder is written whole or not at all.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import __version__
from .blocks import CHUNK_SIZE
from .cluster import (
    ClusterSettings,
    FittedClusterer,
    LabelledBlocks,
    fit_clusterer,
    pixel_area_m2,
    sample_valid_pixels,
)
from .errors import AssetReadError
from .evaluate import ELBOW_SAMPLE_SIZE, KChoice, choose_k, elbow_curve, subsample_index
from .export import open_single_band, write_geotiff
from .model_file import load_model, save_model
from .storage import atomic_path, write_json

CLUSTER_MAP = "cluster_map.tif"
MODEL = "model.json"
#: Where earlier versions kept the model: a pickle, which is never loaded (it can run code).
PICKLED_MODEL = "model.joblib"
SIGNATURES_CSV = "signatures.csv"
SIGNATURES_JSON = "signatures.json"
SAMPLE = "fit_sample.npy"
SUMMARY = "summary.json"
#: The elbow curve n_clusters: auto chose k from (only then), which diagnostics reuse.
ELBOW = "elbow.csv"


@dataclass(frozen=True)
class ClusterFacts:
    """What clustering one partition produced, beside its files."""

    features: list[str]
    fit_sample_pixels: int
    n_clusters: int
    signatures: pd.DataFrame
    summary: dict[str, Any]
    k_choice: KChoice | None
    """How n_clusters: auto chose k (None for a given k)."""


def write_clusters(
    geotiff: xr.Dataset, settings: ClusterSettings, folder: Path, *, aoi_id: str
) -> ClusterFacts:
    """Fit the model on a seeded sample of ``geotiff``'s valid pixels and write the product.

    One pass over the GeoTIFF predicts the map and sums the per-cluster signatures (see
    :class:`geocluster_dagster.cluster.LabelledBlocks`). With ``n_clusters="auto"``, k is
    chosen first from an elbow curve over a seeded subset of the sample (:func:`choose_k`).
    """
    features = settings.feature_bands(geotiff)
    sample = sample_valid_pixels(geotiff, features, settings.sample_size, settings.seed)
    choice = curve = None
    if settings.n_clusters == "auto":
        subset = sample[subsample_index(len(sample), ELBOW_SAMPLE_SIZE, settings.seed)]
        curve = elbow_curve(subset, settings.auto_k_values, settings)
        choice = choose_k(curve)
        settings = dataclasses.replace(settings, n_clusters=choice.chosen)
    model = fit_clusterer(sample, features, settings)
    labelled = LabelledBlocks(geotiff, model)
    summary = {
        "aoi_id": aoi_id,
        "features": list(features),
        "n_clusters": settings.n_clusters,
        "algorithm": settings.algorithm,
        "pca_components": settings.pca_components,
        "sample_size": int(sample.shape[0]),
        "seed": settings.seed,
        "source": geotiff.attrs.get("source_path", ""),
        "k_choice": choice.as_dict() if choice else None,
        "elbow_sample_size": ELBOW_SAMPLE_SIZE if curve is not None else None,
    }
    tags = {
        "aoi_id": aoi_id,
        "package": f"geocluster_dagster {__version__}",
        "clustering": json.dumps(summary),
    }
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        write_geotiff(
            labelled.grid,
            tmp / CLUSTER_MAP,
            cog=True,
            nodata=0,
            tags=tags,
            overview_resampling="nearest",  # labels are categories: never average them
            blocks=labelled,
        )
        signatures = labelled.signatures(pixel_area_m2(geotiff))
        save_model(model, tmp / MODEL)
        signatures.to_csv(tmp / SIGNATURES_CSV, index=False)
        write_json(json.loads(signatures.to_json(orient="records")), tmp / SIGNATURES_JSON)
        np.save(tmp / SAMPLE, sample)
        write_json(summary, tmp / SUMMARY)
        if curve is not None:
            curve.to_csv(tmp / ELBOW, index=False)
    return ClusterFacts(
        features=features,
        fit_sample_pixels=int(sample.shape[0]),
        n_clusters=settings.k,
        signatures=signatures,
        summary=summary,
        k_choice=choice,
    )


@dataclass(frozen=True)
class StoredClusters:
    """A clusters folder reopened (the map stays lazy)."""

    directory: Path
    cluster_map: xr.DataArray
    model: FittedClusterer
    signatures: pd.DataFrame
    sample: np.ndarray
    summary: dict[str, Any]
    elbow: pd.DataFrame | None = None
    """The elbow curve k was chosen from (n_clusters: auto), else None."""

    @property
    def cluster_map_path(self) -> Path:
        return self.directory / CLUSTER_MAP

    def elbow_for(self, k_values: list[int], sample_size: int) -> pd.DataFrame | None:
        """The stored elbow curve if it is the one these k and subset size would fit (same
        sample, seed and estimator), so it need not be fitted again; else None."""
        if self.elbow is None or self.summary.get("elbow_sample_size") != sample_size:
            return None
        return self.elbow if [int(k) for k in self.elbow["k"]] == list(k_values) else None


def open_clusters(folder: Path, *, chunks: int = CHUNK_SIZE) -> StoredClusters:
    """The product :func:`write_clusters` wrote in ``folder``."""
    if not (folder / MODEL).exists() and (folder / PICKLED_MODEL).exists():
        raise AssetReadError(
            f"{folder} holds its model as a pickle ({PICKLED_MODEL}, written by an earlier "
            "version), which is not loaded because a pickle can run code: materialize clusters "
            "for this partition again."
        )
    return StoredClusters(
        directory=folder,
        cluster_map=open_single_band(folder / CLUSTER_MAP, chunks=chunks),
        model=load_model(folder / MODEL),
        signatures=pd.read_csv(folder / SIGNATURES_CSV),
        sample=np.load(folder / SAMPLE),
        summary=json.loads((folder / SUMMARY).read_text()),
        elbow=pd.read_csv(folder / ELBOW) if (folder / ELBOW).exists() else None,
    )
