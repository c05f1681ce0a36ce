"""Judging each product: is a partition's composite, GeoTIFF and map good enough to use?

Each judgement is plain data (passed, severity, what was measured, what to do); the Dagster
layer turns them into asset checks. Severity ``error`` means that what follows would be built
on a broken product (the check blocks the downstream assets); ``warn`` means usable, but look.
The thresholds are settings with these defaults; they are this package's choices, stated with
their reasons, except where a source is named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .bands import REFLECTANCE_BANDS
from .encoding import DN_DTYPE
from .errors import ConfigError
from .fields import described
from .naming import UNLABELLED
from .valid_range import DONE_TO_THEM

Severity = Literal["warn", "error"]

#: The range a reflectance band must stay in when its producer documents none (a stack whose
#: sensor this package does not know): wide enough for every real pixel of either sensor
#: (Sentinel-2 L2A's -0.1 offset since baseline 04.00, bright targets a little above 1).
#: Bands with a documented range are judged by it (:mod:`geocluster_dagster.valid_range`).
REFLECTANCE_RANGE = (-0.2, 1.6)

#: Warn when more than this share of a band's composite values fell outside its documented
#: valid range before they were clamped or masked: beyond a few dark-water or shadow pixels,
#: the atmospheric correction struggled over much of the AOI (or the scale/offset is wrong).
#: This package's choice.
WARN_OUTSIDE_VALID_SHARE = 0.05

#: How far a written value may sit beyond its range: the DN step of the stored encoding.
_WRITTEN_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Judgement:
    """One check's verdict on one partition's product."""

    name: str
    passed: bool
    severity: Severity
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MosaicQuality:
    """How clear a composite must be."""

    warn_clear_fraction: float = described(
        0.8,
        "Warn when less than this share of the AOI has a clear observation: with a fifth of "
        "the AOI missing, its months no longer compare area for area.",
    )
    error_clear_fraction: float = described(
        0.2,
        "Fail (and stop the assets downstream) when less than this share of the AOI is clear: "
        "clusters fitted on a fifth of an AOI describe a different area.",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.error_clear_fraction <= self.warn_clear_fraction <= 1:
            raise ConfigError(
                f"error_clear_fraction={self.error_clear_fraction!r} and warn_clear_fraction="
                f"{self.warn_clear_fraction!r} are invalid: use 0 <= error <= warn <= 1."
            )


@dataclass(frozen=True)
class ClusterQuality:
    """How balanced a cluster map must be."""

    min_cluster_share: float = described(
        0.005,
        "Warn when a cluster holds less than this share of the mapped pixels (0.5 %: a "
        "cluster that small is usually noise, edge pixels or residual cloud).",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.min_cluster_share < 1:
            raise ConfigError(
                f"min_cluster_share={self.min_cluster_share!r} is invalid: use a share in [0, 1)."
            )


@dataclass(frozen=True)
class SeparationQuality:
    """How well separated the clusters must be."""

    min_silhouette: float = described(
        0.2,
        "Warn when the mean sampled silhouette is below this: clusters that overlap this much "
        "are weakly separated (Kaufman & Rousseeuw 1990 call values under 0.25 'no substantial "
        "structure').",
    )

    def __post_init__(self) -> None:
        if not -1 <= self.min_silhouette <= 1:
            raise ConfigError(
                f"min_silhouette={self.min_silhouette!r} is invalid: a silhouette is in [-1, 1]."
            )


def judge_scenes(item_count: int, cloud_covers: Sequence[float | None], reason: str) -> Judgement:
    """At least one scene; count and mean cloud cover recorded. No scene is a warning: the
    partition is skipped as "no imagery", not failed."""
    covers = [c for c in cloud_covers if c is not None]
    mean_cover = round(sum(covers) / len(covers), 2) if covers else None
    metadata = {"scenes": item_count, "mean_cloud_cover": mean_cover}
    if item_count == 0:
        return Judgement("has_scenes", False, "warn", f"No imagery: {reason}", metadata)
    return Judgement(
        "has_scenes",
        True,
        "warn",
        f"{item_count} scene(s), mean cloud cover {mean_cover} %",
        metadata,
    )


def judge_clear_fraction(clear_fraction: float, aoi_pixels: int, q: MosaicQuality) -> Judgement:
    metadata = {"clear_share_of_aoi": round(clear_fraction, 4), "aoi_pixels": aoi_pixels}
    share = f"{clear_fraction:.1%} of the AOI has a clear observation"
    if clear_fraction < q.error_clear_fraction:
        return Judgement(
            "clear_fraction",
            False,
            "error",
            f"Only {share} (below error_clear_fraction={q.error_clear_fraction}): the downstream "
            "assets are not built. Raise max_cloud_cover (stac_items), drop mask flags "
            "(band_stack), use longer date windows, or lower error_clear_fraction (mosaic).",
            metadata,
        )
    if clear_fraction < q.warn_clear_fraction:
        return Judgement(
            "clear_fraction",
            False,
            "warn",
            f"{share} (below warn_clear_fraction={q.warn_clear_fraction}): the map covers part "
            "of the AOI.",
            metadata,
        )
    return Judgement("clear_fraction", True, "error", share, metadata)


def judge_cog(
    files: Mapping[Path, Sequence[str]],
    stats: Mapping[str, Any],
    valid_range: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Judgement]:
    """Each file (path -> the bands it promises) is a valid COG (rio-cogeo's validator) with
    its bands named as promised and the nodata of its type (0 for uint16 DN with a scale, NaN
    for float), and the reflectances within their valid range (:func:`judge_reflectance`)."""
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    errors: list[str] = []
    warnings: list[str] = []
    for path in files:
        try:
            valid, found, cautions = cog_validate(str(path), quiet=True)
            if valid:
                _read_last_tiles(path)
        except Exception as err:  # rio-cogeo and rasterio raise their own errors for broken files
            valid, found, cautions = False, [f"Error: {type(err).__name__}: {err}"], []
        errors += [f"{path.name}: {e}" for e in found] or (
            [] if valid else [f"{path.name}: invalid"]
        )
        warnings += [f"{path.name}: {w}" for w in cautions]
    judgements = [
        Judgement(
            "valid_cog",
            not errors,
            "error",
            "Valid Cloud-Optimized GeoTIFFs: " + ", ".join(p.name for p in files)
            if not errors
            else f"Not a valid COG ({'; '.join(errors)}): materialize geotiff again.",
            {"errors": errors, "warnings": warnings},
        )
    ]
    if any(": Error" in e for e in errors):
        return judgements  # unreadable: nothing more to look at
    found_bands: dict[str, list[str]] = {}
    wrong: list[str] = []
    for path, promised in files.items():
        with rasterio.open(str(path)) as src:
            names, nodata, dtype = list(src.descriptions), src.nodata, src.dtypes[0]
        found_bands[path.name] = names
        expected_nodata = 0 if dtype == DN_DTYPE else float("nan")
        nodata_ok = nodata is not None and (
            nodata == expected_nodata or (math.isnan(nodata) and math.isnan(expected_nodata))
        )
        if names != list(promised) or not nodata_ok:
            wrong.append(
                f"{path.name} holds {names} ({dtype}, nodata {nodata}): expected {list(promised)} "
                f"with nodata {expected_nodata}"
            )
    judgements.append(
        Judgement(
            "bands_as_promised",
            not wrong,
            "error",
            "; ".join(f"{name}: {', '.join(names)}" for name, names in found_bands.items())
            if not wrong
            else "; ".join(wrong),
            {"bands": found_bands},
        )
    )
    judgements.append(judge_reflectance(stats, valid_range or {}))
    return judgements


def judge_reflectance(
    stats: Mapping[str, Any], valid_range: Mapping[str, Mapping[str, Any]]
) -> Judgement:
    """At most :data:`WARN_OUTSIDE_VALID_SHARE` of each reflectance band's composite values
    lay outside its documented valid range (``valid_range``: the mosaic's ``valid_range``
    tag), and the written values are where they should be: clamped or masked bands within
    that range, kept ones and bands without a documented range within
    :data:`REFLECTANCE_RANGE` (outside it, the scale/offset is wrong)."""
    ranges: dict[str, list[float]] = {}
    written_outside: dict[str, list[float]] = {}
    outside_share: dict[str, float] = {}
    for band, s in stats.items():
        if band not in REFLECTANCE_BANDS or s.get("min") is None:
            continue
        documented = valid_range.get(band)
        # Clamped or masked values must lie in the documented range; kept ones (and bands
        # without one) in the range every real pixel of a right scale/offset stays in.
        low, high = (
            (float(documented["low"]), float(documented["high"]))
            if documented and documented.get("policy") in ("clamp", "mask")
            else REFLECTANCE_RANGE
        )
        ranges[band] = [low, high]
        if s["min"] < low - _WRITTEN_TOLERANCE or s["max"] > high + _WRITTEN_TOLERANCE:
            written_outside[band] = [s["min"], s["max"]]
        if documented and int(documented.get("checked", 0)):
            outside_share[band] = round(
                int(documented.get("outside", 0)) / int(documented["checked"]), 6
            )
    policy = next((str(v.get("policy")) for v in valid_range.values()), None)
    many = {b: v for b, v in outside_share.items() if v > WARN_OUTSIDE_VALID_SHARE}
    problems = []
    if written_outside:
        problems.append(
            f"written values outside the valid range in {written_outside}: check the scale/"
            "offset of the collection's raster:bands"
        )
    if many:
        problems.append(
            f"{', '.join(f'{b} {v:.1%}' for b, v in many.items())} of the composite's values "
            f"were outside the documented valid range and were {DONE_TO_THEM.get(str(policy))} (more than "
            f"{WARN_OUTSIDE_VALID_SHARE:.0%}): dark water, shadow or haze the atmospheric "
            "correction did not resolve; look at the true-colour figure, or set the mosaic's "
            "`out_of_range` to 'mask' to leave those pixels out"
        )
    summary = "; ".join(f"{b} {v:.2%}" for b, v in outside_share.items() if v) or "none"
    return Judgement(
        "physical_reflectance",
        not problems,
        "warn",
        f"Reflectance within its documented valid range; values outside it, "
        f"{DONE_TO_THEM.get(str(policy), 'none found')}: {summary}"
        if not problems
        else "; ".join(problems) + ".",
        {
            "range": ranges,
            "out_of_range": written_outside,
            "outside_valid_range_share": outside_share,
            **({"out_of_range_policy": policy} if policy else {}),
        },
    )


def _read_last_tiles(path: Path) -> None:
    """Read the tiles stored last (full resolution and smallest overview): the validator reads
    only the header and the tile index, so a file cut short (a copy that stopped, a full disk)
    would pass it."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(str(path)) as src:
        block_h, block_w = src.block_shapes[0]
        last = Window(
            (src.width - 1) // block_w * block_w,
            (src.height - 1) // block_h * block_h,
            min(block_w, src.width - (src.width - 1) // block_w * block_w),
            min(block_h, src.height - (src.height - 1) // block_h * block_h),
        )
        src.read(window=last)
        src.read(out_shape=(src.count, max(1, src.height // 64), max(1, src.width // 64)))


def judge_clusters(
    sizes: Mapping[int, int], names: Mapping[int, str], q: ClusterQuality
) -> list[Judgement]:
    """No empty cluster, the smallest above ``min_cluster_share``, every cluster named."""
    total = sum(sizes.values()) or 1
    empty = sorted(i for i, n in sizes.items() if n == 0)
    smallest = min(sizes, key=lambda i: sizes[i])
    share = sizes[smallest] / total
    unnamed = sorted(i for i, name in names.items() if name == UNLABELLED)
    return [
        Judgement(
            "no_empty_cluster",
            not empty,
            "warn",
            "Every cluster holds pixels"
            if not empty
            else f"Clusters {empty} hold no pixel of this partition (a reference model's cover "
            "absent this date, or too large an n_clusters).",
            {"empty_clusters": empty},
        ),
        Judgement(
            "smallest_cluster_share",
            share >= q.min_cluster_share,
            "warn",
            f"The smallest cluster, {smallest}, holds {share:.2%} of the mapped pixels"
            + (
                ""
                if share >= q.min_cluster_share
                else f" (below min_cluster_share={q.min_cluster_share}): try a smaller n_clusters"
            ),
            {"smallest_cluster": smallest, "smallest_share": round(share, 5)},
        ),
        Judgement(
            "names_assigned",
            not unnamed,
            "warn",
            "Every cluster has a land-cover name"
            if not unnamed
            else f"Clusters {unnamed} fit no naming rule: name them with class_names.",
            {"unlabelled": unnamed},
        ),
    ]


def judge_silhouette(silhouette: float, q: SeparationQuality) -> Judgement:
    ok = math.isfinite(silhouette) and silhouette >= q.min_silhouette
    return Judgement(
        "silhouette",
        ok,
        "warn",
        f"Mean sampled silhouette {silhouette:.3f}"
        + ("" if ok else f" (below min_silhouette={q.min_silhouette}): the clusters overlap"),
        {"silhouette": round(silhouette, 4) if math.isfinite(silhouette) else None},
    )


def judge_overlap(overlap: float, min_overlap: float, dates: tuple[str, str]) -> Judgement:
    """The two dates of a change overlap enough to compare."""
    ok = overlap >= min_overlap
    return Judgement(
        "overlap",
        ok,
        "warn",
        f"{overlap:.1%} of the {dates[1]} map also has data on {dates[0]}"
        + ("" if ok else f" (below min_overlap={min_overlap}): the change covers part of the AOI"),
        {"overlap": round(overlap, 4), "from_date": dates[0], "to_date": dates[1]},
    )


def judge_plausible_change(
    summary: Mapping[str, Any], warn_changed_share: float, warn_stable_change: float
) -> Judgement:
    """The change is believable: little of what both dates label confidently changed land cover,
    and little of what the user marked as stable did (the summary of
    :func:`geocluster_dagster.products.cluster_change.write_cluster_change`)."""
    confident = summary["confident"]
    stable = summary.get("stable_areas")
    problems = []
    if confident["changed_share"] > warn_changed_share:
        problems.append(
            f"{confident['changed_share']:.1%} of the {confident['compared_pixels']} pixels both "
            f"dates label confidently changed land cover (above warn_changed_share="
            f"{warn_changed_share}): check the cloud masks, that both dates are of one season, "
            "and the change map, before trusting it; raise warn_changed_share for a known event"
        )
    if stable and stable["changed_share"] > warn_stable_change:
        problems.append(
            f"{stable['changed_share']:.1%} of the {stable['compared_pixels']} compared pixels in "
            f"the stable_areas changed land cover (above warn_stable_change={warn_stable_change}):"
            " the change there is the method's, not the ground's"
        )
    measured = (
        f"{confident['changed_share']:.1%} of the confidently labelled pixels changed land cover"
        + (f"; {stable['changed_share']:.1%} of the stable areas did" if stable else "")
    )
    return Judgement(
        "plausible_change",
        not problems,
        "warn",
        "; ".join(problems) if problems else measured,
        {
            "confident_changed_share": confident["changed_share"],
            "confident_pixels": confident["compared_pixels"],
            "stable_changed_share": stable["changed_share"] if stable else None,
            "stable_pixels": stable["compared_pixels"] if stable else None,
        },
    )
