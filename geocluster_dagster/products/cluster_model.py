"""An AOI's reference model as a product: the folder ``cluster_model/<aoi>/``.

``model.json`` (the model, plain numbers; see :mod:`geocluster_dagster.model_file`),
``clusters.csv`` (per cluster: id, centre per feature, share of the pooled sample and of each
date's), ``summary.json`` (dates pooled, pixels from each, settings, how k was chosen) and
``elbow.csv`` with ``n_clusters: auto``. The folder is written whole or not at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from ..cluster import ClusterSettings, FittedClusterer
from ..errors import AssetReadError
from ..evaluate import KChoice
from ..model_file import load_model, model_digest, save_model
from ..naming import NamingSettings, name_clusters
from ..reference import (
    ModelSettings,
    PoolSettings,
    pooled_sample,
    reference_features,
    reference_table,
)
from ..storage import atomic_path, expand_path, published, reference_from, write_json
from .clusters import (
    ELBOW,
    MODEL,
    ModelPlan,
    fit_model,
    k_choice_details,
    k_choice_warnings,
    write_csv,
)
from .described import Detail, Facts, FilePath, Json, Measure, markdown_table

#: The version of what this product's writer makes: raise it when a release changes its
#: files or numbers, so that Dagster shows the partitions made before as stale (code_version).
VERSION = "1"

TABLE = "clusters.csv"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class ClusterModelFacts(Facts):
    """What fitting an AOI's reference model produced, beside its files."""

    folder: Path
    model: FittedClusterer
    pixels_per_date: dict[str, int]
    k_choice: KChoice | None
    table: pd.DataFrame
    summary: dict[str, Any]

    def measures(self) -> list[Measure]:
        features = self.model.features
        return [
            Measure("n_clusters", self.model.n_clusters, "clusters", "k of the reference model"),
            Measure("date_count", len(self.pixels_per_date), "dates", "date partitions pooled"),
            Measure(
                "pooled_pixels",
                sum(self.pixels_per_date.values()),
                "px",
                "sampled pixels the model was fitted on",
            ),
            Measure("feature_count", len(features), "features", ", ".join(features)),
        ]

    def data_version(self) -> str:
        """The model's parameters: a refit that moves any centre marks the maps made with the
        earlier model as stale."""
        return model_digest(self.model)[:16]

    def details(self) -> dict[str, Detail]:
        return {
            **k_choice_details(self.k_choice),
            "dates_pooled": ", ".join(sorted(self.pixels_per_date)),
            "pixels_per_date": Json(self.pixels_per_date),
            "features": ", ".join(self.model.features),
            "model_path": FilePath(self.folder / MODEL),
            "reference_clusters": markdown_table(self.table.round(4)),
        }

    def warnings(self) -> list[str]:
        return k_choice_warnings(self.k_choice, self.model.n_clusters)


def write_cluster_model(
    images: Mapping[str, xr.Dataset],
    settings: ClusterSettings,
    pool: PoolSettings,
    folder: Path,
    *,
    aoi_id: str,
    naming: NamingSettings | None = None,
) -> ClusterModelFacts:
    """Fit one model on an equal seeded sample from each of ``images`` (date key -> the
    partition's opened GeoTIFF) and write it to ``folder``."""
    features = reference_features(images, settings)
    per_date = pool.per_date(settings.sample_size, len(images))
    sample, counts = pooled_sample(images, features, per_date, settings.seed)
    model, choice, curve = fit_model(sample, features, settings)
    centres = {
        int(i): dict(zip(model.features, map(float, row), strict=True))
        for i, row in zip(model.ids, model.centers(), strict=True)
    }
    classes = name_clusters(centres, (naming or NamingSettings()).class_names)
    model = model.with_names({c.id: c.name for c in classes})
    table = reference_table(model, sample, counts)
    table.insert(1, "name", [c.name for c in classes])
    table.insert(2, "name_rule", [c.rule for c in classes])
    summary = {
        "aoi_id": aoi_id,
        "dates": sorted(images),
        "pixels_per_date": counts,
        "sample_per_date": per_date,
        "features": features,
        "n_clusters": model.n_clusters,
        "settings": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(settings).items()
        },
        "k_choice": choice.as_dict() if choice else None,
        "classes": [c.as_dict() for c in classes],
        # Relative to this folder: the output root can be moved or sent whole.
        "sources": {
            key: reference_from(folder, str(image.attrs.get("source_path", "")))
            for key, image in images.items()
        },
    }
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        save_model(model, tmp / MODEL)
        write_csv(table, tmp / TABLE)
        write_json(summary, tmp / SUMMARY)
        if curve is not None:
            write_csv(curve, tmp / ELBOW)
    return ClusterModelFacts(
        folder=published(folder),
        model=model,
        pixels_per_date=counts,
        k_choice=choice,
        table=table,
        summary=summary,
    )


def reference_model_file(location: Path) -> Path:
    """The model.json of a reference folder, or ``location`` itself when it is a file."""
    return location / MODEL if location.is_dir() else location


def open_cluster_model(location: Path, *, fix: str) -> FittedClusterer:
    """The model at ``location`` (a reference folder or a model.json); ``fix`` says what to do
    when there is none."""
    path = reference_model_file(location)
    if not path.exists():
        raise AssetReadError(f"There is no cluster model at {path}: {fix}")
    return load_model(path)


def model_plan(
    choice: ModelSettings, aoi_id: str, reference_folder: Callable[[str], Path]
) -> ModelPlan:
    """How the partition of ``aoi_id`` gets its model, as ``choice.model`` says.

    ``reference_folder(aoi)`` is where that AOI's reference model is written. With ``auto`` and
    ``partition`` a missing reference is fine (ids by brightness, as before any reference was
    fitted); a reference asked for by name must exist.
    """
    kind = choice.kind
    if kind == "auto":
        file = reference_model_file(reference_folder(aoi_id))
        if not file.exists():
            return ModelPlan()
        return ModelPlan("apply", load_model(file), str(file))
    if kind == "partition":
        file = reference_model_file(reference_folder(aoi_id))
        if not file.exists():
            return ModelPlan()
        return ModelPlan("match", load_model(file), str(file), choice.match_max_distance)
    if kind in ("aoi_reference", "aoi"):
        other = aoi_id if kind == "aoi_reference" else choice.other_aoi
        folder = reference_folder(other)
        model = open_cluster_model(
            folder,
            fix=f"materialize cluster_model for AOI {other!r} first (in the UI: the cluster_model "
            f"asset, partition {other}), or set clusters.model: auto (fits the partition alone until the AOI has one).",
        )
        return ModelPlan("apply", model, str(reference_model_file(folder)))
    location = expand_path(choice.model, "clusters.model")
    model = open_cluster_model(
        location,
        fix="give clusters.model the path of a model.json written by geocluster_dagster (in "
        "clusters/<aoi>/<date>/ or cluster_model/<aoi>/), or set it to partition.",
    )
    return ModelPlan("apply", model, str(reference_model_file(location)))
