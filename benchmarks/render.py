"""The benchmark scene's pixels: the demo's ground and sky on a full-scene grid.

One block of the demo's landscape (real spyndex Landsat spectra) is rendered once and tiled over
the scene with seeded flips and offsets; clouds, shadows, dilated rims, the QA codes and the DN
encoding are the demo's own (``observe``) applied window by window, so no scene-sized array is
ever held. ``render_window`` runs in worker processes (see ``benchmarks.inputs``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geocluster_dagster.demo.landscape import WATER, local_landscape, to_local
from geocluster_dagster.demo.scene import (
    DEMO_ACQUISITIONS,
    DEMO_QA_CODES,
    DEMO_TILES,
    Acquisition,
    Tile,
    observe,
    tile_transform,
)

GENERATOR_VERSION = "1"
"""Bump when the generated inputs change, so cached inputs are rebuilt."""

WINDOW = 512  # COG tile size, and the generator's window

PixelWindow = tuple[int, int, int, int]
"""A window of the scene: first row, first column, height, width."""


@dataclass(frozen=True)
class SceneSpec:
    """What the generated inputs depend on (recorded in the manifest)."""

    size: int
    """Scene width and height in pixels."""
    seed: int
    """Seed of the tiling of the landscape block (flips and offsets per block)."""
    block: int
    """Side of the rendered landscape block in pixels (a multiple of WINDOW)."""


def spec_for(size: int, seed: int) -> SceneSpec:
    """The spec of a size x size scene."""
    # a 1024 px block (30 km) shows the demo's river, lake, pond and town; small scenes need less
    return SceneSpec(size=size, seed=seed, block=WINDOW if size <= 2 * WINDOW else 2 * WINDOW)


def scene_tile(size: int) -> Tile:
    """The demo's tile A (EPSG:32616, WRS 19/36), grown to size x size."""
    return dataclasses.replace(DEMO_TILES[0], key="bench", shape=(size, size))


def acquisitions() -> tuple[Acquisition, ...]:
    """The demo's two dates; a fill collar on the second. A non-None fill_tile on both dates
    keeps the demo's cloud-free strip (meant for its small tile) out of the big scene."""
    first, second = DEMO_ACQUISITIONS
    return (
        dataclasses.replace(first, fill_tile="none"),
        dataclasses.replace(second, fill_tile="bench"),
    )


def megapixels(size: int) -> float:
    """Pixels of a size x size scene over all dates, in millions (one location on one date)."""
    return size * size * len(acquisitions()) / 1e6


def landscape_block(work: Path, side: int) -> Path:
    """Render (once) the demo landscape on a side x side grid centred on the demo's origin."""
    path = work / "inputs" / f"landscape_block_{side}_v{GENERATOR_VERSION}.npz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    classes = np.empty((side, side), dtype=np.uint8)
    ground = np.empty((8, side, side), dtype=np.float32)
    centres = (np.arange(side) - side / 2 + 0.5) * 30.0
    for row0 in range(0, side, 256):  # strips: local_landscape makes many full-size temporaries
        rows = slice(row0, min(row0 + 256, side))
        x, y = np.meshgrid(centres, -centres[rows])
        classes[rows], ground[:, rows] = local_landscape(x, y)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, classes=classes, ground=ground)
    os.replace(tmp, path)
    return path


def windows(size: int) -> Iterator[PixelWindow]:
    """The scene's WINDOW x WINDOW windows (smaller at the right and bottom edges), row by row."""
    for row0 in range(0, size, WINDOW):
        for col0 in range(0, size, WINDOW):
            yield row0, col0, min(WINDOW, size - row0), min(WINDOW, size - col0)


@dataclass(frozen=True)
class WindowDate:
    """One window on one date, as the sensor sees it."""

    sr: np.ndarray
    """(7, h, w) uint16 DN of SR_B1..B7."""
    st: np.ndarray
    """(h, w) uint16 DN of ST_B10."""
    qa: np.ndarray
    """(h, w) uint16 QA_PIXEL."""
    counts: tuple[int, int, int, int]
    """Pixels: cloud, valid, cloud over land, valid land (for the items' cloud cover)."""


_BLOCK: dict[str, np.ndarray] = {}


def load_block(path: str) -> None:
    """Worker initializer: load the landscape block once per worker process."""
    with np.load(path) as data:
        _BLOCK["classes"], _BLOCK["ground"] = data["classes"], data["ground"]


def render_window(task: tuple[SceneSpec, PixelWindow]) -> list[WindowDate]:
    """Both dates of one window (needs ``load_block`` first)."""
    spec, (row0, col0, h, w) = task
    side = spec.block
    # which copy of the landscape block this window shows: seeded flips and offsets per cell
    cell_row, cell_col = row0 // side, col0 // side
    rng = np.random.default_rng([spec.seed, cell_row, cell_col])
    flip_rows, flip_cols = rng.integers(0, 2, size=2)
    shift_rows, shift_cols = rng.integers(0, side, size=2)
    rows = (np.arange(row0, row0 + h) - cell_row * side + shift_rows) % side
    cols = (np.arange(col0, col0 + w) - cell_col * side + shift_cols) % side
    rows = side - 1 - rows if flip_rows else rows
    cols = side - 1 - cols if flip_cols else cols
    classes = _BLOCK["classes"][np.ix_(rows, cols)]
    ground = _BLOCK["ground"][:, rows[:, None], cols[None, :]]

    # the sky is a function of position on the scene's own UTM grid, as in the demo
    tile = scene_tile(spec.size)
    transform = tile_transform(tile)
    grid_rows, grid_cols = np.mgrid[row0 : row0 + h, col0 : col0 + w]
    utm_x = transform.c + (grid_cols + 0.5) * transform.a
    utm_y = transform.f + (grid_rows + 0.5) * transform.e
    x, y = to_local(utm_x, utm_y, f"EPSG:{tile.epsg}")
    window_tile = dataclasses.replace(tile, key="window", shape=(h, w))  # no demo fill collar

    out = []
    for acq in acquisitions():
        obs = observe(classes, ground, x, y, window_tile, acq)
        sr, st, qa = obs.sr, obs.st, obs.qa
        if acq.fill_tile == tile.key:
            # the demo's slanted west-edge collar, scaled to the scene
            fill = grid_cols < 0.06 * spec.size + 0.09 * grid_rows
            sr[:, fill], st[fill], qa[fill] = 0, 0, DEMO_QA_CODES["fill"]
        valid = qa != DEMO_QA_CODES["fill"]
        cloud = qa == DEMO_QA_CODES["cloud"]
        land = classes != WATER
        counts = (
            int(cloud.sum()),
            int(valid.sum()),
            int((cloud & land).sum()),
            int((valid & land).sum()),
        )
        out.append(WindowDate(sr=sr, st=st, qa=qa, counts=counts))
    return out
