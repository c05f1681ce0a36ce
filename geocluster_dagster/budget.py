"""Before any pixel is read: how big the partition is, and whether it is sane to run.

A continent drawn as an AOI, or a MultiPolygon with one part 1,200 km from the others, builds
an output grid of billions of pixels that nothing else refuses: the run writes for hours. So the
grid is measured first (the AOI's bounding box at the output resolution, which is what every
product is written on), together with the share the AOI and the scenes' footprints really
cover, the bytes to read and write and the free disk they need; beyond the limits the
partition is refused with the numbers and the settings that change them.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pystac
import shapely
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from shapely.geometry.base import BaseGeometry

from .errors import ConfigError, OutputNotWritable
from .storage import is_remote, scratch_dir, write_text_atomically

#: A whole Landsat scene is about 7,800 x 7,800 = 61 million 30 m pixels.
LANDSAT_SCENE_PX = 61_000_000

#: Parts of a MultiPolygon farther apart than this are named in a refusal.
FAR_APART_KM = 100.0

#: ... and refused when they fill less than this share of their grid.
MIN_AOI_SHARE = 0.1

#: Bytes on disk per output pixel and band, uncompressed: float32 everywhere.
FLOAT_BYTES = 4


#: The default of LoadSettings.max_grid_pixels: about four Landsat scenes.
MAX_GRID_PIXELS = 250_000_000


@dataclass(frozen=True)
class Estimate:
    """What a partition will cost, measured before it is read."""

    grid_pixels: int
    """Pixels of the output grid (the AOI's bounding box)."""
    aoi_pixels: int
    """... of which inside the AOI."""
    covered_pixels: int
    """... of which inside the AOI and some scene's footprint: the pixels that are read."""
    bytes_read: int
    """Decoded bytes read: covered pixels x (bands + QA) x scenes, 2 bytes each (uint16 DN)."""
    bytes_written: int
    """Uncompressed bytes of the mosaic, the geotiff and the cluster map (an upper bound)."""
    disk_needed: int
    """Free space the writes need at their peak: the products, plus the geotiff's
    uncompressed intermediate beside the finished COG."""
    time_slices: int = 1
    """Acquisition dates composited: the pixel work is the grid times these."""

    @property
    def work_mpx(self) -> float:
        """Million grid pixels times dates: what a run's time grows with."""
        return self.grid_pixels * self.time_slices / 1e6

    def as_dict(self) -> dict[str, int]:
        return {
            "time_slices": self.time_slices,
            "grid_pixels": self.grid_pixels,
            "aoi_pixels": self.aoi_pixels,
            "covered_pixels": self.covered_pixels,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "disk_needed": self.disk_needed,
        }


def estimate(
    geobox: GeoBox,
    aoi: BaseGeometry,
    items: Sequence[pystac.Item],
    *,
    bands: int,
    with_qa: bool,
    products_bands: int,
    time_slices: int = 1,
) -> Estimate:
    """The cost of loading ``items`` (``bands`` each, plus QA) on ``geobox`` for ``aoi`` (lon/lat),
    writing products of ``products_bands`` float bands (bands + indices) on the same grid."""
    grid_pixels = int(geobox.shape.y) * int(geobox.shape.x)
    pixel_area = abs(geobox.affine.a * geobox.affine.e)
    crs = geobox.crs
    if crs is None:
        raise ValueError("the output grid has no CRS")

    def pixels(lonlat: BaseGeometry) -> int:
        """Pixels of the grid inside a lon/lat shape."""
        if lonlat.is_empty:
            return 0
        return min(grid_pixels, int(Geometry(lonlat, "EPSG:4326").to_crs(crs).area / pixel_area))

    aoi_pixels = pixels(aoi)
    footprints = [shapely.geometry.shape(i.geometry) for i in items if i.geometry]
    covered = aoi_pixels
    if footprints:
        covered = pixels(shapely.union_all(footprints).intersection(aoi))
        read_px = sum(pixels(footprint.intersection(aoi)) for footprint in footprints)
    else:  # items without a footprint: assume each covers the whole AOI
        read_px = aoi_pixels * len(items)
    bytes_read = read_px * (bands + int(with_qa)) * 2
    products = grid_pixels * FLOAT_BYTES * (bands + products_bands) + grid_pixels  # + uint8 map
    intermediate = grid_pixels * FLOAT_BYTES * products_bands
    return Estimate(
        grid_pixels=grid_pixels,
        aoi_pixels=aoi_pixels,
        covered_pixels=covered,
        bytes_read=bytes_read,
        bytes_written=products,
        disk_needed=products + intermediate,
        time_slices=time_slices,
    )


def refuse_runaway(
    cost: Estimate, aoi: BaseGeometry, resolution: float, max_grid_pixels: int
) -> None:
    """Refuse a grid beyond ``max_grid_pixels``, with its size, what would fix it, and the
    distance between the parts of a MultiPolygon when that is the reason; refuse too the grid
    of a MultiPolygon whose parts lie far apart and fill less than :data:`MIN_AOI_SHARE` of it
    (whatever its size: most of what it would read and write is the gap)."""
    apart = parts_apart_km(aoi)
    share = cost.aoi_pixels / cost.grid_pixels if cost.grid_pixels else 1.0
    if apart is not None and apart > FAR_APART_KM and share < MIN_AOI_SHARE:
        raise ConfigError(
            f"The AOI is a MultiPolygon whose polygons lie up to {apart:,.0f} km apart: its "
            f"output grid spans the gap ({cost.grid_pixels:,} pixels at {resolution:g}, of "
            f"which the AOI fills {share:.1%}): split it into separate AOIs, one per area."
        )
    if cost.grid_pixels <= max_grid_pixels:
        return
    scenes = cost.grid_pixels / LANDSAT_SCENE_PX
    message = (
        f"The AOI's output grid would have {cost.grid_pixels:,} pixels at {resolution:g} "
        f"(about {scenes:,.0f} Landsat scenes, {_size(cost.bytes_written)} of products), above "
        f"max_grid_pixels={max_grid_pixels:,}; the AOI itself covers "
        f"{cost.aoi_pixels / cost.grid_pixels:.1%} of it."
    )
    if apart is not None and apart > FAR_APART_KM:
        message += (
            f" Its polygons lie up to {apart:,.0f} km apart, so the grid spans the gap between "
            "them: split it into separate AOIs."
        )
    message += (
        " Draw a smaller AOI, use a coarser resolution (band_stack), or raise max_grid_pixels "
        "(band_stack) if the machine can take it."
    )
    raise ConfigError(message)


def refuse_full_disk(cost: Estimate, folder: Path, *, where: str) -> None:
    """Refuse when the output root has less free space than the partition's writes need. On
    object storage the products are written on this machine's scratch disk first: that one."""
    if is_remote(folder):
        probe = scratch_dir()
        fix = "point env GEOCLUSTER_SCRATCH at a larger disk"
    else:
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        fix = (
            "point the output root (env GEOCLUSTER_OUTPUT, resource outputs.base_dir) at a "
            "larger disk"
        )
    free = shutil.disk_usage(probe).free
    if free < cost.disk_needed:
        raise OutputNotWritable(
            f"{where}: the products need about {_size(cost.disk_needed)} free while they are "
            f"written, and {probe} has {_size(free)} free. Free some space, or {fix}."
        )


def parts_apart_km(aoi: BaseGeometry) -> float | None:
    """For a MultiPolygon, the largest distance (km, great circle) from a part to its nearest
    other part; None for a single polygon."""
    parts = list(getattr(aoi, "geoms", []))
    if len(parts) < 2:
        return None
    largest = 0.0
    for index, part in enumerate(parts):
        nearest = min(
            _km(*shapely.ops.nearest_points(part, other))
            for other_index, other in enumerate(parts)
            if other_index != index
        )
        largest = max(largest, nearest)
    return largest


def _km(a: shapely.Point, b: shapely.Point) -> float:
    """Haversine distance in km between two lon/lat points."""
    lon1, lat1, lon2, lat2 = map(math.radians, (a.x, a.y, b.x, b.y))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


def _size(n_bytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n_bytes < 1000 or unit == "TB":
            return f"{n_bytes:,.0f} {unit}" if unit == "B" else f"{n_bytes:,.1f} {unit}"
        n_bytes /= 1000
    raise AssertionError("unreachable")


#: A partition's seconds on the 2-core reference machine: a fixed part (imports, instance,
#: diagnostics' elbow and figures: the demo partition's run) plus a part per million grid
#: pixels x dates (8000² px x 2 dates in 71.6 s; benchmarks/README.md). Used until this machine
#: has timed runs of its own.
REFERENCE_FIXED_S = 12.0
REFERENCE_S_PER_MPX = 0.5

#: Runs of this machine the estimate is fitted on (the latest).
TIMED_RUNS = 50


#: This machine's timed runs (size, seconds), under the output root: the estimates' rate.
TIMINGS = ".timings.jsonl"


def record_run(timings: Path, work_mpx: float, seconds: float) -> None:
    """Append a finished run's size and time to this machine's timings (``timings`` is a
    JSON-lines file under the output root); the oldest lines beyond TIMED_RUNS are dropped."""
    lines = timings.read_text().splitlines() if timings.exists() else []
    lines = [*lines, json.dumps({"work_mpx": round(work_mpx, 6), "seconds": round(seconds, 2)})]
    timings.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(timings, "\n".join(lines[-TIMED_RUNS:]) + "\n")


def estimate_seconds(timings: Path | None, work_mpx: float) -> tuple[float, str]:
    """Seconds a run of ``work_mpx`` should take on this machine, and how that was found: a
    line through its timed runs when they span sizes (at least 2x apart), their fixed part
    with the reference rate when they are all of one size, the reference machine's otherwise."""
    runs = []
    if timings is not None and timings.exists():
        for line in timings.read_text().splitlines():
            try:
                run = json.loads(line)
                runs.append((float(run["work_mpx"]), float(run["seconds"])))
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a kill
    if not runs:
        seconds = REFERENCE_FIXED_S + REFERENCE_S_PER_MPX * work_mpx
        return seconds, "the reference machine's rate: this machine has no timed run yet"
    sizes = [w for w, _ in runs]
    if len(runs) >= 2 and max(sizes) >= 2 * max(min(sizes), 1e-9):
        slope, fixed = np.polyfit(sizes, [t for _, t in runs], 1)
        slope, fixed = max(float(slope), 0.0), max(float(fixed), 0.0)
        how = f"a line through this machine's last {len(runs)} timed runs"
    else:
        slope = REFERENCE_S_PER_MPX
        fixed = max(0.0, float(np.median([t - slope * w for w, t in runs])))
        how = f"this machine's last {len(runs)} runs of one size, with the reference rate"
    return fixed + slope * work_mpx, how
