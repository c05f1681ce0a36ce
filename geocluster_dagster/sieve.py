"""A minimum mapping unit for class maps: regions smaller than it take their surroundings' class.

Per-pixel maps have salt and pepper: single pixels and specks of another class that no map
reader would draw, and that change areas count as change. Map producers remove them with a
minimum mapping unit (RStoolbox's ``validateMap``, sits' ``sits_smooth``, GDAL's sieve).

Here a region (8-connected pixels of one class) smaller than the unit takes the class that most
of its contacts with the pixels around it carry (each pair of a region pixel and an 8-neighbour
outside it counts once; ties: the smaller class id); regions of nodata are never changed and
never count as surroundings; a small region with nothing around it but nodata stays. The
replacement repeats (at most ``passes`` times) because specks next to specks may need a second
look. Unlike GDAL's sieve, which merges a region into its *largest* neighbouring region, the rule
is local (a region and its one-pixel ring), so a map sieved block by block with a halo of
``passes * (unit + 1)`` pixels equals the whole map sieved at once: no seams at block edges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import ConfigError
from .fields import described

#: 8-connectivity: diagonal neighbours are one region, as the eye reads a map.
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class SieveSettings:
    """The map's minimum mapping unit."""

    min_mapping_unit_ha: float = described(
        0.0,
        "Minimum mapping unit, hectares: regions of one class smaller than it take the class "
        "around them (a seamless sieve, block by block); 0 = the per-pixel map. 0.5 ha is 6 "
        "Landsat pixels of 30 m. The class areas are the sieved map's; the signatures' means "
        "and the confidence layer stay those of each pixel's own label.",
    )

    def __post_init__(self) -> None:
        value = self.min_mapping_unit_ha
        if not isinstance(value, int | float) or value < 0 or not math.isfinite(value):
            raise ConfigError(
                f"min_mapping_unit_ha={value!r} is invalid: use hectares >= 0 (0 = no sieve)."
            )


def unit_in_pixels(min_mapping_unit_ha: float, pixel_area_m2: float) -> int:
    """The unit as a pixel count: the smallest whole number of pixels covering it."""
    if min_mapping_unit_ha <= 0:
        return 0
    return max(1, math.ceil(min_mapping_unit_ha * 10_000 / pixel_area_m2 - 1e-9))


def halo_for(min_pixels: int, passes: int) -> int:
    """The halo a block needs so that sieving it alone gives the whole map's result."""
    return passes * (min_pixels + 1)


def sieve(labels: np.ndarray, min_pixels: int, *, nodata: int = 0, passes: int = 3) -> np.ndarray:
    """``labels`` (2-D integers) with every region smaller than ``min_pixels`` replaced by the
    class most of its bordering pixels carry (see the module's description)."""
    out: np.ndarray = np.array(labels, copy=True)
    if min_pixels <= 1:
        return out
    for _ in range(passes):
        small, original = _small_regions(out, min_pixels, nodata)
        if not len(original):
            break
        replacement = _border_majority(out, small, original, nodata)
        if np.array_equal(replacement, original):
            break
        lookup = np.concatenate([[0], replacement]).astype(out.dtype)
        out = np.where(small > 0, lookup[small], out)
    return out


def _small_regions(
    labels: np.ndarray, min_pixels: int, nodata: int
) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) ids 1..m of the regions smaller than ``min_pixels`` (0 elsewhere), and each
    one's class."""
    small = np.zeros(labels.shape, dtype=np.int64)
    classes: list[int] = []
    for value in np.unique(labels):
        if value == nodata:
            continue
        regions, count = ndimage.label(labels == value, structure=_EIGHT)
        sizes = np.bincount(regions.ravel(), minlength=count + 1)
        is_small = sizes < min_pixels
        is_small[0] = False
        n = int(is_small.sum())
        if not n:
            continue
        renumber = np.zeros(count + 1, dtype=np.int64)
        renumber[is_small] = np.arange(len(classes) + 1, len(classes) + n + 1)
        inside = renumber[regions]
        small = np.where(inside > 0, inside, small)
        classes += [int(value)] * n
    return small, np.asarray(classes, dtype=np.int64)


def _border_majority(
    labels: np.ndarray, small: np.ndarray, original: np.ndarray, nodata: int
) -> np.ndarray:
    """Per small region, the class most of its 8-neighbour contacts outside it carry (each
    contact of a region pixel with a neighbour counted; ties: the smaller class); its own
    class when it touches only nodata."""
    height, width = labels.shape
    ids = np.pad(small, 1)
    values = np.pad(labels.astype(np.int64), 1, constant_values=nodata)
    keys = []
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == dc == 0:
                continue
            near_id = ids[1 + dr : 1 + dr + height, 1 + dc : 1 + dc + width]
            near = values[1 + dr : 1 + dr + height, 1 + dc : 1 + dc + width]
            contact = (small > 0) & (near_id != small) & (near != nodata)
            keys.append(small[contact] * 65_536 + near[contact])
    result: np.ndarray = np.array(original, copy=True)
    found = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    if not found.size:
        return result
    unique, counts = np.unique(found, return_counts=True)
    region, value = unique // 65_536, unique % 65_536
    order = np.lexsort((value, -counts, region))  # by region, most contacts, smaller class
    region, value = region[order], value[order]
    first = np.r_[True, region[1:] != region[:-1]]
    result[region[first] - 1] = value[first]
    return result


def sieved_blocks(
    read: Callable[[int, int, int, int], np.ndarray],
    height: int,
    width: int,
    block: int,
    min_pixels: int,
    *,
    nodata: int = 0,
    passes: int = 3,
) -> Iterator[tuple[tuple[slice, slice], np.ndarray]]:
    """The sieved map block by block: ``read(row0, col0, rows, cols)`` returns that window of
    the map; each block is sieved with a halo of :func:`halo_for` pixels read around it and
    yielded without it, as ``((rows, cols), block)``."""
    halo = halo_for(min_pixels, passes)
    for row in range(0, height, block):
        for col in range(0, width, block):
            r0, c0 = max(0, row - halo), max(0, col - halo)
            r1, c1 = min(height, row + block + halo), min(width, col + block + halo)
            window = read(r0, c0, r1 - r0, c1 - c0)
            done = sieve(window, min_pixels, nodata=nodata, passes=passes)
            rows = slice(row, min(height, row + block))
            cols = slice(col, min(width, col + block))
            yield (
                (rows, cols),
                done[rows.start - r0 : rows.stop - r0, cols.start - c0 : cols.stop - c0],
            )
