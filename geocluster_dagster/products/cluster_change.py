"""The cluster_change product of a partition: what changed since the AOI's earlier date.

A folder: three single-band uint8 COGs on the dates' common grid, ``from.tif`` and ``to.tif``
(each date's cluster ids, 0 where that date has no data) and ``change.tif`` (0 unknown,
1 unchanged, 2 changed land cover, 3 another cluster of the same cover), each with its own
colour table and category names; the transitions and class areas as CSV, ``summary.json``, the
model both dates were classified with (``model.json``) and two figures. The science (one model for both dates,
what counts as change) is :mod:`geocluster_dagster.change`'s.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine
from shapely.geometry.base import BaseGeometry

from ..aoi import outline_in
from ..blocks import CHUNK_SIZE, iter_blocks
from ..categories import BandCategories, class_colours, write_pam
from ..change import (
    ChangeCounts,
    ChangeSettings,
    CommonModel,
    DatedImage,
    classify_both,
    common_model,
    describe_grid,
    grid_of,
    pair_counts,
    read_stable_areas,
    state_table,
    tabulate,
)
from ..change_states import (
    CHANGED,
    STATE_COLOURS,
    STATE_NAMES,
    UNCHANGED,
    UNKNOWN,
    WITHIN_COVER,
)
from ..cluster import feature_stack, pixel_area_m2
from ..errors import ConfigError
from ..export import BlockSink
from ..model_file import load_model, save_model
from ..progress import tracked
from ..quality import Judgement, judge_overlap, judge_plausible_change
from ..reference import check_features
from ..sieve import halo_for, sieve, unit_in_pixels
from ..storage import atomic_path, published, retire, write_json
from .cluster_model import reference_model_file
from .clusters import open_clusters, read_csv, write_csv
from .described import DENOMINATORS, Detail, Facts, FilePath, Markdown, Measure, markdown_table
from .geotiff import open_geotiff

#: The version of what this product's writer makes: raise it when a release changes its
#: files or numbers, so that Dagster shows the partitions made before as stale (code_version).
VERSION = "3"  # 2: confident_only, left_out_pixels, the maps' sieve; 3: one file per layer

#: The sieve's pass over the written change map: blocks of this edge, each read with its halo.
SIEVE_BLOCK = 1024
SIEVE_PASSES = 3

#: One single-band COG per layer, not one 3-band file: QGIS draws a 3-band uint8 file as an
#: RGB composite, and a GeoTIFF holds one colour table per file, so only one band could carry
#: its categories' colours. Each file opens in QGIS and GDAL with its own.
FROM_MAP, TO_MAP, CHANGE_MAP = "from.tif", "to.tif", "change.tif"
#: (band name, file) of the layers, in the order of the blocks the change pass computes.
LAYERS = (("from", FROM_MAP), ("to", TO_MAP), ("change", CHANGE_MAP))
#: The per-pixel layers the sieve reads, while the product is written (never published).
UNSIEVED = "unsieved"
CHANGE_PNG = "change_map.png"
TRANSITIONS_PNG = "transitions.png"
TRANSITIONS = "transitions.csv"
CLASS_AREAS = "class_areas.csv"
SUMMARY = "summary.json"
#: The model both dates were classified with, as a plain-number file.
MODEL = "model.json"


@dataclass(frozen=True)
class ClusterChangeFacts(Facts):
    """What comparing two dates counted."""

    transitions: pd.DataFrame
    class_areas: pd.DataFrame
    summary: dict[str, Any]
    model: CommonModel
    folder: Path
    settings: ChangeSettings

    def measures(self) -> list[Measure]:
        summary = self.summary
        return [
            Measure(
                "changed_hectares",
                float(summary["changed_hectares"]),
                "ha",
                "area whose land cover changed",
            ),
            Measure(
                "changed_share_of_compared",
                float(summary["changed_share"]),
                "0..1",
                f"pixels whose land cover changed, as a share of the {DENOMINATORS['compared']}",
                digits=4,
            ),
            Measure(
                "same_cover_share_of_compared",
                float(summary["same_cover_share"]),
                "0..1",
                "pixels now in another cluster of the same land cover (not change), as a share "
                f"of the {DENOMINATORS['compared']}",
                digits=4,
            ),
            Measure(
                "confident_changed_share",
                float(summary["confident"]["changed_share"]),
                "0..1",
                "changed land cover, as a share of the compared pixels both dates label "
                "confidently (simplified silhouette above 0.25)",
                digits=4,
            ),
            Measure(
                "compared_share_of_map",
                float(summary["overlap"]),
                "0..1",
                f"pixels compared, as a share of this date's {DENOMINATORS['map']}",
                digits=4,
            ),
            Measure(
                "unknown_pixels",
                int(summary["unknown_pixels"]),
                "px",
                "mapped in one date only"
                + (
                    ", or not confidently in both (confident_only)"
                    if summary.get("confident_only")
                    else ""
                ),
            ),
            *(
                [
                    Measure(
                        "left_out_share",
                        float(summary["left_out_share"]),
                        "0..1",
                        "pixels both dates label but not both confidently, left out of the "
                        "comparison (confident_only), as a share of those both label",
                        digits=4,
                    )
                ]
                if summary.get("confident_only")
                else []
            ),
        ]

    def details(self) -> dict[str, Detail]:
        # Imported here: matplotlib (behind the figures) loads only in the steps that draw.
        from ..preview import UI_MAP_CHARS, UI_MAP_PX, figure_markdown

        summary, folder = self.summary, self.folder
        areas = self.class_areas[
            ["cluster", "name", "hectares_before", "hectares_after", "delta_hectares"]
        ]
        moves = self.transitions[self.transitions["changed"]].nlargest(10, "pixels")
        return {
            "compared_with": summary["from_date"],
            "classified_by": self.model.describe(),
            "largest_transitions": Markdown(
                "\n".join(f"1. {t}" for t in summary["largest_transitions"]) or "no change"
            ),
            "class_area_deltas_ha": markdown_table(areas.round(2)),
            "transitions_top10": markdown_table(moves.round(2)),
            "preview_change_map": Markdown(
                figure_markdown(folder / CHANGE_PNG, UI_MAP_PX, UI_MAP_CHARS)
            ),
            "change_map_path": FilePath(folder / CHANGE_MAP),
            "change_map_png": FilePath(folder / CHANGE_PNG),
            "transitions_png": FilePath(folder / TRANSITIONS_PNG),
            "transitions_path": FilePath(folder / TRANSITIONS),
        }

    def judge(self) -> list[Judgement]:
        summary, settings = self.summary, self.settings
        dates = (summary["from_date"], summary["to_date"])
        return [
            Judgement(
                "comparable_ids",
                True,
                "warn",
                f"Both dates classified by {self.model.describe()}",
                {"model": self.model.how, "source": self.model.source},
            ),
            judge_overlap(summary["overlap"], settings.min_overlap, dates),
            judge_plausible_change(
                summary, settings.warn_changed_share, settings.warn_stable_change
            ),
        ]


def open_dated(date: str, geotiff: Path, clusters: Path, *, chunks: int = CHUNK_SIZE) -> DatedImage:
    """One date of the AOI to compare: its geotiff product (lazy) and the model its clusters
    map was made with."""
    image = open_geotiff(geotiff, chunks=chunks)
    stored = open_clusters(clusters)
    source = (stored.summary.get("model") or {}).get("reference") or ""
    unit = float((stored.summary.get("min_mapping_unit") or {}).get("hectares") or 0.0)
    return DatedImage(date, image, stored.model, source, min_mapping_unit_ha=unit)


def retire_cluster_change(folder: Path) -> None:
    """Remove the change product an earlier run left at ``folder`` (of maps since remade, or
    of dates no longer compared), so that nothing downstream (the STAC Item, the report)
    publishes it."""
    retire(folder)


@dataclass(frozen=True)
class StoredChange:
    """A cluster_change folder reopened."""

    folder: Path
    summary: dict[str, Any]
    transitions: pd.DataFrame
    class_areas: pd.DataFrame


def read_layers(folder: Path) -> np.ndarray:
    """The change product's layers as one (3, y, x) uint8 array: from, to, change. Whole:
    for tests and small AOIs; a scene's layers are read by window from their files."""
    import rasterio

    layers = []
    for _, file in LAYERS:
        with rasterio.open(folder / file) as src:
            layers.append(src.read(1))
    return np.stack(layers)


def open_cluster_change(folder: Path) -> StoredChange:
    """The change product's tables and summary; the map stays on disk (``folder / CHANGE_MAP``)."""
    return StoredChange(
        folder=folder,
        summary=json.loads((folder / SUMMARY).read_text()),
        transitions=read_csv(folder / TRANSITIONS),
        class_areas=read_csv(folder / CLASS_AREAS),
    )


def write_cluster_change(
    before: DatedImage,
    after: DatedImage,
    folder: Path,
    *,
    common: CommonModel | None = None,
    reference: Path | None = None,
    settings: ChangeSettings | None = None,
    label: str = "",
    preview_size: int = 1024,
    aoi: BaseGeometry | None = None,
    when: str = "",
) -> ClusterChangeFacts:
    """Classify ``before`` and ``after`` with one model pixel by pixel, count what changed and
    write the change product, with its model and two figures (``label`` names the AOI in their
    titles, ``when`` the two dates as people read them (default: the dates' keys), ``aoi``
    (lon/lat) is outlined on the map). Areas are in hectares when the grid is projected in
    metres, else NaN.

    The model is ``common``, or else the one :func:`geocluster_dagster.change.common_model`
    chooses: the maps' own when they share one, else the AOI's reference model at
    ``reference`` (a cluster_model folder or a model.json) when there is one, else one fitted
    on both dates. Raises NotComparable, before anything is written, when no model can classify
    both.
    """
    if common is None:
        file = reference_model_file(reference) if reference is not None else None
        common = common_model(
            before,
            after,
            reference=load_model(file) if file is not None and file.exists() else None,
            reference_source=str(file or ""),
        )
    from rasterio.features import geometry_mask

    from .. import plot, plot_change  # matplotlib only when figures are drawn

    settings = settings or ChangeSettings()
    model = common.model
    if grid_of(before.image) != grid_of(after.image):
        raise ConfigError(
            f"The geotiffs of {before.date} and {after.date} are on different grids "
            f"({describe_grid(before.image)} against {describe_grid(after.image)}): the AOI, "
            "crs or resolution changed between them. Materialize both dates with the same "
            "band_stack settings."
        )
    for dated in (before, after):
        check_features(
            model.features,
            [f for f in model.features if f in dated.image.data_vars],
            f"The model both dates are classified with ({common.describe()})",
        )
    features = list(model.features)
    first, template = feature_stack(before.image, features)
    second, _ = feature_stack(after.image, features)
    import dask.array as da

    stack = da.concatenate([first, second], axis=0).rechunk({0: -1})
    area = pixel_area_m2(after.image)
    states = state_table(model.names_by_id)
    transform = after.image.rio.transform()
    stable = None
    if settings.stable_areas is not None:
        stable = read_stable_areas(settings.stable_areas, after.image.rio.crs)
    counts = ChangeCounts(stable=np.zeros((256, 256), np.int64) if stable is not None else None)
    # bound with functools.partial, as LabelledBlocks binds its model: picklable for workers
    apply = functools.partial(
        classify_both,
        model=model,
        n_features=len(features),
        states=states,
        confident_only=settings.confident_only,
    )

    def layers() -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
        for index, (block, pairs, sure) in iter_blocks(stack, apply=apply):
            counts.confident += sure
            if settings.confident_only:  # only pairs labelled confidently in both dates
                counts.all += sure
                counts.left_out += int(pairs[1:, 1:].sum() - sure[1:, 1:].sum())
            else:
                counts.all += pairs
            rows, cols = index[1], index[2]
            if stable is not None and counts.stable is not None:
                inside = geometry_mask(
                    [stable],
                    out_shape=block.shape[1:],
                    transform=transform * Affine.translation(cols.start, rows.start),
                    invert=True,
                )
                if settings.confident_only:
                    inside &= ~((block[0] > 0) & (block[1] > 0) & (block[2] == UNKNOWN))
                counts.stable += pair_counts(block[0][inside], block[1][inside])
            yield (slice(0, 3), rows, cols), block

    crs = after.image.rio.crs
    # The maps' minimum mapping unit (the larger of the two dates'): the change compares maps
    # sieved like theirs, so that specks the maps do not show are not counted as change.
    unit_ha = max(before.min_mapping_unit_ha, after.min_mapping_unit_ha)
    unit = unit_in_pixels(unit_ha, area) if area else 0
    grid = template.rio.write_crs(crs)
    dates = (before.date, after.date)
    when = when or f"{before.date} -> {after.date}"
    colours = _layer_colours(model.names_by_id)
    n_blocks = int(np.prod(stack.numblocks[1:]))
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        if unit > 1:  # the per-pixel layers, then the sieved ones from them
            (tmp / UNSIEVED).mkdir()
            _write_layers(tmp / UNSIEVED, grid, layers(), n_blocks, dates, colours, cog=False)
            _sieve_layers(
                tmp / UNSIEVED, tmp, grid, dates, colours, unit, states, counts,
                stable_mask=None if stable is None else (stable, transform),
            )  # fmt: skip
        else:
            _write_layers(tmp, grid, layers(), n_blocks, dates, colours)
        tables = tabulate(
            counts, states, (before.date, after.date), model.names_by_id, area, common,
            stable_path=settings.stable_areas, confident_only=settings.confident_only,
        )  # fmt: skip
        tables.summary["min_mapping_unit"] = (
            {"hectares": unit_ha, "pixels": unit} if unit > 1 else None
        )
        # The dates as the figures' titles give them: a reader of the summary alone needs them.
        tables.summary["dates_compared"] = when
        _write_categories(tmp, counts.all, states, model.names_by_id, area, colours)
        save_model(model, tmp / MODEL)
        previews = [plot.read_preview(tmp / file, max_size=preview_size) for _, file in LAYERS]
        preview, extent = np.concatenate([p for p, _ in previews]), previews[0][1]
        title = f"{label}{' ' if label else ''}{when}"
        names = model.names_by_id
        plot_change.plot_change_map(
            preview, extent, tmp / CHANGE_PNG, names=names, title=f"Change, {title}",
            crs_label=str(crs), outline=outline_in(aoi, crs) if aoi is not None else None,
        )  # fmt: skip
        plot_change.plot_transitions(
            tables.transitions,
            tmp / TRANSITIONS_PNG,
            names_before=names,
            names_after=names,
            title=f"Transitions, {title}",
        )
        write_csv(tables.transitions, tmp / TRANSITIONS)
        write_csv(tables.class_areas, tmp / CLASS_AREAS)
        write_json(tables.summary, tmp / SUMMARY)
    return ClusterChangeFacts(
        transitions=tables.transitions,
        class_areas=tables.class_areas,
        summary=tables.summary,
        model=common,
        folder=published(folder),
        settings=settings,
    )


def _layer_colours(names: Mapping[int, str]) -> dict[str, dict[int, tuple[int, int, int, int]]]:
    """Each layer's colour table: the clusters' colours (by id) for from and to, the states'
    for change."""
    clusters = class_colours(sorted(names))
    return {"from": clusters, "to": clusters, "change": dict(STATE_COLOURS)}


def _write_layers(
    folder: Path,
    grid: xr.DataArray,
    blocks: Iterator[tuple[tuple[slice, ...], np.ndarray]],
    n_blocks: int,
    dates: tuple[str, str],
    colours: Mapping[str, Mapping[int, tuple[int, int, int, int]]],
    *,
    cog: bool = True,
) -> None:
    """The layers' files in ``folder`` from the (3, y, x) blocks ``blocks`` yields (from, to,
    change), written in one pass; ``cog=False`` leaves them tiled and uncompressed (the
    sieve's input)."""
    tags = {
        "from_date": dates[0],
        "to_date": dates[1],
        "change_values": f"{UNKNOWN} unknown, {UNCHANGED} unchanged, {CHANGED} changed "
        f"land cover, {WITHIN_COVER} another cluster of the same cover",
    }
    with contextlib.ExitStack() as files:
        sinks = [
            files.enter_context(
                BlockSink(
                    grid, folder / file, dtype="uint8", nodata=0, description=band, tags=tags,
                    overview_resampling="nearest",  # ids and states are categories
                    colormap=colours[band], cog=cog,
                )
            )
            for band, file in LAYERS
        ]  # fmt: skip
        task = "classifying both dates and writing the change map"
        for index, block in tracked(blocks, task, total=n_blocks):
            for sink, layer in zip(sinks, block, strict=True):
                sink.write(index, layer[np.newaxis])


def _sieve_layers(
    source: Path,
    folder: Path,
    grid: xr.DataArray,
    dates: tuple[str, str],
    colours: Mapping[str, Mapping[int, tuple[int, int, int, int]]],
    unit: int,
    states: np.ndarray,
    counts: ChangeCounts,
    *,
    stable_mask: tuple[Any, Any] | None,
) -> None:
    """Sieve the per-pixel from and to layers in ``source`` to ``unit`` pixels, block by block
    with the seamless halo (:mod:`geocluster_dagster.sieve`), state the change from the sieved
    pair and write the layers into ``folder``; pixels left out for want of confidence stay
    unknown. ``counts.all`` (and the stable areas') are counted again from the sieved maps;
    the confident pixels' counts stay those of the per-pixel labels. ``source`` is removed."""
    import rasterio
    from rasterio.features import geometry_mask
    from rasterio.windows import Window

    halo = halo_for(unit, SIEVE_PASSES)
    counts.all = np.zeros((256, 256), np.int64)
    if counts.stable is not None:
        counts.stable = np.zeros((256, 256), np.int64)
    with contextlib.ExitStack() as files:
        sources = [files.enter_context(rasterio.open(source / file)) for _, file in LAYERS]
        height, width = sources[0].height, sources[0].width

        def blocks() -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
            for row in range(0, height, SIEVE_BLOCK):
                for col in range(0, width, SIEVE_BLOCK):
                    r0, c0 = max(0, row - halo), max(0, col - halo)
                    r1 = min(height, row + SIEVE_BLOCK + halo)
                    c1 = min(width, col + SIEVE_BLOCK + halo)
                    window = Window(c0, r0, c1 - c0, r1 - r0)
                    layers = np.stack([src.read(1, window=window) for src in sources])
                    first, second = (sieve(layers[i], unit, passes=SIEVE_PASSES) for i in (0, 1))
                    rows = slice(row - r0, min(height, row + SIEVE_BLOCK) - r0)
                    cols = slice(col - c0, min(width, col + SIEVE_BLOCK) - c0)
                    old = layers[:, rows, cols]
                    first, second = first[rows, cols], second[rows, cols]
                    left_out = (old[2] == UNKNOWN) & (old[0] > 0) & (old[1] > 0)
                    change = np.where(left_out, UNKNOWN, states[first, second]).astype(np.uint8)
                    kept = ~left_out
                    counts.all += pair_counts(first[kept], second[kept])
                    at = (slice(row, row + first.shape[0]), slice(col, col + first.shape[1]))
                    if stable_mask is not None and counts.stable is not None:
                        shape, transform = stable_mask
                        inside = geometry_mask(
                            [shape], out_shape=first.shape, invert=True,
                            transform=transform * Affine.translation(at[1].start, at[0].start),
                        ) & kept  # fmt: skip
                        counts.stable += pair_counts(first[inside], second[inside])
                    yield (slice(0, 3), *at), np.stack([first, second, change])

        n_blocks = -(-height // SIEVE_BLOCK) * -(-width // SIEVE_BLOCK)
        _write_layers(folder, grid, blocks(), n_blocks, dates, colours)
    shutil.rmtree(source)


def _write_categories(
    folder: Path,
    counts: np.ndarray,
    states: np.ndarray,
    names: Mapping[int, str],
    area: float | None,
    colours: Mapping[str, Mapping[int, tuple[int, int, int, int]]],
) -> None:
    """Each layer's colour table (``colours``, as :func:`_layer_colours` gives them), category
    names and attribute table (its ``.aux.xml``)."""
    per_state = {s: int(counts[states == s].sum()) for s in STATE_NAMES}
    per_layer = {
        "from": (dict(names), _totals(counts.sum(axis=1))),
        "to": (dict(names), _totals(counts.sum(axis=0))),
        "change": (STATE_NAMES, per_state),
    }
    for band, file in LAYERS:
        by_value, totals = per_layer[band]
        write_pam(folder / file, [BandCategories(by_value, colours[band], totals, area, band)])


def _totals(per_value: np.ndarray) -> dict[int, int]:
    return {int(v): int(n) for v, n in enumerate(per_value) if v > 0 and n > 0}
