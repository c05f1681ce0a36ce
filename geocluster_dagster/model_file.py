"""A fitted cluster model as a file of plain numbers: safe to receive from someone else.

``model.json`` holds the standardisation, the PCA axes, the centres (and mixture parameters),
the feature names in their column order, the settings and the version of the package and of
the format. Reading it parses JSON and checks shapes and numbers; nothing in it is executed,
unlike a pickle (joblib), which runs whatever code its author put in it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .cluster import ClusterSettings, FittedClusterer, Mixture, Projection
from .errors import AssetReadError, ConfigError
from .storage import location, write_json

FORMAT = "geocluster_dagster.cluster_model"
#: 2: the file carries the SHA-256 digest of its parameters (``digest``), checked when read.
FORMAT_VERSION = 2


def model_to_dict(model: FittedClusterer) -> dict[str, Any]:
    """The model's parameters as JSON-ready data."""

    def listed(values: np.ndarray | None) -> list[Any] | None:
        return None if values is None else np.asarray(values, dtype=np.float64).tolist()

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "features": list(model.features),
        "settings": dataclasses.asdict(model.settings),
        "scaler": {"mean": listed(model.scale_mean), "scale": listed(model.scale)},
        "pca": None
        if model.pca is None
        else {"mean": listed(model.pca.mean), "components": listed(model.pca.components)},
        "centers": listed(model.model_centers),
        # Ids in the map, row order, when matched to a reference model; absent = 1..k.
        "label_ids": None if model.label_ids is None else [int(i) for i in model.label_ids],
        # Land-cover names, row order (geocluster_dagster.naming); absent = unnamed.
        "class_names": None if model.class_names is None else list(model.class_names),
        "mixture": None
        if model.mixture is None
        else {
            "weights": listed(model.mixture.weights),
            "precisions_cholesky": listed(model.mixture.precisions_cholesky),
        },
    }


def model_digest(model: FittedClusterer) -> str:
    """SHA-256 of the model's parameters: the same for the same model wherever its file is,
    different as soon as it is fitted again (the path of a refitted reference stays the same)."""
    document = model_to_dict(model)
    document.pop("package_version")  # the same model, read by another version, is the same
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def save_model(model: FittedClusterer, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as JSON at ``path``, atomically, with the digest of its parameters."""
    return write_json({**model_to_dict(model), "digest": model_digest(model)}, location(path))


def load_model(path: str | os.PathLike[str]) -> FittedClusterer:
    """The model stored at ``path`` by :func:`save_model`; AssetReadError for anything else."""
    path = location(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise AssetReadError(
            f"{path} is not a cluster model file written by geocluster_dagster (a JSON document; "
            f"{type(err).__name__}: {err}). Models are never read from pickles or joblib files, "
            "which can run code: materialize clusters again to write one."
        ) from err
    try:
        model = model_from_dict(document)
    except (KeyError, TypeError, ValueError) as err:
        raise AssetReadError(
            f"{path} is not a usable cluster model: {err}. Materialize clusters again, or ask "
            "whoever sent the file for one written by geocluster_dagster."
        ) from err
    # Well-formed is not enough: a centre moved by hand still parses, and would make another
    # map without a word. The digest catches edits and corruption (it is no signature: whoever
    # edits the numbers can write a new digest).
    if document.get("digest") != model_digest(model):
        raise AssetReadError(
            f"{path} was changed after geocluster_dagster wrote it: its parameters do not match "
            f"the digest saved with them ({str(document.get('digest'))[:12]}..., the parameters "
            f"give {model_digest(model)[:12]}...). A model file is not edited by hand: "
            "materialize clusters (or cluster_model) again to make a new one, or ask whoever "
            "sent the file for the original."
        )
    return model


def model_from_dict(document: Any) -> FittedClusterer:
    """The model :func:`model_to_dict` described; ValueError naming what is wrong."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"it does not say format {FORMAT!r}")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"it is format version {version!r}, and geocluster_dagster {__version__} reads "
            f"version {FORMAT_VERSION} (written by geocluster_dagster "
            f"{document.get('package_version', '?')})"
        )
    features = tuple(str(name) for name in document["features"])
    settings = _settings(document["settings"])
    scale_mean = _array(document["scaler"]["mean"], "scaler.mean", (len(features),))
    scale = _array(document["scaler"]["scale"], "scaler.scale", (len(features),))
    if np.any(scale <= 0):
        raise ValueError("scaler.scale holds a value <= 0")
    pca = document.get("pca")
    projection = None
    dims = len(features)
    if pca is not None:
        projection = Projection(
            mean=_array(pca["mean"], "pca.mean", (len(features),)),
            components=_array(pca["components"], "pca.components", (None, len(features))),
        )
        dims = projection.components.shape[0]
    centers = _array(document["centers"], "centers", (settings.k, dims))
    mixture = None
    if document.get("mixture") is not None:
        k = settings.k
        weights = _array(document["mixture"]["weights"], "mixture.weights", (k,))
        chol = _array(
            document["mixture"]["precisions_cholesky"],
            "mixture.precisions_cholesky",
            (k, dims, dims),
        )
        if np.any(weights <= 0) or np.any(np.diagonal(chol, axis1=1, axis2=2) <= 0):
            raise ValueError("the mixture's weights or precision diagonals hold a value <= 0")
        mixture = Mixture(weights=weights, precisions_cholesky=chol)
    label_ids = None
    if document.get("label_ids") is not None:
        label_ids = _array(document["label_ids"], "label_ids", (settings.k,))
        if np.any(label_ids != np.round(label_ids)):
            raise ValueError("label_ids holds a value that is not an integer")
        label_ids = label_ids.astype(np.int64)
    return FittedClusterer(
        features=features,
        settings=settings,
        scale_mean=scale_mean,
        scale=scale,
        pca=projection,
        model_centers=centers,
        mixture=mixture,
        label_ids=label_ids,
        class_names=_names(document.get("class_names")),
    )


def _names(values: Any) -> tuple[str, ...] | None:
    if values is None:
        return None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"class_names is not a list of names ({values!r})")
    return tuple(values)


def _settings(values: Any) -> ClusterSettings:
    known = {f.name for f in dataclasses.fields(ClusterSettings)}
    if not isinstance(values, dict) or set(values) - known:
        raise ValueError(f"its settings are not ClusterSettings ({values!r})")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        settings = ClusterSettings(**values)
        settings.k  # noqa: B018  (a fitted model has a number of clusters, not 'auto')
    except ConfigError as err:
        raise ValueError(f"its settings are invalid: {err}") from err
    return settings


def _array(values: Any, name: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """``values`` as a finite float64 array of ``shape`` (None: any length)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(array.shape, shape, strict=True)
    ):
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return array
