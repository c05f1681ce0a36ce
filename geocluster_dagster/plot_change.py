"""Figures of the change between two dates: where it changed, and from what to what."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.patches import Patch

from .change_states import CHANGED, UNCHANGED, WITHIN_COVER, state_rgba
from .plot import (
    NODATA_COLOUR,
    Outline,
    PathLike,
    _masked_patch,
    _new_figure,
    _save,
    categorical_map,
    cluster_colours,
    cluster_label,
)

UNCHANGED_COLOR = state_rgba(UNCHANGED)
SAME_COVER_COLOR = state_rgba(WITHIN_COVER)


def plot_change_map(
    layers: np.ndarray,
    extent: tuple[float, float, float, float],
    path: PathLike,
    *,
    names: Mapping[int, str],
    title: str,
    crs_label: str | None,
    outline: Outline | None = None,
) -> Path:
    """Changed pixels in the colour of the class they became, unchanged light grey, another
    cluster of the same cover darker grey, unknown hatched.

    ``layers`` is a (3, h, w) preview of the change COG: from, to, change.
    """
    to, state = layers[1].astype(np.intp), layers[2]
    largest = int(max(to.max(initial=0), max(names, default=0)))
    colours = cluster_colours(largest)
    lookup = np.array([NODATA_COLOUR, *((*c, 1.0) for c in colours)])
    image = np.where((state == CHANGED)[..., None], lookup[to], NODATA_COLOUR)
    image[state == UNCHANGED] = UNCHANGED_COLOR
    image[state == WITHIN_COVER] = SAME_COVER_COLOR
    valid = state > 0
    share = {
        int(c): float(np.mean(to[state == CHANGED] == c)) for c in np.unique(to[state == CHANGED])
    }
    handles = [
        Patch(
            facecolor=UNCHANGED_COLOR, label=f"unchanged ({np.mean(state[valid] == UNCHANGED):.1%})"
        ),
        Patch(
            facecolor=SAME_COVER_COLOR,
            label=f"same cover, other cluster ({np.mean(state[valid] == WITHIN_COVER):.1%})",
        ),
    ]
    handles += [
        Patch(
            facecolor=colours[c - 1], label=f"became {cluster_label(c, names)} ({s:.1%} of change)"
        )
        for c, s in sorted(share.items())
        if c > 0
    ]
    handles.append(_masked_patch("unknown: no data on one date or both"))
    return categorical_map(
        image,
        extent,
        path,
        title=title,
        crs_label=crs_label,
        handles=handles,
        legend_title="Change (share of compared pixels)",
        outline=outline,
    )


def plot_transitions(
    transitions: pd.DataFrame,
    path: PathLike,
    *,
    names_before: Mapping[int, str],
    names_after: Mapping[int, str],
    title: str,
) -> Path:
    """From (rows) -> to (columns) heat map in hectares (pixels without a pixel area)."""
    use_area = np.isfinite(transitions["hectares"]).all() and len(transitions)
    value = "hectares" if use_area else "pixels"
    before = sorted(set(transitions["from_id"]) | set(names_before))
    after = sorted(set(transitions["to_id"]) | set(names_after))
    matrix = np.zeros((len(before), len(after)))
    for row in transitions.itertuples():
        matrix[before.index(row.from_id), after.index(row.to_id)] = getattr(row, value)
    size = (max(6.0, 1.1 * len(after) + 3.5), max(4.5, 0.6 * len(before) + 2.5))
    fig = _new_figure(size)
    ax = fig.add_subplot()
    shown = np.where(matrix > 0, matrix, np.nan)
    positive = matrix[matrix > 0]
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
    mesh = ax.imshow(shown, cmap="viridis", norm=norm, aspect="auto")
    for i in range(len(before)):
        for j in range(len(after)):
            if matrix[i, j] > 0:
                text = f"{matrix[i, j]:,.0f}" if matrix[i, j] >= 10 else f"{matrix[i, j]:.1f}"
                weight = "bold" if before[i] == after[j] else "normal"
                ax.text(j, i, text, ha="center", va="center", fontsize="small", color="white",
                        fontweight=weight, bbox={"facecolor": "black", "alpha": 0.35, "pad": 1, "edgecolor": "none"})  # fmt: skip
    ax.set_xticks(range(len(after)), labels=[cluster_label(c, names_after) for c in after], rotation=35, ha="right")  # fmt: skip
    ax.set_yticks(range(len(before)), labels=[cluster_label(c, names_before) for c in before])
    ax.set_xlabel("to (later date)")
    ax.set_ylabel("from (earlier date)")
    ax.set_title(title)
    fig.colorbar(mesh, ax=ax, label=f"{value} (log scale; diagonal = unchanged)")
    return _save(fig, path)
