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

Severity = Literal["warn", "error"]

#: The physical range of surface reflectance the GeoTIFF's reflectance bands must stay in.
#: Landsat Collection 2 SR is valid for DN 7273-43636, i.e. reflectance 0.0-1.0 after
#: scale 2.75e-05 and offset -0.2 (USGS, Landsat 8-9 Collection 2 Level 2 Science Product Guide);
#: Sentinel-2 L2A since processing baseline 04.00 carries a -0.1 offset (ESA, 2022), and bright
#: targets (snow, specular roofs) exceed 1.0 a little. So -0.2 .. 1.6 holds every real pixel.
REFLECTANCE_RANGE = (-0.2, 1.6)


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


def judge_cog(files: Mapping[Path, Sequence[str]], stats: Mapping[str, Any]) -> list[Judgement]:
    """Each file (path -> the bands it promises) is a valid COG (rio-cogeo's validator) with
    its bands named as promised and the nodata of its type (0 for uint16 DN with a scale, NaN
    for float), and the reflectances stay in :data:`REFLECTANCE_RANGE`."""
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
    low, high = REFLECTANCE_RANGE
    out_of_range = {
        band: [s["min"], s["max"]]
        for band, s in stats.items()
        if band in REFLECTANCE_BANDS
        and s.get("min") is not None
        and (s["min"] < low or s["max"] > high)
    }
    judgements.append(
        Judgement(
            "physical_reflectance",
            not out_of_range,
            "warn",
            f"Every reflectance band within {low}..{high}"
            if not out_of_range
            else f"Reflectance outside {low}..{high} in {out_of_range}: check the scale/offset "
            "of the collection's raster:bands, or the mask.",
            {"range": list(REFLECTANCE_RANGE), "out_of_range": out_of_range},
        )
    )
    return judgements


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
