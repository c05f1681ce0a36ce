"""What changed between two dates of an AOI: from -> to per pixel, in pixels and hectares.

Both maps must use the same cluster ids for the same land cover, which holds when they come
from the same reference model (applied, or matched to it): maps fitted each on its own number
their clusters by brightness, and comparing those ids would report change where there is none.
So the comparison is refused unless both maps name the same reference model.

The maps are read block by block (memory stays bounded on whole scenes) and written as one
3-band uint8 COG on their common grid: ``from`` and ``to`` ids (0 where that date has no data)
and ``change`` (0 unknown: either date has no data, e.g. masked cloud; 1 unchanged; 2 changed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window

from .categories import BandCategories, class_colours, write_pam
from .cluster import pixel_area_m2
from .errors import ConfigError, NotComparable
from .export import open_single_band, write_geotiff
from .fields import described
from .reference import is_date_key
from .storage import atomic_path, write_json

CHANGE_MAP = "change.tif"
CHANGE_PNG = "change_map.png"
TRANSITIONS_PNG = "transitions.png"
TRANSITIONS = "transitions.csv"
CLASS_AREAS = "class_areas.csv"
SUMMARY = "summary.json"

#: Values of the change map's ``change`` band.
UNKNOWN, UNCHANGED, CHANGED = 0, 1, 2


@dataclass(frozen=True)
class ChangeSettings:
    """Which two dates are compared, and when they overlap too little to say much."""

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

    def __post_init__(self) -> None:
        if self.compare_with is not None and not is_date_key(self.compare_with):
            raise ConfigError(
                f"compare_with={self.compare_with!r} is not a date partition key: write it as "
                "YYYY-MM-DD (the first day of its window, as the UI shows it), or leave it empty."
            )
        if not 0 <= self.min_overlap <= 1:
            raise ConfigError(
                f"min_overlap={self.min_overlap!r} is invalid: use a share in [0, 1]."
            )

    def earlier(self, dates: list[str], date: str) -> str | None:
        """The date to compare ``date`` with, among the AOI's ``dates`` with a map."""
        if self.compare_with is not None:
            if self.compare_with not in dates:
                raise ConfigError(
                    f"compare_with={self.compare_with} has no clusters map for this AOI "
                    f"(dates with one: {dates or 'none'}): materialize clusters there first."
                )
            return self.compare_with
        before = [d for d in dates if d < date]
        return before[-1] if before else None


@dataclass(frozen=True)
class DatedMap:
    """One date's cluster map, and what its ids mean."""

    date: str
    path: Path
    names: Mapping[int, str]
    """Cluster id -> land-cover name."""
    model: str
    """Which model made the map: its summary's model record (how, reference)."""


@dataclass(frozen=True)
class ChangeFacts:
    """What comparing two dates counted."""

    transitions: pd.DataFrame
    class_areas: pd.DataFrame
    summary: dict[str, Any]


def comparable(before: DatedMap, after: DatedMap) -> None:
    """Refuse two maps whose ids need not mean the same land cover: unless both come from one
    reference model (the same parameters, not just the same path: a reference fitted again
    keeps its path and changes its ids), the same id may be another cover."""
    records = [json.loads(m.model) for m in (before, after)]
    digests = [r.get("reference_digest") for r in records]
    if None not in digests and digests[0] == digests[1]:
        return
    alone = [
        m.date for m, r in zip((before, after), records, strict=True) if not r.get("reference")
    ]
    if alone:
        why = f"the map(s) of {', '.join(alone)} were fitted alone, so their ids follow brightness"
    elif records[0]["reference"] == records[1]["reference"]:
        why = (
            f"the reference model {records[0]['reference']} was fitted again between them, so "
            "the same id may be another cover"
        )
    else:
        why = (
            f"they come from different reference models ({records[0]['reference']} and "
            f"{records[1]['reference']})"
        )
    raise NotComparable(
        f"Cannot compare {before.date} with {after.date}: {why}. Fit the AOI's reference model "
        "(asset cluster_model) once and materialize clusters of both dates again (model: "
        "partition matches their ids to it, model: aoi_reference applies it)."
    )


def _blocks(src: rasterio.DatasetReader) -> Iterator[Window]:
    for _, window in src.block_windows(1):
        yield window


def _grid(src: rasterio.DatasetReader) -> tuple[Any, ...]:
    return (src.crs, src.transform, src.width, src.height)


def compare_maps(
    before: DatedMap,
    after: DatedMap,
    folder: Path,
    *,
    label: str = "",
    preview_size: int = 1024,
) -> ChangeFacts:
    """Compare ``before`` with ``after`` pixel by pixel and write the change product, with its
    two figures (``label`` names the AOI in their titles). Areas are in hectares when the grid
    is projected in metres, else NaN."""
    from . import plot, plot_change  # matplotlib only when figures are drawn

    comparable(before, after)
    area = pixel_area_m2(open_single_band(before.path))

    with rasterio.open(before.path) as a, rasterio.open(after.path) as b:
        if _grid(a) != _grid(b):
            raise ConfigError(
                f"The maps of {before.date} and {after.date} are on different grids ({a.width}x"
                f"{a.height} at {a.transform.c:.1f}, {a.transform.f:.1f} in {a.crs} against "
                f"{b.width}x{b.height} at {b.transform.c:.1f}, {b.transform.f:.1f} in {b.crs}): "
                "the AOI, crs or resolution changed between them. Materialize both dates with "
                "the same band_stack settings."
            )
        counts = np.zeros((256, 256), dtype=np.int64)
        profile = {"crs": a.crs, "transform": a.transform, "width": a.width, "height": a.height}
        windows = list(_blocks(a))

        def layers() -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
            for window in windows:
                first = a.read(1, window=window)
                second = b.read(1, window=window)
                np.add.at(counts, (first.ravel(), second.ravel()), 1)
                state = np.where(
                    (first == 0) | (second == 0),
                    UNKNOWN,
                    np.where(first == second, UNCHANGED, CHANGED),
                ).astype(np.uint8)
                rows = slice(window.row_off, window.row_off + window.height)
                cols = slice(window.col_off, window.col_off + window.width)
                yield (slice(0, 3), rows, cols), np.stack([first, second, state])

        with atomic_path(folder) as tmp:
            tmp.mkdir()
            _write_change_map(tmp / CHANGE_MAP, profile, layers(), before, after)
            facts = _tables(counts, before, after, area)
            _write_categories(tmp / CHANGE_MAP, counts, before, after, area)
            preview, extent = plot.read_preview(tmp / CHANGE_MAP, max_size=preview_size)
            title = f"{label}{' ' if label else ''}{before.date} -> {after.date}"
            plot_change.plot_change_map(
                preview,
                extent,
                tmp / CHANGE_PNG,
                names=after.names,
                title=f"Change, {title}",
                crs_label=str(a.crs),
            )
            plot_change.plot_transitions(
                facts.transitions,
                tmp / TRANSITIONS_PNG,
                names_before=before.names,
                names_after=after.names,
                title=f"Transitions, {title}",
            )
            facts.transitions.to_csv(tmp / TRANSITIONS, index=False)
            facts.class_areas.to_csv(tmp / CLASS_AREAS, index=False)
            write_json(facts.summary, tmp / SUMMARY)
    return facts


def _write_change_map(
    path: Path,
    profile: dict[str, Any],
    layers: Iterator[tuple[tuple[slice, ...], np.ndarray]],
    before: DatedMap,
    after: DatedMap,
) -> None:
    """The 3-band COG from the blocks ``layers`` yields; the Dataset only gives the grid."""
    import dask.array as da
    import rioxarray  # noqa: F401  (the .rio accessor)
    import xarray as xr

    transform, height, width = profile["transform"], profile["height"], profile["width"]
    coords = {
        "y": transform.f + transform.e * (np.arange(height) + 0.5),
        "x": transform.c + transform.a * (np.arange(width) + 0.5),
    }
    empty = da.zeros((height, width), dtype=np.uint8, chunks=1024)
    grid = xr.Dataset(
        {name: (("y", "x"), empty) for name in ("from", "to", "change")}, coords=coords
    ).rio.write_crs(profile["crs"])
    write_geotiff(
        grid,
        path,
        cog=True,
        nodata=0,
        tags={
            "from_date": before.date,
            "to_date": after.date,
            "change_values": f"{UNKNOWN} unknown, {UNCHANGED} unchanged, {CHANGED} changed",
        },
        overview_resampling="nearest",  # ids and states are categories
        blocks=layers,
        task="writing the change map",
    )


#: Colours and names of the ``change`` band (unknown stays transparent, like nodata).
STATE_NAMES = {UNCHANGED: "unchanged", CHANGED: "changed"}
STATE_COLOURS = {
    UNKNOWN: (0, 0, 0, 0),
    UNCHANGED: (220, 220, 220, 255),
    CHANGED: (214, 39, 40, 255),
}


def _write_categories(
    tif: Path, counts: np.ndarray, before: DatedMap, after: DatedMap, area: float | None
) -> None:
    """The colour tables, category names and attribute tables of the three bands."""
    ids = sorted(set(before.names) | set(after.names))
    colours = class_colours(ids)
    known = counts[1:, 1:]
    changed = int(known.sum() - np.trace(known))
    write_pam(
        tif,
        [
            BandCategories(dict(before.names), colours, _totals(counts.sum(axis=1)), area, "from"),
            BandCategories(dict(after.names), colours, _totals(counts.sum(axis=0)), area, "to"),
            BandCategories(
                STATE_NAMES,
                STATE_COLOURS,
                {UNCHANGED: int(np.trace(known)), CHANGED: changed},
                area,
                "change",
            ),
        ],
    )


def _totals(per_value: np.ndarray) -> dict[int, int]:
    return {int(v): int(n) for v, n in enumerate(per_value) if v > 0 and n > 0}


def _label(cluster: int, names: Mapping[int, str]) -> str:
    return f"{cluster} {names[cluster]}" if cluster in names else str(cluster)


def _tables(
    counts: np.ndarray, before: DatedMap, after: DatedMap, pixel_area_m2: float | None
) -> ChangeFacts:
    hectares = (pixel_area_m2 or np.nan) / 10_000.0
    known = counts[1:, 1:]
    rows = []
    for i, j in zip(*np.nonzero(known), strict=True):
        rows.append(
            {
                "from_id": int(i + 1),
                "from_name": before.names.get(int(i + 1), ""),
                "to_id": int(j + 1),
                "to_name": after.names.get(int(j + 1), ""),
                "pixels": int(known[i, j]),
                "hectares": float(known[i, j] * hectares),
                "changed": bool(i != j),
            }
        )
    transitions = pd.DataFrame(
        rows, columns=["from_id", "from_name", "to_id", "to_name", "pixels", "hectares", "changed"]
    )
    compared = int(known.sum())
    changed = int(known.sum() - np.trace(known))
    present = set(np.nonzero(known.sum(1) + known.sum(0))[0] + 1)
    ids = sorted(set(before.names) | set(after.names) | {int(i) for i in present})
    area_rows = []
    for cluster in ids:
        px_before, px_after = int(known[cluster - 1].sum()), int(known[:, cluster - 1].sum())
        area_rows.append(
            {
                "cluster": cluster,
                "name": after.names.get(cluster, before.names.get(cluster, "")),
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
        f"{_label(r.from_id, before.names)} -> {_label(r.to_id, after.names)}: "
        f"{r.pixels} px ({r.hectares:.1f} ha)"
        for r in moves.itertuples()
    ]
    mapped_after = int(counts[:, 1:].sum())
    summary = {
        "overlap": round(compared / mapped_after, 6) if mapped_after else 0.0,
        "from_date": before.date,
        "to_date": after.date,
        "compared_pixels": compared,
        "changed_pixels": changed,
        "changed_share": round(changed / compared, 6) if compared else 0.0,
        "changed_hectares": changed * hectares,
        "unknown_pixels": int(counts.sum() - counts[0, 0] - compared),
        "largest_transitions": largest,
        "pixel_area_m2": pixel_area_m2,
        "reference": json.loads(after.model).get("reference"),
    }
    return ChangeFacts(transitions=transitions, class_areas=class_areas, summary=summary)
