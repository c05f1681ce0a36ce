"""The diagnostics of one partition's clustering: which scores and figures, on which samples.

Writes a folder of PNG figures (cluster map, its confidence, true and false colour, spectral signatures,
silhouette, elbow, cluster sizes, red-vs-NIR density), ``scores.json`` and ``elbow.csv``,
whole or not at all. Scores come from the model's fit sample; the map figures are read from
the COGs' overviews, never at full resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from shapely.geometry.base import BaseGeometry

from .. import evaluate
from ..aoi import outline_in
from ..bands import REFLECTANCE_BANDS, WAVELENGTH_UM
from ..cluster import CONFIDENCE_NODATA, CONFIDENT_SILHOUETTE
from ..density import DENSITY_BINS, DensityGrid
from ..errors import ConfigError
from ..fields import described
from ..preview import figure_markdown
from ..progress import heartbeat
from ..quality import Judgement, SeparationQuality, judge_silhouette
from ..storage import atomic_path, location, published, write_json
from .clusters import CONFIDENCE, ELBOW, StoredClusters, low_confidence_share, write_csv
from .described import Detail, Facts, FilePath, Markdown, Measure

SCORES = "scores.json"

#: Colour composites drawn when the GeoTIFF has their bands: (figure, title, bands as R, G, B).
COMPOSITES = (
    ("true_colour", "True colour (red, green, blue)", ("red", "green", "blue")),
    ("false_colour", "False colour (NIR, red, green)", ("nir", "red", "green")),
)

#: The version of what this product's writer makes: raise it when a release changes its
#: files or numbers, so that Dagster shows the partitions made before as stale (code_version).
VERSION = "3"  # 2: the confidence figure; 3: maps outline the AOI, with scale bar and north arrow

#: The figures worth a thumbnail in the partition's metadata, in the order they are shown.
PREVIEWS = ("cluster_map", "true_colour", "signatures", "silhouette")


@dataclass(frozen=True)
class DiagnosticsSettings:
    """How much of the fit sample the scores use, and how large the figures are."""

    elbow_k_min: int = described(2, "Smallest k of the elbow curve.")
    elbow_k_max: int = described(12, "Largest k of the elbow curve.")
    elbow_sample_size: int = described(
        evaluate.ELBOW_SAMPLE_SIZE,
        "Pixels (seeded subset of the fit sample) the elbow curve refits k-means on.",
    )
    silhouette_sample_size: int = described(
        10_000, "Pixels (seeded sample) for the silhouette: it is quadratic in pixels."
    )
    preview_size: int = described(
        1024, "Longest side in pixels of map previews (read from overviews)."
    )
    density_bins: int = described(
        DENSITY_BINS,
        "Bins per axis of the red-vs-NIR density scatter (the default's counts come with the "
        "clusters product; another number counts them again from the GeoTIFF).",
    )
    figures: bool = described(
        True,
        "Draw the nine figures (and their previews in the UI). false: the scores, the elbow "
        "curve and the silhouette check only, which saves the drawing. A backfill's runs "
        "take the run tag geocluster/figures: false instead (docs/deployment.md, Many AOIs).",
    )
    figures_in_ui: bool = described(
        False,
        "Also embed every figure, legible (1000 px), in the materialization's metadata, to "
        "read it on the asset page (about 300 kB more of event log per partition). false: "
        "the page lists each figure's file and the partition's report, which holds them all.",
    )

    def __post_init__(self) -> None:
        if self.elbow_sample_size < 1:
            raise ConfigError(
                f"elbow_sample_size={self.elbow_sample_size} is invalid: use a positive number "
                "of pixels (default 20000)."
            )
        if not 2 <= self.elbow_k_min <= self.elbow_k_max:
            raise ConfigError(
                f"elbow_k_min={self.elbow_k_min} and elbow_k_max={self.elbow_k_max} are invalid: "
                "use 2 <= elbow_k_min <= elbow_k_max (defaults 2 and 12)."
            )
        if self.silhouette_sample_size < 2 or self.preview_size < 16 or self.density_bins < 2:
            raise ConfigError(
                f"silhouette_sample_size={self.silhouette_sample_size}, preview_size="
                f"{self.preview_size}, density_bins={self.density_bins}: use at least 2 pixels, "
                "16 pixels and 2 bins (defaults 10000, 1024 and 256)."
            )

    @property
    def elbow_k_values(self) -> list[int]:
        return list(range(self.elbow_k_min, max(self.elbow_k_min, self.elbow_k_max) + 1))


@dataclass(frozen=True)
class DiagnosticsFacts(Facts):
    """What the diagnostics measured, and where each figure went."""

    scores: evaluate.ClusterScores
    figures: dict[str, Path]
    """Figure name (file stem) -> path of the PNG in the written folder."""
    knee: int | None
    """The knee of the elbow curve (None: none found)."""
    silhouette_best: int
    """The k of the elbow curve's highest silhouette."""
    cover_best: int | None = None
    """The fewest clusters that separate the land covers (None: no red or NIR band)."""
    n_clusters: int = 0
    """The k of the map diagnosed."""
    not_drawn: str = ""
    """Why there would be no figures, in the user's terms (shown only when there are none)."""
    figures_in_ui: bool = False
    """Whether the metadata embeds the figures themselves (DiagnosticsSettings)."""

    def measures(self) -> list[Measure]:
        scores = self.scores
        measures = [
            Measure(name, float(getattr(scores, name)), "", f"{better}: {what}", digits=4)
            for name, (better, what) in evaluate.SCORE_GUIDE.items()
        ]
        return [
            *measures,
            Measure(
                "n_scored",
                int(scores.n_scored),
                "px",
                "pixels behind every score but the silhouette",
                trend=False,
            ),
            Measure(
                "n_silhouette",
                int(scores.n_silhouette),
                "px",
                "pixels behind the silhouette",
                trend=False,
            ),
            Measure(
                "elbow_knee_k",
                self.knee if self.knee is not None else "none",
                "clusters",
                "the elbow curve's knee (kneed)",
            ),
            Measure(
                "silhouette_best_k",
                self.silhouette_best,
                "clusters",
                "k of the elbow curve's best silhouette",
            ),
            Measure(
                "cover_best_k",
                self.cover_best if self.cover_best is not None else "none",
                "clusters",
                "the fewest clusters whose covers agree with their pixels' own within 1 point "
                "of the best k (what n_clusters: auto chooses)",
            ),
        ]

    def details(self) -> dict[str, Detail]:
        details: dict[str, Detail] = {
            "k_advice": k_advice(self.n_clusters, self.knee, self.silhouette_best, self.cover_best)
        }
        # Every figure, legible in the UI (one click on the entry opens it at 1000 px), when
        # asked for: each weighs 20-60 kB in the event log of every partition.
        if self.figures_in_ui:
            for name in sorted(self.figures, key=_figure_order):
                details[f"preview_{name}"] = Markdown(figure_markdown(self.figures[name]))
        for name in sorted(self.figures, key=_figure_order):
            details[f"plot_{name}"] = FilePath(self.figures[name])
        if not self.figures:
            details["figures"] = f"not drawn ({self.not_drawn})"
        return details

    def judge(self, quality: SeparationQuality) -> Judgement:
        return judge_silhouette(self.scores.silhouette, quality)


def _figure_order(name: str) -> tuple[int, str]:
    """The maps and the signatures first (PREVIEWS), then the other figures by name."""
    return (PREVIEWS.index(name) if name in PREVIEWS else len(PREVIEWS), name)


def k_advice(
    n_clusters: int, knee: int | None, silhouette_best: int, cover_best: int | None = None
) -> str:
    """What the elbow curve says about the k a map was made with, in one sentence."""
    if cover_best is not None:
        others = f"the elbow's knee is at k={knee}, the silhouette is best at k={silhouette_best}"
        if n_clusters == cover_best:
            return (
                f"k={n_clusters} is the fewest clusters that separate the land covers ({others})."
            )
        return (
            f"k={n_clusters} was used; k={cover_best} is the fewest clusters that separate the "
            f"land covers ({others}): try n_clusters: auto."
        )
    if knee is None:
        return f"k={n_clusters}; the elbow curve has no knee, the silhouette is best at k={silhouette_best}."
    if n_clusters == knee:
        return f"k={n_clusters} is at the elbow's knee (the silhouette is best at k={silhouette_best})."
    return (
        f"k={n_clusters} was used; the elbow's knee is at k={knee} and the silhouette is best at "
        f"k={silhouette_best}: try n_clusters: {knee}, or n_clusters: auto."
    )


def write_diagnostics(
    geotiff: xr.Dataset,
    clusters: StoredClusters,
    folder: Path,
    settings: DiagnosticsSettings = DiagnosticsSettings(),
    *,
    label: str,
    not_drawn: str = "ops.diagnostics.config.figures is false",
    aoi: BaseGeometry | None = None,
) -> DiagnosticsFacts:
    """Score the clustering, draw every figure and write them to ``folder``.

    ``geotiff`` is the opened geotiff product the clusters were fitted on (its ``source_path``
    attribute names the file of bands the colour composites are read from); ``label`` names the
    partition in the titles; ``aoi`` (lon/lat) is outlined on the maps.
    """
    model, sample = clusters.model, clusters.sample
    seed = int(clusters.summary.get("seed", 0))
    with heartbeat(f"scoring the clustering ({len(sample)} sampled pixels)"):
        silhouettes, labels = evaluate.silhouette_sample(
            model, sample, max_samples=settings.silhouette_sample_size, seed=seed
        )
        scores = evaluate.score_clustering(
            model,
            sample,
            max_silhouette_samples=settings.silhouette_sample_size,
            seed=seed,
            silhouettes=(silhouettes, labels),
        )
    elbow = clusters.elbow_for(settings.elbow_k_values, settings.elbow_sample_size)
    if elbow is None:
        # The fit sample is ordered block by block, so its head is not random: a seeded subset.
        elbow_rows = evaluate.subsample_index(len(sample), settings.elbow_sample_size, seed)
        elbow = evaluate.elbow_curve(
            sample[elbow_rows], settings.elbow_k_values, model.settings, features=model.features
        )
    knee, silhouette_best = evaluate.k_candidates(elbow)
    cover_best = evaluate.cover_best_k(elbow)
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        if settings.figures:
            _draw_figures(
                tmp,
                geotiff,
                clusters,
                settings,
                label,
                (silhouettes, labels),
                scores,
                elbow,
                k_candidates=(knee, silhouette_best),
                outline=outline_in(aoi, geotiff.rio.crs) if aoi is not None else None,
            )
        write_json(scores.as_dict(), tmp / SCORES)
        write_csv(elbow, tmp / ELBOW)
        drawn = sorted(p.name for p in tmp.glob("*.png"))
    located = published(folder)
    return DiagnosticsFacts(
        scores=scores,
        figures={Path(name).stem: located / name for name in drawn},
        knee=knee,
        silhouette_best=silhouette_best,
        cover_best=cover_best,
        n_clusters=model.n_clusters,
        not_drawn=not_drawn,
        figures_in_ui=settings.figures_in_ui,
    )


def _draw_figures(
    tmp: Path,
    geotiff: xr.Dataset,
    clusters: StoredClusters,
    settings: DiagnosticsSettings,
    label: str,
    silhouette_values: tuple[np.ndarray, np.ndarray],
    scores: evaluate.ClusterScores,
    elbow: pd.DataFrame,
    *,
    k_candidates: tuple[int | None, int],
    outline: Sequence[np.ndarray] | None = None,
) -> None:
    """The nine figures of :func:`write_diagnostics`, into the folder being written."""
    model = clusters.model
    silhouettes, labels = silhouette_values
    knee, silhouette_best = k_candidates
    density = None
    if {"red", "nir"} <= set(geotiff.data_vars):
        grid = DensityGrid(bins=settings.density_bins)
        counted = clusters.density_for(grid)  # counted while the map was labelled
        if counted is not None:
            density = counted, grid.red_edges, grid.nir_edges
        else:
            with heartbeat("counting the red-vs-NIR density"):
                density = evaluate.red_nir_density(
                    geotiff, clusters.cluster_map, bins=grid.bins, n_clusters=model.max_id
                )
    from .. import plot  # matplotlib loads only for the step that draws

    source = location(geotiff.attrs["source_path"])  # the file of the spectral bands
    crs_label = str(geotiff.rio.crs)
    names = plot.band_names(source)
    with heartbeat("drawing the figures"):
        labels_preview, extent = plot.read_preview(
            clusters.cluster_map_path, max_size=settings.preview_size
        )
        plot.plot_cluster_map(
            labels_preview[0],
            extent,
            tmp / "cluster_map.png",
            title=f"Clusters, {label}",
            crs_label=crs_label,
            n_clusters=model.max_id,
            signatures=clusters.signatures,
            outline=outline,
        )
        confidence_path = clusters.cluster_map_path.with_name(CONFIDENCE)
        if confidence_path.exists():  # clusters made before the confidence layer lack it
            stored, extent = plot.read_preview(confidence_path, max_size=settings.preview_size)
            percent = np.where(stored[0] == CONFIDENCE_NODATA, np.nan, stored[0])
            plot.plot_confidence(
                percent,
                extent,
                tmp / "confidence.png",
                title=f"Confidence of the labels, {label}",
                crs_label=crs_label,
                confident_above=CONFIDENT_SILHOUETTE * 100,
                low_share=low_confidence_share(clusters.signatures),
                outline=outline,
            )
        for name, title, rgb in COMPOSITES:
            if all(b in names for b in rgb):
                image, extent = plot.read_preview(
                    source, bands=[names.index(b) + 1 for b in rgb], max_size=settings.preview_size
                )
                plot.plot_rgb(
                    image,
                    extent,
                    tmp / f"{name}.png",
                    title=f"{title}, {label}",
                    crs_label=crs_label,
                    outline=outline,
                )
        # The clustered reflectance bands; clustered on indices alone, every reflectance band
        # the signatures measured (a thermal band, in kelvin, has no place on the axis).
        bands = [b for b in clusters.summary["features"] if b in WAVELENGTH_UM] or [
            b
            for b in WAVELENGTH_UM
            if b in REFLECTANCE_BANDS and f"{b}_mean" in clusters.signatures.columns
        ]
        plot.plot_spectral_signatures(
            clusters.signatures, bands, tmp / "signatures.png", wavelengths=WAVELENGTH_UM
        )
        plot.plot_silhouette(silhouettes, labels, tmp / "silhouette.png", average=scores.silhouette)
        plot.plot_elbow(
            elbow,
            tmp / "elbow.png",
            chosen_k=model.n_clusters,
            knee=knee,
            silhouette_k=silhouette_best,
        )
        plot.plot_cluster_sizes(clusters.signatures, tmp / "cluster_sizes.png")
        if density is not None:
            plot.plot_red_nir_density(
                *density, tmp / "red_nir_density.png", names=plot.names_of(clusters.signatures)
            )
