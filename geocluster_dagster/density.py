"""The red-vs-NIR density of each cluster: a 2-D histogram counted block by block.

Counted where the pixels are already in memory: the task of
:class:`geocluster_dagster.cluster.LabelledBlocks` that predicts a block of the map also counts
its red and NIR here, so the diagnostics' density plot costs no second read of the GeoTIFF
(a whole scene's full decode, which was most of the diagnostics step; benchmarks/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Bins per axis, and the reflectance ranges the density spans: vegetation's red edge and
#: soil line sit well inside them; brighter pixels (clouds, snow) fall outside and are not
#: counted.
DENSITY_BINS = 256
RED_RANGE = (0.0, 0.5)
NIR_RANGE = (0.0, 0.8)


@dataclass(frozen=True)
class DensityGrid:
    """The histogram's bins: ``bins`` per axis over ``red_range`` x ``nir_range``."""

    bins: int = DENSITY_BINS
    red_range: tuple[float, float] = RED_RANGE
    nir_range: tuple[float, float] = NIR_RANGE

    @property
    def red_edges(self) -> np.ndarray:
        return np.linspace(self.red_range[0], self.red_range[1], self.bins + 1)

    @property
    def nir_edges(self) -> np.ndarray:
        return np.linspace(self.nir_range[0], self.nir_range[1], self.bins + 1)

    def as_dict(self) -> dict[str, object]:
        return {
            "bins": self.bins,
            "red_range": list(self.red_range),
            "nir_range": list(self.nir_range),
        }


def block_counts(
    labels: np.ndarray, red: np.ndarray, nir: np.ndarray, *, grid: DensityGrid, k: int
) -> np.ndarray:
    """(k, bins, bins) int64: ``counts[c - 1, i, j]`` pixels of cluster c with red in bin i and
    NIR in bin j. Pixels outside the ranges, with NaN red/NIR or label 0 are not counted."""
    labels, red, nir = labels.ravel().astype(np.int64), red.ravel(), nir.ravel()
    keep = (
        (labels >= 1)
        & (labels <= k)
        & (red >= grid.red_range[0])
        & (red <= grid.red_range[1])
        & (nir >= grid.nir_range[0])
        & (nir <= grid.nir_range[1])
    )  # NaN compares False, so NaN pixels drop out here
    red_bin = _bin_index(red[keep], grid.red_edges)
    nir_bin = _bin_index(nir[keep], grid.nir_edges)
    flat = ((labels[keep] - 1) * grid.bins + red_bin) * grid.bins + nir_bin
    return np.bincount(flat, minlength=k * grid.bins * grid.bins).reshape(k, grid.bins, grid.bins)


def _bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value in ``edges`` (equal bins, values within them) as np.histogram assigns
    it: half-open bins, the last one closed.

    np.histogram's own arithmetic for equal bins, 2-8x faster than a search of the edges: the
    bin from the value's distance to the first edge, then corrected where rounding put a value
    within an ulp of an edge in the neighbouring bin."""
    n = len(edges) - 1
    index: np.ndarray = ((values - edges[0]) * (n / (edges[-1] - edges[0]))).astype(np.intp)
    np.clip(index, 0, n - 1, out=index)
    index[values < edges[index]] -= 1
    index[(values >= edges[index + 1]) & (index != n - 1)] += 1
    return index
