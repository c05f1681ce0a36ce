"""Diagnostic figures of a clustering, written as PNG files a remote-sensing analyst can read.

Uses matplotlib's object-oriented API only (``Figure`` + Agg, never pyplot's global state), so
plots can be drawn from several threads. Every plot function writes one PNG atomically
(:func:`geocluster_dagster.storage.atomic_path`) and returns its path. Images of
rasters take decimated previews (see ``read_preview``), never full-resolution scenes.
"""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import rasterio
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator
from rasterio.enums import Resampling

from geocluster_dagster.errors import AssetReadError, ConfigError
from geocluster_dagster.storage import atomic_path

DPI = 100
"""Resolution of every PNG; a figure of (w, h) inches is (w * DPI, h * DPI) pixels."""
MAP_SIZE = (10.0, 7.5)
CHART_SIZE = (9.0, 6.0)
NODATA_COLOUR = (1.0, 1.0, 1.0, 0.0)  # transparent: the hatched axes background shows through
# Masked pixels must not look like bright surfaces (cloud, sand, roofs), hence grey hatching.
MASKED_FACE, MASKED_HATCH_COLOR, MASKED_HATCH = "0.93", "0.65", "////"

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------------
# Colours and files
# --------------------------------------------------------------------------------------------


def cluster_colours(k: int) -> list[tuple[float, float, float]]:
    """k distinct categorical RGB colours; colour i (label i + 1) does not depend on k.

    tab10 first (the most legible set), then the light tab20 variants, then golden-angle hues
    in alternating lightness for very large k. The greys are left out: they would read as the
    hatched grey of masked pixels.
    """
    if k < 0:
        raise ConfigError(f"k={k} is invalid: the number of colours cannot be negative.")
    tab10 = _listed_colours("tab10")
    tab20_light = _listed_colours("tab20")[1::2]
    palette = [
        (float(c[0]), float(c[1]), float(c[2]))
        for c in (*tab10, *tab20_light)
        if len(set(c[:3])) > 1
    ]
    i = 0
    while len(palette) < k:
        hue = (0.11 + i * 0.618034) % 1.0
        lightness = (0.35, 0.55, 0.7)[i % 3]
        palette.append(colorsys.hls_to_rgb(hue, lightness, 0.75))
        i += 1
    return palette[:k]


def _listed_colours(name: str) -> Sequence[Sequence[float]]:
    # tab10 and tab20 are ListedColormaps whose ``colors`` is a tuple of RGB float tuples (the
    # stubs type ``colors`` as any array-like or colour).
    return cast(Sequence[Sequence[float]], cast(ListedColormap, colormaps[name]).colors)


def _extent_tuple(extent: Sequence[float]) -> tuple[float, float, float, float]:
    left, right, bottom, top = extent
    return left, right, bottom, top


def map_figure_size(extent: Sequence[float], *, legend_width: float = 0.0) -> tuple[float, float]:
    """A figure size that fits a map of this (left, right, bottom, top) extent without white bands."""
    left, right, bottom, top = extent
    aspect = abs(top - bottom) / max(abs(right - left), 1e-9)
    map_width = MAP_SIZE[0] - legend_width - 1.0  # minus the y-axis label and ticks
    return MAP_SIZE[0], float(min(max(map_width * aspect + 1.4, 3.5), 12.0))


def _new_figure(
    size: tuple[float, float],
    layout: Literal["constrained", "compressed", "tight"] = "constrained",
) -> Figure:
    # "compressed" is constrained layout for fixed-aspect axes (maps); plain constrained layout
    # mis-places their axis labels.
    fig = Figure(figsize=size, dpi=DPI, layout=layout)
    if layout == "compressed":
        # With a legend outside on the right, compressed layout sets the map flush against the
        # left edge and cuts the y-axis label off; keep a margin for it.
        engine = fig.get_layout_engine()
        if isinstance(engine, ConstrainedLayoutEngine):  # what layout="compressed" creates
            engine.set(rect=(0.03, 0.0, 0.97, 1.0))
    return fig


def _save(fig: Figure, path: PathLike) -> Path:
    """Write fig to path atomically: a failure leaves neither a partial nor a temporary file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        # zlib level 1: a quarter of the default level's time on a 1000 px colour composite
        # (0.08 s, level 3 0.11 s, 6 0.32 s), 14 % more bytes than level 6
        fig.savefig(tmp, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})
    return path


def cluster_label(cluster: int, names: Mapping[int, str] | None = None) -> str:
    """``"3 dense vegetation"`` when the cluster has a name, else ``"Cluster 3"``."""
    name = (names or {}).get(int(cluster))
    return f"{int(cluster)} {name}" if name else f"Cluster {int(cluster)}"


def names_of(signatures: pd.DataFrame | None) -> dict[int, str]:
    """Cluster id -> name from a signatures table's ``name`` column (empty without one)."""
    if signatures is None or "name" not in signatures:
        return {}
    return {int(c): str(n) for c, n in zip(signatures["cluster"], signatures["name"], strict=True)}


def _fraction_text(fraction: float) -> str:
    if not np.isfinite(fraction):
        return "n/a"
    percent = 100.0 * fraction
    if 0 < percent < 0.1:
        return "<0.1 %"
    return f"{percent:.1f} %"


def _legend_columns(n_entries: int) -> int:
    return max(1, math.ceil(n_entries / 24))


# --------------------------------------------------------------------------------------------
# Raster previews and maps
# --------------------------------------------------------------------------------------------


def band_names(path: PathLike) -> list[str]:
    """The band descriptions of a GeoTIFF, in band order (band i + 1 is ``names[i]``)."""
    try:
        with rasterio.open(str(path)) as src:
            return [d or f"band_{i}" for i, d in enumerate(src.descriptions, start=1)]
    except rasterio.errors.RasterioIOError as exc:
        raise AssetReadError(f"cannot read the bands of {path}: {exc}.") from exc


def read_preview(
    path: PathLike,
    bands: Sequence[int] | None = None,
    max_size: int = 1024,
    resampling: str = "nearest",
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Decimated read of a GeoTIFF: (array (bands, h, w), extent (left, right, bottom, top)).

    The longer side is at most ``max_size`` pixels; rasterio reads through the overviews when
    the file has them, so the full-resolution raster is never held. Float rasters get NaN for
    their nodata value, and so do DN rasters with a scale/offset, returned as physical float32;
    other integer rasters are returned as stored (cluster maps keep 0 = nodata).
    Use ``resampling="nearest"`` (or "mode") for labels and "average" for reflectance.
    """
    try:
        method = Resampling[resampling]
    except KeyError:
        raise ConfigError(
            f"resampling={resampling!r} is not a rasterio resampling method; use e.g. "
            "'nearest', 'mode' or 'average'."
        ) from None
    if max_size < 1:
        raise ConfigError(f"max_size={max_size} is invalid: use a positive number of pixels.")
    try:
        with rasterio.open(str(path)) as src:
            indexes = list(bands) if bands is not None else list(src.indexes)
            bad = [b for b in indexes if b not in src.indexes]
            if bad:
                raise ConfigError(
                    f"band index(es) {bad} not in {path}, which has bands 1..{src.count}."
                )
            scale = max(src.height, src.width) / max_size
            height, width = src.height, src.width
            if scale > 1:
                height = max(1, round(src.height / scale))
                width = max(1, round(src.width / scale))
            array = src.read(
                indexes=indexes, out_shape=(len(indexes), height, width), resampling=method
            )
            nodata = src.nodata
            bounds = src.bounds
            scaling = [(src.scales[i - 1], src.offsets[i - 1]) for i in indexes]
    except rasterio.errors.RasterioIOError as exc:
        raise AssetReadError(
            f"cannot read a preview of {path}: {exc}. Check that the GeoTIFF exists and is "
            "complete."
        ) from exc
    if any(pair != (1, 0) for pair in scaling):
        # Stored as DN with a scale/offset (a geotiff's bands): the physical values, NaN nodata.
        stored = array
        array = np.stack(
            [
                band * np.float32(scale) + np.float32(offset)
                for band, (scale, offset) in zip(stored, scaling, strict=True)
            ]
        ).astype("float32")
        if nodata is not None:
            array[stored == nodata] = np.nan
    elif np.issubdtype(array.dtype, np.floating) and nodata is not None and not np.isnan(nodata):
        array[array == nodata] = np.nan
    return array, (bounds.left, bounds.right, bounds.bottom, bounds.top)


#: A map's outline, e.g. the AOI's: rings of (x, y) vertices in the map's CRS.
Outline = Sequence[np.ndarray]


def _format_map_axes(
    ax: Axes, crs_label: str | None, axis_units: str, outline: Outline | None = None
) -> None:
    """Axis labels with units (metres shown as km, so that tick labels stay short), and what a
    map needs to be read on its own: the AOI's outline, a scale bar (projected maps) and a
    north arrow."""
    crs_text = f", {crs_label}" if crs_label else ""
    metres = axis_units in ("m", "metre", "meter")
    if metres:
        km = FuncFormatter(lambda value, _: f"{value / 1000:g}")
        ax.xaxis.set_major_formatter(km)
        ax.yaxis.set_major_formatter(km)
        ax.set_xlabel(f"Easting (km{crs_text})")
        ax.set_ylabel(f"Northing (km{crs_text})")
    else:
        ax.set_xlabel(f"x ({axis_units}{crs_text})")
        ax.set_ylabel(f"y ({axis_units}{crs_text})")
    for axis in (ax.xaxis, ax.yaxis):  # round steps (1, 2, 5 km...), not 1.5 km
        axis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10]))
    ax.set_facecolor(MASKED_FACE)
    ax.patch.set_hatch(MASKED_HATCH)
    ax.patch.set_edgecolor(MASKED_HATCH_COLOR)
    decorate_map(ax, metres=metres, outline=outline)


def decorate_map(ax: Axes, *, metres: bool, outline: Outline | None = None) -> dict[str, Any]:
    """Draw the AOI's ``outline``, a scale bar (when the map's units are metres: in degrees a
    bar's length changes with latitude) and a north arrow on the map ``ax``; return the artists
    by name. The map's extent must be set (``imshow`` sets it)."""
    from matplotlib import patheffects
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    drawn: dict[str, Any] = {}
    halo = [patheffects.withStroke(linewidth=3.0, foreground="white")]
    if outline:
        left, right = ax.get_xlim()
        bottom, top = ax.get_ylim()
        drawn["outline"] = [
            ax.plot(ring[:, 0], ring[:, 1], color="black", linewidth=1.2, path_effects=halo)[0]
            for ring in outline
        ]
        ax.set_xlim(left, right)  # the outline stays inside the map's extent
        ax.set_ylim(bottom, top)
    if metres:
        left, right = ax.get_xlim()
        bottom, top = ax.get_ylim()
        length = scale_bar_length(abs(right - left))
        label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
        bar = AnchoredSizeBar(
            ax.transData, length, label, loc="lower left", pad=0.4, borderpad=0.6,
            sep=3, frameon=True, size_vertical=abs(top - bottom) / 100, color="black",
        )  # fmt: skip
        bar.patch.set_alpha(0.75)
        ax.add_artist(bar)
        drawn["scale_bar"] = (length, label)
    # Grid north: on a projected map (UTM) it differs from true north by the grid's
    # convergence, a few degrees at most within a zone.
    drawn["north_arrow"] = ax.annotate(
        "N", xy=(0.95, 0.95), xytext=(0.95, 0.83), xycoords="axes fraction",
        textcoords="axes fraction", ha="center", va="center", fontsize=11, fontweight="bold",
        arrowprops={"facecolor": "black", "edgecolor": "white", "width": 3, "headwidth": 9},
        path_effects=halo,
    )  # fmt: skip
    return drawn


#: Characters of a title per inch of axes, at matplotlib's default title size (12 pt).
TITLE_CHARS_PER_INCH = 11


def map_title(title: str, width_in: float) -> str:
    """``title`` wrapped at the words to the width of a map ``width_in`` inches wide: a long
    title (AOI, window, acquisition dates) would otherwise run off the figure's edge."""
    import textwrap

    return textwrap.fill(title, width=max(20, int(width_in * TITLE_CHARS_PER_INCH)))


def scale_bar_length(width: float) -> float:
    """A round length (1, 2 or 5 x 10^n) of about a fifth of a map ``width`` wide."""
    if not width > 0:
        raise ValueError(f"a map of width {width} has no scale")
    target = width / 5
    power = 10.0 ** math.floor(math.log10(target))
    return float(max(step * power for step in (1, 2, 5) if step * power <= target))


def _masked_patch(label: str) -> Patch:
    return Patch(
        facecolor=MASKED_FACE, edgecolor=MASKED_HATCH_COLOR, hatch=MASKED_HATCH, label=label
    )


def categorical_map(
    image: np.ndarray,
    extent: Sequence[float],
    path: PathLike,
    *,
    title: str,
    crs_label: str | None,
    handles: list[Patch],
    legend_title: str,
    axis_units: str = "m",
    outline: Outline | None = None,
) -> Path:
    """An RGBA (y, x, 4) map of categories, masked pixels hatched, its legend on the right,
    with the AOI's ``outline`` when given."""
    fig = _new_figure(map_figure_size(extent, legend_width=3.0), layout="compressed")
    ax = fig.add_subplot()
    ax.imshow(image, extent=_extent_tuple(extent), interpolation="nearest")
    _format_map_axes(ax, crs_label, axis_units, outline)
    # The legend beside it takes 3-5 inches (class names), so the map is 4.5 inches or more.
    ax.set_title(map_title(title, MAP_SIZE[0] - 5.5))
    fig.legend(
        handles=handles,
        loc="outside right center",
        title=legend_title,
        ncols=_legend_columns(len(handles)),
        frameon=False,
    )
    return _save(fig, path)


def plot_cluster_map(
    labels: np.ndarray,
    extent: Sequence[float],
    path: PathLike,
    *,
    title: str,
    crs_label: str | None,
    n_clusters: int,
    signatures: pd.DataFrame | None = None,
    axis_units: str = "m",
    outline: Outline | None = None,
) -> Path:
    """Categorical map of cluster ids 1..n_clusters (0 = nodata, hatched), legend "3 water (x %)".

    ``n_clusters`` is the largest id. Percentages and names come from ``signatures`` (whole
    raster; its ``cluster`` column says which ids the legend lists) when given, else the
    percentages come from the preview itself and every id is listed.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D (y, x) array, got shape {labels.shape}.")
    colours = cluster_colours(n_clusters)
    lookup = np.array([NODATA_COLOUR, *((*c, 1.0) for c in colours)])
    safe = np.where((labels >= 1) & (labels <= n_clusters), labels, 0).astype(np.intp)
    if signatures is not None:
        fractions = dict(zip(signatures["cluster"], signatures["fraction"], strict=True))
        listed = [int(c) for c in signatures["cluster"]]
    else:
        counts = np.bincount(safe.ravel(), minlength=n_clusters + 1)[1:]
        fractions = dict(zip(range(1, n_clusters + 1), counts / max(counts.sum(), 1), strict=True))
        listed = list(range(1, n_clusters + 1))
    names = names_of(signatures)
    handles = [
        Patch(
            facecolor=colours[i - 1],
            label=f"{cluster_label(i, names)} ({_fraction_text(fractions.get(i, 0))})",
        )
        for i in listed
    ]
    nodata_fraction = float((safe == 0).mean())
    if nodata_fraction > 0:
        handles.append(
            _masked_patch(f"No data / masked ({_fraction_text(nodata_fraction)} of map)")
        )
    return categorical_map(
        lookup[safe],
        extent,
        path,
        title=title,
        crs_label=crs_label,
        handles=handles,
        legend_title="Cluster (share of valid pixels)",
        axis_units=axis_units,
        outline=outline,
    )


def plot_confidence(
    percent: np.ndarray,
    extent: Sequence[float],
    path: PathLike,
    *,
    title: str,
    crs_label: str | None,
    confident_above: float,
    low_share: float,
    axis_units: str = "m",
    outline: Outline | None = None,
) -> Path:
    """The confidence layer of a cluster map: (h, w) percent 0-100, NaN where unlabelled.

    A sequential palette from 0 (a pixel on the boundary of two clusters) to 100 (at its
    cluster's centre), with the not-confident range (``confident_above`` percent or less)
    marked on the colour bar and its share of the map in the title."""
    values = np.asarray(percent, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"percent must be a 2-D (y, x) array, got shape {values.shape}.")
    fig = _new_figure(map_figure_size(extent, legend_width=1.2), layout="compressed")
    ax = fig.add_subplot()
    shown = ax.imshow(
        np.ma.masked_invalid(values),
        extent=_extent_tuple(extent),
        interpolation="nearest",
        cmap="cividis",
        vmin=0,
        vmax=100,
    )
    _format_map_axes(ax, crs_label, axis_units, outline)
    bar = fig.colorbar(shown, ax=ax, shrink=0.8, label="confidence (%)")
    bar.ax.axhspan(0, confident_above, facecolor="none", edgecolor="red", hatch="//")
    bar.ax.text(
        -0.3, confident_above / 2, "not\nconfident", rotation=90, va="center", ha="right",
        fontsize=8, transform=bar.ax.get_yaxis_transform(),
    )  # fmt: skip
    ax.set_title(
        f"{map_title(title, MAP_SIZE[0] - 2.2)}\n(simplified silhouette 1 − a/b; ≤ {confident_above:.0f} %: not confident, "
        f"{_fraction_text(low_share)} of the map; unlabelled pixels hatched)"
    )
    return _save(fig, path)


def _percentile_stretch(band: np.ndarray, low: float = 2, high: float = 98) -> np.ndarray:
    finite = np.isfinite(band)
    if not finite.any():
        return np.zeros_like(band, dtype=np.float64)
    lo, hi = np.percentile(band[finite], [low, high])
    if hi <= lo:
        return np.where(finite, 0.5, 0.0)
    stretched: np.ndarray = np.clip((band - lo) / (hi - lo), 0.0, 1.0)
    return stretched


def plot_rgb(
    rgb: np.ndarray,
    extent: Sequence[float],
    path: PathLike,
    *,
    title: str,
    crs_label: str | None = None,
    axis_units: str = "m",
    outline: Outline | None = None,
) -> Path:
    """Colour composite of a (3, h, w) reflectance array with a 2-98 % stretch per band.

    Pass (red, green, blue) for true colour or (nir, red, green) for false colour; NaN pixels
    (masked or nodata) are transparent. Percentiles ignore NaN.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"rgb must have shape (3, h, w), got {rgb.shape}.")
    # 8-bit RGBA, as the PNG stores it: matplotlib draws a uint8 image without normalising
    # and resampling four float64 planes (a third of the figure's time).
    image = np.empty((*rgb.shape[1:], 4), dtype=np.uint8)
    for i, band in enumerate(rgb):
        image[..., i] = np.rint(np.nan_to_num(_percentile_stretch(band)) * 255)
    image[..., 3] = np.where(np.isfinite(rgb).all(axis=0), 255, 0)

    fig = _new_figure(map_figure_size(extent), layout="compressed")
    ax = fig.add_subplot()
    ax.imshow(image, extent=_extent_tuple(extent), interpolation="nearest")
    _format_map_axes(ax, crs_label, axis_units, outline)
    ax.set_title(
        f"{map_title(title, MAP_SIZE[0] - 1.0)}\n(2–98 % stretch per band; masked pixels hatched)"
    )
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# Charts
# --------------------------------------------------------------------------------------------


def plot_spectral_signatures(
    signatures: pd.DataFrame,
    bands: Sequence[str],
    path: PathLike,
    *,
    wavelengths: Mapping[str, float] | None = None,
    value_label: str = "Surface reflectance (0–1)",
) -> Path:
    """Mean value per cluster along the bands (wavelength in µm when given), ±1 std shaded."""
    bands = list(bands)
    missing = [b for b in bands if f"{b}_mean" not in signatures.columns]
    if not bands or missing:
        raise ConfigError(
            f"bands {missing or bands} have no '<band>_mean' column in the signatures; "
            "pick bands among the variables the signatures were computed on."
        )
    if wavelengths is not None and all(b in wavelengths for b in bands):
        use_wavelengths = True
        bands = sorted(bands, key=lambda b: wavelengths[b])
        x = np.array([wavelengths[b] for b in bands], dtype=float)
    else:
        use_wavelengths = False
        x = np.arange(len(bands), dtype=float)
    n_clusters = int(signatures["cluster"].max())
    colours = cluster_colours(n_clusters)

    # Many overlapping ±1 std bands turn into a grey wash; fade them as k grows.
    band_alpha = 0.15 if n_clusters <= 6 else 0.06
    fig = _new_figure(CHART_SIZE)
    ax = fig.add_subplot()
    for _, row in signatures.iterrows():
        if row.get("pixel_count", 1) == 0:
            continue
        cluster = int(row["cluster"])
        mean = np.array([row[f"{b}_mean"] for b in bands], dtype=float)
        std = np.array([row.get(f"{b}_std", np.nan) for b in bands], dtype=float)
        colour = colours[cluster - 1]
        share = _fraction_text(row["fraction"]) if "fraction" in row else ""
        name = cluster_label(cluster, names_of(signatures))
        label = f"{name} ({share})" if share else name
        ax.plot(x, mean, marker="o", color=colour, linewidth=2, label=label)
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=band_alpha, linewidth=0)

    if use_wavelengths:
        ax.set_xlabel("Wavelength (µm)")
        top = ax.secondary_xaxis("top")
        top.set_xticks(x, labels=bands, rotation=90, fontsize="small")
        for value in x:
            ax.axvline(value, color="0.85", linewidth=0.8, zorder=0)
    else:
        ax.set_xticks(x, labels=bands)
        ax.set_xlabel("Band")
    ax.set_ylabel(value_label)
    ax.set_title("Spectral signature of each cluster (mean, shading ±1 std)")
    ax.grid(axis="y", color="0.9")
    fig.legend(
        loc="outside right upper",
        ncols=_legend_columns(len(signatures)),
        frameon=False,
        title="Cluster (share)",
    )
    return _save(fig, path)


def plot_silhouette(
    values: np.ndarray, labels: np.ndarray, path: PathLike, *, average: float
) -> Path:
    """Per-cluster silhouette blades (values sorted within a cluster), average dashed."""
    values, labels = np.asarray(values, dtype=float), np.asarray(labels)
    if values.shape != labels.shape:
        raise ValueError(f"values {values.shape} and labels {labels.shape} differ in shape.")
    finite = np.isfinite(values)
    values, labels = values[finite], labels[finite]
    clusters = np.unique(labels)
    colours = cluster_colours(int(clusters.max()) if len(clusters) else 0)
    gap = max(1, len(values) // 60)

    fig = _new_figure(CHART_SIZE)
    ax = fig.add_subplot()
    y_lower = gap
    for cluster in clusters:
        # Descending, because the y axis is inverted below (cluster 1 on top, like the legends)
        # and the classic blade has its widest end up.
        blade = np.sort(values[labels == cluster])[::-1]
        y = np.arange(y_lower, y_lower + len(blade))
        colour = colours[int(cluster) - 1]
        ax.fill_betweenx(y, 0, blade, facecolor=colour, edgecolor=colour, linewidth=0.3)
        ax.text(
            -0.02,
            y_lower + len(blade) / 2,
            str(int(cluster)),
            ha="right",
            va="center",
            fontsize="small",
            transform=ax.get_yaxis_transform(),
        )
        y_lower += len(blade) + gap
    if np.isfinite(average):
        ax.axvline(average, color="black", linestyle="--", label=f"mean silhouette = {average:.3f}")
        ax.legend(loc="lower right")
    low = min(-0.1, float(values.min()) - 0.05) if len(values) else -0.1
    ax.set_xlim(low, 1.0)
    ax.set_ylim(y_lower, 0)
    ax.set_yticks([])
    ax.axvline(0, color="0.4", linewidth=0.8)
    ax.set_xlabel("Silhouette coefficient (−1 … 1, higher = better separated)")
    ax.set_ylabel("Sampled pixels grouped by cluster", labelpad=22)
    ax.set_title(f"Silhouette per cluster ({len(values):,} sampled pixels)")
    return _save(fig, path)


def plot_elbow(
    curve: pd.DataFrame,
    path: PathLike,
    *,
    chosen_k: int,
    knee: int | None = None,
    silhouette_k: int | None = None,
) -> Path:
    """Inertia against k (silhouette and cover agreement on a second axis when present); the
    chosen k, the elbow's knee and the silhouette's best k marked."""
    curve = curve.sort_values("k")
    fig = _new_figure(CHART_SIZE)
    ax = fig.add_subplot()
    (inertia_line,) = ax.plot(
        curve["k"], curve["inertia"], marker="o", color="tab:blue", label="Inertia"
    )
    handles: list[Any] = [inertia_line]
    ax.set_xlabel("Number of clusters k")
    ax.set_ylabel("Inertia (sum of squared distances, standardised units)", color="tab:blue")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(color="0.9")
    if "silhouette" in curve and np.isfinite(curve["silhouette"]).any():
        ax2 = ax.twinx()
        (silhouette_line,) = ax2.plot(
            curve["k"],
            curve["silhouette"],
            marker="s",
            color="tab:orange",
            label="Mean silhouette (sampled)",
        )
        ax2.set_ylabel("Mean silhouette (−1 … 1) / cover agreement (0 … 1)", color="tab:orange")
        handles.append(silhouette_line)
        if "cover_agreement" in curve and np.isfinite(curve["cover_agreement"]).any():
            (cover_line,) = ax2.plot(
                curve["k"],
                curve["cover_agreement"],
                marker="^",
                color="tab:purple",
                label="Cover agreement (share of pixels whose own cover is their cluster's)",
            )
            handles.append(cover_line)
        if silhouette_k is not None:
            best = curve[curve["k"] == silhouette_k]
            handles.append(
                ax2.scatter(
                    best["k"],
                    best["silhouette"],
                    marker="*",
                    s=260,
                    color="tab:orange",
                    edgecolor="black",
                    zorder=5,
                    label=f"Best silhouette: k = {silhouette_k}",
                )
            )
    if knee is not None:
        handles.append(
            ax.axvline(
                knee, color="tab:green", linestyle=":", linewidth=2, label=f"Knee: k = {knee}"
            )
        )
    handles.append(
        ax.axvline(chosen_k, color="tab:red", linestyle="--", label=f"Chosen k = {chosen_k}")
    )
    chosen = curve[curve["k"] == chosen_k]
    if len(chosen):
        ax.plot(
            chosen["k"],
            chosen["inertia"],
            marker="o",
            markersize=12,
            color="tab:red",
            fillstyle="none",
            markeredgewidth=2,
        )
    # Right of the knee the inertia and silhouette run low and the cover agreement high: the
    # middle of the right side is free.
    ax.legend(handles=handles, loc="center right")
    ax.set_title("Elbow curve: within-cluster inertia against k")
    return _save(fig, path)


def plot_cluster_sizes(signatures: pd.DataFrame, path: PathLike) -> Path:
    """Horizontal bars of area (ha) per cluster, or pixel count when the area is unknown."""
    use_area = "area_ha" in signatures and np.isfinite(signatures["area_ha"]).all()
    column, unit = ("area_ha", "ha") if use_area else ("pixel_count", "pixels")
    clusters = signatures["cluster"].astype(int).to_numpy()
    sizes = signatures[column].to_numpy(dtype=float)
    colours = cluster_colours(int(clusters.max()))

    height = max(3.0, min(0.45 * len(clusters) + 1.5, 30.0))
    fig = _new_figure((CHART_SIZE[0], height))
    ax = fig.add_subplot()
    ax.barh(clusters, sizes, color=[colours[c - 1] for c in clusters], edgecolor="0.3")
    names = names_of(signatures)
    ax.set_yticks(clusters, labels=[cluster_label(c, names) for c in clusters])
    ax.invert_yaxis()  # cluster 1 on top, like the legends
    fractions = signatures.get("fraction", pd.Series(np.nan, index=signatures.index))
    for y, size, fraction in zip(clusters, sizes, fractions, strict=True):
        ax.annotate(
            f" {size:,.0f} {unit} ({_fraction_text(fraction)})",
            (size, y),
            va="center",
            fontsize="small",
        )
    ax.set_xlim(0, max(sizes.max(), 1) * 1.3)  # room for the annotations
    ax.set_xlabel("Area (ha)" if use_area else "Pixel count")
    ax.set_title("Size of each cluster")
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    return _save(fig, path)


def plot_red_nir_density(
    counts: np.ndarray,
    red_edges: np.ndarray,
    nir_edges: np.ndarray,
    path: PathLike,
    *,
    names: Mapping[int, str] | None = None,
) -> Path:
    """Red/NIR feature space: each bin coloured by its most frequent cluster, opacity by log
    pixel count, so millions of pixels stay readable; grey NDVI isolines for orientation."""
    counts = np.asarray(counts)
    if counts.ndim != 3:
        raise ValueError(f"counts must have shape (k, red bins, nir bins), got {counts.shape}.")
    k = counts.shape[0]
    colours = np.array(cluster_colours(k))
    total = counts.sum(axis=0)
    dominant = counts.argmax(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        opacity = np.log1p(total) / np.log1p(total.max()) if total.max() > 0 else total * 0.0
    # A floor keeps single-pixel bins visible; the log keeps the dense core from saturating.
    opacity = np.where(total > 0, 0.35 + 0.65 * opacity, 0.0)
    image = np.concatenate([colours[dominant], opacity[..., np.newaxis]], axis=-1)
    image = image.transpose(1, 0, 2)  # rows = nir (y axis), columns = red (x axis)

    fig = _new_figure((9.0, 7.5))
    ax = fig.add_subplot()
    extent = (red_edges[0], red_edges[-1], nir_edges[0], nir_edges[-1])
    ax.imshow(image, origin="lower", extent=extent, aspect="auto", interpolation="nearest")
    # Zoom on the occupied bins (keeping the origin, where the NDVI isolines meet).
    red_max, nir_max = red_edges[-1], nir_edges[-1]
    if total.any():
        red_used, nir_used = np.flatnonzero(total.any(axis=1)), np.flatnonzero(total.any(axis=0))
        red_max = min(red_edges[-1], red_edges[red_used[-1] + 1] * 1.1)
        nir_max = min(nir_edges[-1], nir_edges[nir_used[-1] + 1] * 1.1)
    red_line = np.linspace(red_edges[0], red_max, 200)
    for ndvi in (0.0, 0.3, 0.6):
        nir_line = red_line * (1 + ndvi) / (1 - ndvi)
        inside = nir_line <= nir_max
        if inside.sum() < 2:
            continue
        ax.plot(red_line[inside], nir_line[inside], color="0.45", linestyle=":", linewidth=1.2)
        end = np.flatnonzero(inside)[-1]
        ax.annotate(
            f"NDVI = {ndvi:g}",
            (red_line[end], nir_line[end]),
            xytext=(-4, -2),
            textcoords="offset points",
            ha="right",
            va="top",
            color="0.3",
            fontsize="small",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        )
    ax.set_xlim(red_edges[0], red_max)
    ax.set_ylim(nir_edges[0], nir_max)
    ax.set_xlabel("Red surface reflectance (0–1)")
    ax.set_ylabel("NIR surface reflectance (0–1)")
    # Over the whole figure: above the axes alone, the second line ran into the legend.
    fig.suptitle(
        f"Red / NIR feature space ({int(total.sum()):,} pixels)\n"
        "colour = most frequent cluster in the bin, opacity ∝ log(pixel count)"
    )
    ax.set_facecolor("white")
    per_cluster = counts.sum(axis=(1, 2))
    handles = [
        Patch(
            facecolor=colours[i],
            label=f"{cluster_label(i + 1, names)} ({int(per_cluster[i]):,} px)",
        )
        for i in range(k)
        if per_cluster[i] > 0 or names is None  # ids a matched map does not use stay out
    ]
    fig.legend(
        handles=handles,
        loc="outside right center",
        ncols=_legend_columns(len(handles)),
        frameon=False,
        title="Cluster",
    )
    return _save(fig, path)


def plot_error_matrix(matrix: pd.DataFrame, path: PathLike, *, title: str) -> Path:
    """An accuracy assessment's error matrix: reference samples per map class (rows) and
    reference label (columns), each row shaded by its share of the row, the diagonal (agreement)
    in bold."""
    counts = matrix.to_numpy(dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(rows > 0, counts / rows, np.nan)
    size = (max(6.0, 1.1 * counts.shape[1] + 3.5), max(4.5, 0.6 * counts.shape[0] + 2.5))
    fig = _new_figure(size, layout="compressed")
    ax = fig.add_subplot()
    mesh = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i, row in enumerate(matrix.index):
        for j, column in enumerate(matrix.columns):
            if counts[i, j] > 0:
                ax.text(
                    j, i, f"{counts[i, j]:,.0f}", ha="center", va="center", fontsize="small",
                    fontweight="bold" if row == column else "normal",
                    color="white" if shares[i, j] > 0.6 else "black",
                )  # fmt: skip
    ax.set_xticks(range(counts.shape[1]), labels=list(map(str, matrix.columns)), rotation=35, ha="right")  # fmt: skip
    ax.set_yticks(range(counts.shape[0]), labels=list(map(str, matrix.index)))
    ax.set_xlabel("reference label")
    ax.set_ylabel("map class (clusters matched to a label)")
    ax.set_title(title)
    fig.colorbar(mesh, ax=ax, label="share of the map class's samples")
    return _save(fig, path)
