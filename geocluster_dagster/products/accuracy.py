"""The accuracy product of a partition: its cluster map against the AOI's reference data.

A folder, written whole: ``accuracy.json`` (overall accuracy with its 95 % interval, per class
user's and producer's accuracy and estimated area with theirs, the error matrix, how each
cluster was matched to a label, the method and its caveats), ``error_matrix.csv`` (sample
counts, rows the map's classes, columns the reference labels), ``class_accuracy.csv`` and
``error_matrix.png``. The estimates are :mod:`geocluster_dagster.accuracy`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..accuracy import Accuracy, Matching, assess, read_reference, sample_map
from ..cluster import pixel_area_m2
from ..errors import ConfigError
from ..fields import described
from ..quality import Judgement
from ..storage import (
    atomic_path,
    is_remote,
    published,
    reference_from,
    sha256_of,
    write_json,
)
from .clusters import CLUSTER_MAP, open_clusters, write_csv
from .described import Detail, Facts, FilePath, Json, Measure, markdown_table, rounded

#: The version of what this product's writer makes: raise it when a release changes its
#: files or numbers, so that Dagster shows the partitions made before as stale (code_version).
VERSION = "2"  # 2: the reference data named relative to the product, with its checksum

ACCURACY_JSON = "accuracy.json"
MAP_CHECKSUM = "cluster_map_sha256"
ERROR_MATRIX = "error_matrix.csv"
CLASS_ACCURACY = "class_accuracy.csv"
FIGURE = "error_matrix.png"


@dataclass(frozen=True)
class AccuracySettings:
    """Which column of the reference data names the classes, and what accuracy is enough."""

    reference_label: str = described(
        "class",
        "The column of the reference data (the AOI registry's `reference_data` file) whose "
        "values name each point's or polygon's class; an AOI's own `reference_label` "
        "property overrides it.",
    )
    warn_overall_accuracy: float = described(
        0.85,
        "Warn when the estimated overall accuracy is below this: 85 % is the minimum Anderson "
        "et al. (1976, USGS Professional Paper 964) set for land-cover maps from remote sensing.",
    )

    def __post_init__(self) -> None:
        value = self.warn_overall_accuracy
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ConfigError(f"warn_overall_accuracy={value!r} is invalid: use a share in [0, 1].")
        if not str(self.reference_label).strip():
            raise ConfigError("reference_label is empty: name the column holding the classes.")


@dataclass(frozen=True)
class AccuracyFacts(Facts):
    """What comparing a map with its reference data estimated."""

    accuracy: Accuracy
    matching: Matching
    names: dict[int, str]
    reference: str
    samples: int
    folder: Path
    warn_below: float = 0.85

    def measures(self) -> list[Measure]:
        low, high = self.accuracy.overall_ci
        return [
            Measure(
                "overall_accuracy",
                self.accuracy.overall,
                "0..1",
                "area-weighted share of the map whose class the reference agrees with "
                "(Olofsson et al. 2014; higher is better)",
                digits=3,
            ),
            Measure(
                "overall_accuracy_ci95",
                (high - low) / 2,
                "0..1",
                "half-width of the overall accuracy's 95 % confidence interval",
                digits=2,
            ),
            Measure("reference_samples", self.samples, "px", "reference samples on mapped pixels"),
            Measure(
                "unsampled_share_of_map",
                self.accuracy.unsampled_share,
                "0..1",
                "map in classes no reference sample falls in (not assessed; lower is better)",
                digits=3,
            ),
        ]

    def details(self) -> dict[str, Detail]:
        classes = self.accuracy.per_class.round(3)
        matching = pd.DataFrame(
            [
                {
                    "cluster": cluster,
                    "name": self.names.get(cluster, ""),
                    "reference_label": label,
                    "how": self.matching.how[cluster],
                }
                for cluster, label in sorted(self.matching.label_of.items())
            ]
        )
        return {
            "per_class": markdown_table(classes),
            "matching": markdown_table(matching),
            "error_matrix": Json(
                {str(k): v for k, v in self.accuracy.as_dict()["error_matrix"].items()}
            ),
            "reference_data": self.reference,
            "caveats": " ".join(self.accuracy.caveats),
            "accuracy_path": FilePath(self.folder / ACCURACY_JSON),
            "plot_error_matrix": FilePath(self.folder / FIGURE),
        }

    def warnings(self) -> list[str]:
        return [c for c in self.accuracy.caveats[1:]]  # the first caveat is always true

    def judge(self) -> Judgement:
        overall = self.accuracy.overall
        low, high = self.accuracy.overall_ci
        passed = overall >= self.warn_below
        return Judgement(
            "overall_accuracy",
            passed,
            "warn",
            f"Overall accuracy {overall:.1%} (95 % interval {low:.1%}-{high:.1%}) on "
            f"{self.samples:,} reference samples"
            + (
                ""
                if passed
                else f", below warn_overall_accuracy={self.warn_below:.0%}: look at the "
                "per-class user's and producer's accuracy for the classes the map confuses "
                "(more clusters, other features, or class_names that merge them)"
            ),
            rounded(
                {
                    "overall_accuracy": overall,
                    "ci95": [low, high],
                    "warn_below": self.warn_below,
                    "samples": self.samples,
                }
            ),
        )


def current_accuracy(accuracy: Path | None, clusters: Path) -> Path | None:
    """``accuracy`` if it assessed the cluster map now in ``clusters`` (None if there is no
    accuracy product, or it assessed a map since remade: it would describe another map)."""
    if accuracy is None or not (accuracy / ACCURACY_JSON).exists():
        return None
    recorded = json.loads((accuracy / ACCURACY_JSON).read_text()).get(MAP_CHECKSUM)
    return accuracy if recorded == sha256_of(clusters / CLUSTER_MAP) else None


def write_accuracy(
    clusters: Path,
    reference: str | Path,
    folder: Path,
    settings: AccuracySettings | None = None,
    *,
    label_column: str | None = None,
    title: str = "",
) -> AccuracyFacts:
    """Assess the cluster map in the ``clusters`` folder against the ``reference`` file (its
    ``label_column``, default ``settings.reference_label``) and write the product."""
    settings = settings or AccuracySettings()
    stored = open_clusters(clusters)
    column = label_column or settings.reference_label
    pairs = sample_map(stored.cluster_map_path, read_reference(reference, column))
    signatures = stored.signatures
    names = {int(c): str(n) for c, n in zip(signatures["cluster"], signatures["name"], strict=True)}
    sizes = {
        int(c): int(n)
        for c, n in zip(signatures["cluster"], signatures["pixel_count"], strict=True)
    }
    area = pixel_area_m2(stored.cluster_map)
    result, matching = assess(pairs, names, sizes, (area or 0.0) / 10_000.0)
    document: dict[str, Any] = {
        **result.as_dict(),
        # which map was assessed: the Item publishes this product only beside that same map
        MAP_CHECKSUM: sha256_of(stored.cluster_map_path),
        # Named relative to this product, as the clusters name their geotiff: the output root
        # travels whole; its checksum says which file it was if the path no longer leads there.
        "reference_data": reference_from(folder, reference),
        "reference_data_sha256": "" if is_remote(reference) else sha256_of(Path(reference)),
        "reference_label": column,
        "samples": len(pairs),
        "matching": [
            {"cluster": c, "name": names.get(c, ""), "label": label, "how": matching.how[c]}
            for c, label in sorted(matching.label_of.items())
        ],
    }
    from .. import plot  # matplotlib only when the figure is drawn

    with atomic_path(folder) as tmp:
        tmp.mkdir()
        write_json(document, tmp / ACCURACY_JSON)
        write_csv(result.matrix.rename_axis("map_class").reset_index(), tmp / ERROR_MATRIX)
        write_csv(result.per_class, tmp / CLASS_ACCURACY)
        plot.plot_error_matrix(
            result.matrix,
            tmp / FIGURE,
            title=f"Accuracy{', ' + title if title else ''}: overall {result.overall:.1%} "
            f"(95 % interval {result.overall_ci[0]:.1%}-{result.overall_ci[1]:.1%})",
        )
    return AccuracyFacts(
        accuracy=result,
        matching=matching,
        names=names,
        reference=str(reference),
        samples=len(pairs),
        folder=published(folder),
        warn_below=settings.warn_overall_accuracy,
    )
