"""What changed between two dates of an AOI: from -> to per pixel, in pixels and hectares.

Change is only ever counted between two labels of **one model**: k-means fitted on each date
alone (and even matched to a reference by centres) moves its boundaries a little, so pixels
near a boundary between two similar clusters flip with no change on the ground (21 % of an
unchanged landscape did, in the demo). So both dates' GeoTIFFs are classified here by one
model (:func:`common_model`): the model both maps were made with, when they share one; else
the AOI's reference model; else one fitted on an equal sample from both dates. Identical
spectra then always get identical labels.

A pixel is **changed** when its land cover changed: two clusters of one cover ("dense
vegetation (darker)" and "(brighter)", see :func:`geocluster_dagster.naming.cover_of`) are a
shift within the cover, counted apart. Each label's confidence is its simplified silhouette
(:meth:`~geocluster_dagster.cluster.FittedClusterer.predict_with_confidence`); the share that
changed among pixels both dates label confidently, and in areas the user marks as stable, are
the plausibility checks on the result.

The images are read block by block (memory stays bounded on whole scenes) and written as one
3-band uint8 COG on their common grid: ``from`` and ``to`` ids (0 where that date has no data)
and ``change`` (0 unknown: either date has no data, e.g. masked cloud; 1 unchanged; 2 changed
land cover; 3 another cluster of the same cover).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from .change_states import (
    CHANGED,
    UNCHANGED,
    UNKNOWN,
    WITHIN_COVER,
)
from .cluster import CONFIDENT_SILHOUETTE, ClusterSettings, FittedClusterer
from .errors import ConfigError, NoClearPixels, NotComparable
from .fields import described
from .model_file import model_digest
from .naming import cover_of, name_clusters
from .reference import is_date_key, pooled_sample
from .storage import expand_path


@dataclass(frozen=True)
class ChangeSettings:
    """Which two dates are compared, and when the result deserves a second look."""

    compare_with: str | None = described(
        None,
        "Date partition key (YYYY-MM-DD) of the earlier map to compare with; None = the latest "
        "earlier date partition of this AOI that has a clusters map.",
    )
    min_overlap: float = described(
        0.5,
        "Warn when less than this share of the later map's pixels also has data in the earlier "
        "one: the change then describes part of the AOI only.",
    )
    warn_changed_share: float = described(
        0.2,
        "Warn when more than this share of the pixels both dates classify confidently changed "
        "land cover: more than a few weeks or months usually change on most landscapes, so "
        "check the masks, the dates and the model before trusting it (raise it for a known "
        "disaster or a long interval).",
    )
    stable_areas: str | None = described(
        None,
        "A GeoJSON file (WGS84) of areas known not to have changed between the dates (e.g. "
        "old forest, a city centre); None = none. Change found there is reported and judged "
        "against warn_stable_change.",
    )
    warn_stable_change: float = described(
        0.1,
        "Warn when more than this share of the stable_areas' compared pixels changed land cover.",
    )
    confident_only: bool = described(
        False,
        "Count only the pixels both dates label confidently (each label's simplified "
        "silhouette above 0.25, the clusters' confidence layer): the others are 'unknown' in "
        "the change map and left out of the transitions and areas, and the summary says how "
        "many (left_out_pixels). Off: every pixel both dates label is compared, and the "
        "confident ones are also counted apart (confident_changed_share).",
    )

    def __post_init__(self) -> None:
        if self.compare_with is not None and not is_date_key(self.compare_with):
            raise ConfigError(
                f"compare_with={self.compare_with!r} is not a date partition key: write it as "
                "YYYY-MM-DD (the first day of its window, as the UI shows it), or leave it empty."
            )
        for name in ("min_overlap", "warn_changed_share", "warn_stable_change"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ConfigError(f"{name}={value!r} is invalid: use a share in [0, 1].")

    def earlier(
        self, dates: list[str], date: str, within: Sequence[str] | None = None
    ) -> str | None:
        """The date to compare ``date`` with, among the AOI's ``dates`` with a map: the given
        ``compare_with``, else the latest earlier one, among ``within`` when given (the
        look-back the asset graph declares). A map only outside ``within`` is refused, naming
        it, rather than compared without the graph knowing."""
        if self.compare_with is not None:
            if self.compare_with >= date:
                where = "this partition's own date" if self.compare_with == date else "after it"
                raise ConfigError(
                    f"compare_with={self.compare_with} is {where} ({date}): give an earlier "
                    "date key, or leave it empty for the AOI's previous date with a map."
                )
            if self.compare_with not in dates:
                raise ConfigError(
                    f"compare_with={self.compare_with} has no clusters map for this AOI "
                    f"(dates with one: {dates or 'none'}): materialize clusters there first."
                )
            return self.compare_with
        before = [d for d in dates if d < date]
        if within is not None and before and before[-1] not in within:
            raise NotComparable(
                f"the latest earlier map, {before[-1]}, is older than the look-back of the "
                f"change ({len(within)} windows before {date}): set compare_with={before[-1]} "
                "in the run config to compare with it, or materialize clusters for a date in "
                "between."
            )
        return before[-1] if before else None


@dataclass(frozen=True)
class DatedImage:
    """One date of an AOI: its GeoTIFF (lazy) and the model its clusters map was made with."""

    date: str
    image: xr.Dataset
    model: FittedClusterer
    source: str = ""
    """Where the map's model came from (a reference's model.json), when not fitted alone."""
    min_mapping_unit_ha: float = 0.0
    """The minimum mapping unit its cluster map was sieved to (0: none)."""


@dataclass(frozen=True)
class CommonModel:
    """The one model both dates are classified with, and why it is that one."""

    model: FittedClusterer
    how: Literal["shared", "reference", "pooled"]
    source: str
    """Where it came from: a model.json, or the two dates it was fitted on."""

    def describe(self) -> str:
        return {
            "shared": f"the model both maps were made with ({self.source})",
            "reference": f"the AOI's reference model {self.source} (the maps were made with "
            "different models)",
            "pooled": f"a model fitted on an equal sample of both dates ({self.source}; the AOI "
            "has no reference model and the maps were fitted each alone)",
        }[self.how]


def common_model(
    before: DatedImage,
    after: DatedImage,
    *,
    reference: FittedClusterer | None = None,
    reference_source: str = "",
) -> CommonModel:
    """The model to classify both dates with: the maps' own when it is one model (same
    parameters, not just the same path), else ``reference``, else one fitted now on an equal
    seeded sample of both images with the later map's settings (k, algorithm, seed)."""
    if model_digest(before.model) == model_digest(after.model):
        source = after.source or f"model {model_digest(after.model)[:12]}"
        _check_features(after.model, "the model both maps were made with", before, after)
        return CommonModel(after.model, "shared", source)
    if reference is not None:
        _check_features(reference, f"the reference model {reference_source}", before, after)
        return CommonModel(reference, "reference", reference_source)
    settings: ClusterSettings = after.model.settings
    features = list(after.model.features)
    _check_features(after.model, f"the map of {after.date}", before, after)
    from .products.clusters import fit_model  # the fit's imports only when a model is fitted

    images = {before.date: before.image, after.date: after.image}
    try:
        sample, _ = pooled_sample(
            images, features, max(settings.k, settings.sample_size // 2), settings.seed
        )
    except NoClearPixels as err:
        raise NotComparable(f"Cannot compare {before.date} with {after.date}: {err}") from err
    model, _, _ = fit_model(sample, features, settings)
    centres = {
        int(i): dict(zip(model.features, map(float, row), strict=True))
        for i, row in zip(model.ids, model.centers(), strict=True)
    }
    names = {c.id: c.name for c in name_clusters(centres)}
    return CommonModel(model.with_names(names), "pooled", f"{before.date} and {after.date}")


def _check_features(
    model: FittedClusterer, what: str, before: DatedImage, after: DatedImage
) -> None:
    """NotComparable, saying what to do, when a date's geotiff lacks a feature of ``model``."""
    for dated in (before, after):
        missing = [f for f in model.features if f not in dated.image.data_vars]
        if missing:
            raise NotComparable(
                f"Cannot compare {before.date} with {after.date}: the geotiff of {dated.date} "
                f"lacks the features {missing} of {what}. Materialize both dates with the same "
                "band_stack bands, or set clusters.features to bands both dates have."
            )


def grid_of(image: xr.Dataset) -> tuple[Any, ...]:
    return (image.rio.crs, tuple(image.rio.transform()), image.rio.shape)


def describe_grid(image: xr.Dataset) -> str:
    t = image.rio.transform()
    height, width = image.rio.shape
    return f"{width}x{height} at {t.c:.1f}, {t.f:.1f} in {image.rio.crs}"


def state_table(names: Mapping[int, str]) -> np.ndarray:
    """(256, 256) change state of every (from, to) pair of ids."""
    table = np.full((256, 256), CHANGED, dtype=np.uint8)
    covers = {i: cover_of(n) for i, n in names.items()}
    for i, a in covers.items():
        for j, b in covers.items():
            if a == b:
                table[i, j] = WITHIN_COVER
    np.fill_diagonal(table, UNCHANGED)
    table[0, :] = table[:, 0] = UNKNOWN
    return table


def pair_counts(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    flat = first.astype(np.int64) * 256 + second
    counts: np.ndarray = np.bincount(flat.ravel(), minlength=256 * 256).reshape(256, 256)
    return counts


def classify_both(
    block: np.ndarray,
    *,
    model: FittedClusterer,
    n_features: int,
    states: np.ndarray,
    confident_only: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One block of both images' features stacked (2 x features, h, w): the (3, h, w) layers
    from, to, change, the counts of every (from, to) pair and of the confidently labelled.
    With ``confident_only``, a pixel not labelled confidently in both dates is UNKNOWN in
    the change layer (its from and to labels stay)."""
    _, height, width = block.shape
    labels, confident = [], []
    for part in (block[:n_features], block[n_features:]):
        X = part.reshape(n_features, -1).T
        valid = np.isfinite(X).all(axis=1)
        ids = np.zeros(height * width, dtype=np.uint8)
        sure = np.zeros(height * width, dtype=bool)
        if valid.any():
            ids[valid], score = model.predict_with_confidence(X[valid])
            sure[valid] = score > CONFIDENT_SILHOUETTE
        labels.append(ids)
        confident.append(sure)
    first, second = labels
    both = confident[0] & confident[1]
    change = states[first, second]
    if confident_only:
        change = np.where(both, change, UNKNOWN).astype(change.dtype)
    layers = np.stack([first, second, change]).reshape(3, height, width)
    return layers, pair_counts(first, second), pair_counts(first[both], second[both])


@dataclass
class ChangeCounts:
    """(256, 256) counts of (from, to) pairs: all, confidently labelled, inside stable areas."""

    all: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((256, 256), np.int64))
    confident: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros((256, 256), np.int64)
    )
    stable: np.ndarray | None = None
    left_out: int = 0
    """Pixels both dates label but not both confidently, left out with ``confident_only``."""


def read_stable_areas(path: str, crs: Any) -> Any:
    """The polygons of the GeoJSON at ``path`` (WGS84), as one shapely geometry in ``crs``."""
    import shapely
    from odc.geo.geom import Geometry

    file = expand_path(path, "cluster_change.stable_areas")
    try:
        document = json.loads(Path(file).read_text(encoding="utf-8"))
        features = document.get("features", [document]) if isinstance(document, dict) else []
        shapes = [
            shapely.geometry.shape(f.get("geometry", f) if isinstance(f, dict) else f)
            for f in features
        ]
    except (OSError, ValueError, TypeError, AttributeError, shapely.errors.GEOSException) as err:
        raise ConfigError(
            f"stable_areas={path!r} is not a readable GeoJSON file of polygons ({err}): give "
            "the path of a FeatureCollection, Feature or Polygon in WGS84 lon/lat, or leave "
            "cluster_change.stable_areas empty."
        ) from err
    polygons = [g for g in shapes if g.geom_type in ("Polygon", "MultiPolygon") and g.is_valid]
    if not polygons:
        raise ConfigError(
            f"stable_areas={path!r} holds no valid Polygon or MultiPolygon: draw the stable "
            "areas as polygons in WGS84 lon/lat."
        )
    return Geometry(shapely.union_all(polygons), "EPSG:4326").to_crs(crs).geom


def _label(cluster: int, names: Mapping[int, str]) -> str:
    return f"{cluster} {names[cluster]}" if cluster in names else str(cluster)


def _share_changed(counts: np.ndarray, states: np.ndarray) -> dict[str, Any]:
    """Compared and changed (land cover) pixels among ``counts``, and the changed share."""
    compared = int(counts[1:, 1:].sum())
    changed = int(counts[states == CHANGED].sum())
    return {
        "compared_pixels": compared,
        "changed_pixels": changed,
        "changed_share": round(changed / compared, 6) if compared else 0.0,
    }


@dataclass(frozen=True)
class ChangeTables:
    """What comparing two dates counted: the transitions, the areas per class and a summary."""

    transitions: pd.DataFrame
    class_areas: pd.DataFrame
    summary: dict[str, Any]


def tabulate(
    counts: ChangeCounts,
    states: np.ndarray,
    dates: tuple[str, str],
    names: Mapping[int, str],
    pixel_area_m2: float | None,
    common: CommonModel,
    *,
    stable_path: str | None = None,
    confident_only: bool = False,
) -> ChangeTables:
    """The transitions, the class areas and the summary of the pixel pairs ``counts`` holds."""
    hectares = (pixel_area_m2 or np.nan) / 10_000.0
    every = counts.all
    known = every[1:, 1:]
    rows = []
    for i, j in zip(*np.nonzero(known), strict=True):
        a, b = int(i + 1), int(j + 1)
        rows.append(
            {
                "from_id": a,
                "from_name": names.get(a, ""),
                "to_id": b,
                "to_name": names.get(b, ""),
                "pixels": int(known[i, j]),
                "hectares": float(known[i, j] * hectares),
                "changed": bool(states[a, b] == CHANGED),
                "same_cover": bool(states[a, b] == WITHIN_COVER),
            }
        )
    transitions = pd.DataFrame(
        rows,
        columns=[
            "from_id", "from_name", "to_id", "to_name", "pixels", "hectares", "changed",
            "same_cover",
        ],
    )  # fmt: skip
    compared = int(known.sum())
    present = set(np.nonzero(known.sum(1) + known.sum(0))[0] + 1)
    ids = sorted(set(names) | {int(i) for i in present})
    area_rows = []
    for cluster in ids:
        px_before, px_after = int(known[cluster - 1].sum()), int(known[:, cluster - 1].sum())
        area_rows.append(
            {
                "cluster": cluster,
                "name": names.get(cluster, ""),
                "cover": cover_of(names.get(cluster, "")),
                "pixels_before": px_before,
                "pixels_after": px_after,
                "hectares_before": px_before * hectares,
                "hectares_after": px_after * hectares,
                "delta_hectares": (px_after - px_before) * hectares,
                "delta_percent": (px_after - px_before) / px_before * 100 if px_before else np.nan,
            }
        )
    class_areas = pd.DataFrame(area_rows)
    moves = transitions[transitions["changed"]].sort_values("pixels", ascending=False).head(3)
    largest = [
        f"{_label(r.from_id, names)} -> {_label(r.to_id, names)}: "
        f"{r.pixels} px ({r.hectares:.1f} ha)"
        for r in moves.itertuples()
    ]
    overall = _share_changed(every, states)
    within = int(every[states == WITHIN_COVER].sum())
    mapped_after = int(every[:, 1:].sum())
    summary = {
        "overlap": round(compared / mapped_after, 6) if mapped_after else 0.0,
        "from_date": dates[0],
        "to_date": dates[1],
        **overall,
        "changed_hectares": overall["changed_pixels"] * hectares,
        "same_cover_pixels": within,
        "same_cover_share": round(within / compared, 6) if compared else 0.0,
        "unknown_pixels": int(every.sum() - every[0, 0] - compared) + counts.left_out,
        "confident_only": confident_only,
        "left_out_pixels": counts.left_out,
        "left_out_share": round(counts.left_out / (compared + counts.left_out), 6)
        if compared + counts.left_out
        else 0.0,
        "largest_transitions": largest,
        "pixel_area_m2": pixel_area_m2,
        "confident": {
            "silhouette_above": CONFIDENT_SILHOUETTE,
            **_share_changed(counts.confident, states),
        },
        "stable_areas": None
        if counts.stable is None
        else {"path": stable_path, **_share_changed(counts.stable, states)},
        "model": {
            "how": common.how,
            "source": common.source,
            "description": common.describe(),
            "digest": model_digest(common.model),
        },
    }
    return ChangeTables(transitions=transitions, class_areas=class_areas, summary=summary)
