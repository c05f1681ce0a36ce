"""One model for many partitions, so a cluster id means the same land cover in every map.

A partition fitted on its own numbers its clusters by brightness, so cluster 3 of June and
cluster 3 of July are unrelated. Two ways out, both here:

- a **reference model** fitted on a sample pooled from several dates of an AOI (the same number
  of pixels from each date, so no month outweighs another) and then applied to every date:
  the ids are identical by construction (:func:`fit_reference`);
- a partition fitted on its own, whose clusters are then **matched** to a reference model's by
  their centres with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``), in the
  reference's standardised feature space (:func:`match_to_reference`). A cluster with no
  counterpart within ``match_max_distance`` gets a new id and is flagged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from .cluster import MAX_CLUSTERS, ClusterSettings, FittedClusterer, sample_valid_pixels
from .errors import ConfigError, NoClearPixels
from .fields import described

#: ``model`` values that are not a path or another AOI's reference.
AUTO, PARTITION, AOI_REFERENCE = "auto", "partition", "aoi_reference"
#: ``model: aoi:<id>`` applies the reference model of AOI <id>.
OTHER_AOI_PREFIX = "aoi:"

#: Default for ``match_max_distance``: the root-mean-square difference of two centres over the
#: features, in standard deviations of the reference's pooled sample. Same land covers of two
#: dates 16 days apart differ by 0.02-0.19 on the Brumadinho pair; different covers of one
#: scene by 0.5 or more (tests/test_reference.py measures both).
MATCH_MAX_DISTANCE = 0.5


ModelKind = Literal["auto", "partition", "aoi_reference", "aoi", "path"]


@dataclass(frozen=True)
class ModelSettings:
    """Which model makes a partition's map, and so where its cluster ids come from."""

    model: str = described(
        AUTO,
        "auto (default): apply the AOI's reference model (cluster_model) when it has one, so "
        "every date's ids mean the same cover, else fit this partition alone; "
        "partition: fit this partition alone, then give its clusters the ids of the AOI's "
        "reference model by matching centres, when one exists; "
        "aoi_reference: apply the AOI's reference model (it must exist); "
        "aoi:<id>: apply AOI <id>'s reference model; or a path to a model.json to apply.",
    )
    match_max_distance: float = described(
        MATCH_MAX_DISTANCE,
        "With model: partition, the largest distance between matched centres (RMS over the "
        "features, in the reference's standard deviations); a cluster farther from every "
        "reference cluster gets a new id and is flagged.",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(
                "model is empty: use auto, partition, aoi_reference, aoi:<id> or a path to a model.json."
            )
        if self.model.startswith(OTHER_AOI_PREFIX) and not self.model[len(OTHER_AOI_PREFIX) :]:
            raise ConfigError(
                "model: aoi: names no AOI: write it as aoi:<id>, e.g. aoi:brumadinho."
            )
        if not (isinstance(self.match_max_distance, int | float) and self.match_max_distance > 0):
            raise ConfigError(
                f"match_max_distance={self.match_max_distance!r} is invalid: use a positive "
                f"number (default {MATCH_MAX_DISTANCE})."
            )

    @property
    def kind(self) -> ModelKind:
        if self.model == AUTO:
            return "auto"
        if self.model == PARTITION:
            return "partition"
        if self.model == AOI_REFERENCE:
            return "aoi_reference"
        if self.model.startswith(OTHER_AOI_PREFIX):
            return "aoi"
        return "path"

    @property
    def other_aoi(self) -> str:
        """The AOI of ``model: aoi:<id>``."""
        return self.model[len(OTHER_AOI_PREFIX) :]


_DATE_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class PoolSettings:
    """Which date partitions of an AOI a reference model is fitted on, and how many pixels each."""

    dates: tuple[str, ...] = described(
        (),
        "Date partition keys (e.g. 2023-06-01) to pool; empty = every date whose geotiff is "
        "materialized, within first_date..last_date.",
    )
    first_date: str | None = described(
        None, "With dates empty: the earliest date partition to pool (YYYY-MM-DD); None = any."
    )
    last_date: str | None = described(
        None, "With dates empty: the latest date partition to pool (YYYY-MM-DD); None = any."
    )
    sample_per_date: int | None = described(
        None,
        "Valid pixels drawn from each date (the same number from each, so no date outweighs "
        "another); None = sample_size divided by the number of dates.",
    )

    def __post_init__(self) -> None:
        for name, value in (("first_date", self.first_date), ("last_date", self.last_date)):
            if value is not None and not is_date_key(value):
                raise ConfigError(f"{name}={value!r} is not a date: write it as YYYY-MM-DD.")
        bad = [d for d in self.dates if not is_date_key(d)]
        if bad:
            raise ConfigError(
                f"dates {bad} are not date partition keys: write each as YYYY-MM-DD (the first "
                "day of its window, as the UI shows it)."
            )
        if self.first_date and self.last_date and self.first_date > self.last_date:
            raise ConfigError(
                f"first_date {self.first_date} is after last_date {self.last_date}: swap them."
            )
        if self.sample_per_date is not None and (
            not isinstance(self.sample_per_date, int) or self.sample_per_date < 1
        ):
            raise ConfigError(
                f"sample_per_date={self.sample_per_date!r} is invalid: use a positive integer, "
                "or None to split sample_size evenly between the dates."
            )

    def select(self, available: Sequence[str], aoi_id: str) -> list[str]:
        """The dates to pool, from the date partitions ``available`` (geotiff materialized)."""
        if self.dates:
            missing = sorted(set(self.dates) - set(available))
            if missing:
                raise ConfigError(
                    f"dates {missing} of AOI {aoi_id!r} have no geotiff: materialize geotiff for "
                    f"{', '.join(f'{aoi_id}|{d}' for d in missing)} first, or drop them from "
                    f"`dates` (materialized: {sorted(available) or 'none'})."
                )
            return sorted(set(self.dates))
        chosen = sorted(
            d
            for d in available
            if (self.first_date is None or d >= self.first_date)
            and (self.last_date is None or d <= self.last_date)
        )
        if not chosen:
            window = f"{self.first_date or 'any'}..{self.last_date or 'any'}"
            raise ConfigError(
                f"AOI {aoi_id!r} has no materialized geotiff in {window} to fit a reference "
                f"model on (materialized: {sorted(available) or 'none'}): materialize the graph "
                "for some of its date partitions first, or widen first_date/last_date."
            )
        return chosen

    def per_date(self, sample_size: int, n_dates: int) -> int:
        return self.sample_per_date or max(1, sample_size // max(n_dates, 1))


def is_date_key(value: object) -> bool:
    """True for a date partition key, YYYY-MM-DD."""
    if not isinstance(value, str) or not _DATE_KEY.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def pooled_sample(
    images: Mapping[str, xr.Dataset], features: Sequence[str], per_date: int, seed: int
) -> tuple[np.ndarray, dict[str, int]]:
    """Up to ``per_date`` valid pixels from each image (seeded), stacked; and the count of each."""
    parts: list[np.ndarray] = []
    counts: dict[str, int] = {}
    for index, (key, image) in enumerate(sorted(images.items())):
        try:
            # Another seed per date: one seed would draw the same positions from co-registered
            # dates, and a cloud over them in one date would leave a hole in every date.
            part = sample_valid_pixels(image, features, per_date, seed + index)
        except NoClearPixels as err:
            raise NoClearPixels(f"date {key}: {err}") from err
        parts.append(part)
        counts[key] = int(len(part))
    return np.concatenate(parts, axis=0), counts


def reference_features(images: Mapping[str, xr.Dataset], settings: ClusterSettings) -> list[str]:
    """The features every pooled image has: the configured ones, else the common reflectances."""
    per_image = {key: settings.feature_bands(image) for key, image in images.items()}
    first = next(iter(per_image.values()))
    common = [f for f in first if all(f in bands for bands in per_image.values())]
    if settings.features:
        lacking = {
            k: sorted(set(settings.features) - set(image.data_vars)) for k, image in images.items()
        }
        lacking = {k: v for k, v in lacking.items() if v}
        if lacking:
            raise ConfigError(
                f"features {list(settings.features)} are not in every pooled geotiff "
                f"(missing {lacking}): pick features every date has."
            )
        return list(settings.features)
    if not common:
        raise ConfigError(
            f"the pooled geotiffs share no reflectance band ({per_image}): pool dates of one "
            "sensor, or set `features`."
        )
    return common


# --------------------------------------------------------------------------------------------
# Matching a partition's clusters to a reference
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """Where one of a partition's own clusters went."""

    cluster: int
    """Its label when fitted alone (1..k, darkest first)."""
    id: int
    """Its id in the map: the reference's id when matched, else a new one."""
    distance: float
    """Distance to the reference cluster it was paired with (or, unpaired, to the nearest)."""
    matched: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "id": self.id,
            "distance": round(self.distance, 4),
            "matched": self.matched,
        }


def check_features(model_features: Sequence[str], data_features: Sequence[str], where: str) -> None:
    """Refuse a model whose features (names and order) differ from the data's, saying how."""
    if tuple(model_features) == tuple(data_features):
        return
    missing = [f for f in model_features if f not in data_features]
    extra = [f for f in data_features if f not in model_features]
    detail = (f"missing {missing}" if missing else "") + (
        f"{', ' if missing else ''}not in the model {extra}" if extra else ""
    )
    raise ConfigError(
        f"{where} was fitted on features {list(model_features)}, but this partition's are "
        f"{list(data_features)} ({detail or 'another order'}): set `features` to "
        f"{list(model_features)}, or fit the reference model again with these features."
    )


def centre_distances(model: FittedClusterer, reference: FittedClusterer) -> np.ndarray:
    """(k_model, k_reference) RMS distance between centres, in the reference's standard
    deviations (its scaler): unit-free, and independent of the number of features."""
    ours = (model.centers() - reference.scale_mean) / reference.scale
    theirs = (reference.centers() - reference.scale_mean) / reference.scale
    distances: np.ndarray = cdist(ours, theirs) / math.sqrt(len(reference.features))
    return distances


def match_to_reference(
    model: FittedClusterer, reference: FittedClusterer, max_distance: float = MATCH_MAX_DISTANCE
) -> tuple[FittedClusterer, list[Match]]:
    """``model`` with the ids of the reference clusters its clusters pair with.

    Pairs minimise the total centre distance (Hungarian algorithm); a pair farther apart than
    ``max_distance``, or a cluster left over when the model has more clusters than the
    reference, gets a new id above the reference's largest.
    """
    check_features(reference.features, model.features, "The reference model")
    cost = centre_distances(model, reference)
    rows, cols = linear_sum_assignment(cost)
    paired = dict(zip(rows.tolist(), cols.tolist(), strict=True))
    reference_ids = reference.ids
    next_id = reference.max_id + 1
    matches: list[Match] = []
    for row in range(model.n_clusters):
        col = paired.get(row)
        if col is not None and cost[row, col] <= max_distance:
            matches.append(Match(row + 1, int(reference_ids[col]), float(cost[row, col]), True))
            continue
        if next_id > MAX_CLUSTERS:
            raise ConfigError(
                f"matching to the reference leaves more than {MAX_CLUSTERS} ids: raise "
                "match_max_distance, or use model: aoi_reference."
            )
        nearest = float(cost[row, col]) if col is not None else float(cost[row].min())
        matches.append(Match(row + 1, next_id, nearest, False))
        next_id += 1
    return model.with_ids([m.id for m in matches]), matches


# --------------------------------------------------------------------------------------------
# The reference model's own table
# --------------------------------------------------------------------------------------------


def reference_table(
    model: FittedClusterer, sample: np.ndarray, counts: Mapping[str, int]
) -> pd.DataFrame:
    """One row per reference cluster: its id, centre per feature, and its share of each date's
    sample (how much of each date the cluster covers, before any map is made)."""
    labels = model.predict(sample)
    table: dict[str, Any] = {"cluster": model.ids.astype(int)}
    for name, column in zip(model.features, model.centers().T, strict=True):
        table[f"{name}_centre"] = column
    table["share_of_sample"] = [float(np.mean(labels == i)) for i in model.ids]
    start = 0
    for key, n in counts.items():
        part = labels[start : start + n]
        table[f"share_{key}"] = [float(np.mean(part == i)) if n else 0.0 for i in model.ids]
        start += n
    frame: pd.DataFrame = pd.DataFrame(table).sort_values("cluster", ignore_index=True)
    return frame
