"""The demo's ground: a synthetic landscape filled with real Landsat spectra.

Everything here is a deterministic function of position in a local azimuthal-equidistant frame
centred on 84 W, 35 N (``_LOCAL_CRS``), so every tile, in whatever projection, samples the same
ground. Parcels are Voronoi cells of a jittered grid, classed by a fractal "elevation", shores,
a river, a lake, a pond, a town and its roads; each class is one real ``spyndex`` sample or a
linear mixture of two (``_CLASS_MIXES``, samples from ``demo_spectra``). ``demo_truth`` and
``demo_ground`` expose the class and the cloud-free surface values at coordinates in any CRS;
``local_landscape`` gives both at once in the local frame (``to_local``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

import numpy as np
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from geocluster_dagster.errors import ConfigError

DEMO_CLASSES: tuple[str, ...] = ("water", "forest", "cropland", "urban", "wetland")
"""Land-cover class names: ``demo_truth`` code ``i + 1`` is ``DEMO_CLASSES[i]``."""

WATER, FOREST, CROPLAND, URBAN, WETLAND = range(1, 6)


# --------------------------------------------------------------------------------------------
# Geography: a local metric frame in which the landscape is defined once.

_LOCAL_CRS = CRS.from_proj4("+proj=aeqd +lat_0=35 +lon_0=-84 +datum=WGS84 +units=m +no_defs")


@lru_cache(maxsize=32)
def _transformer(src_wkt: str, dst_wkt: str) -> Transformer:
    return Transformer.from_crs(CRS.from_wkt(src_wkt), CRS.from_wkt(dst_wkt), always_xy=True)


def to_local(x: np.ndarray, y: np.ndarray, crs: object) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in ``crs`` (an EPSG code such as 'EPSG:32616' or WKT) to the local frame.

    The local frame is the one the landscape is defined in (``local_landscape``): metres, x east
    and y north of 84 W, 35 N (azimuthal equidistant).
    """
    try:
        src = CRS.from_user_input(crs).to_wkt()
    except CRSError as err:
        raise ConfigError(
            f"Cannot interpret crs={crs!r} for the demo landscape ({err}); pass the CRS of the "
            "coordinates as an EPSG code such as 'EPSG:32616' or a WKT string."
        ) from err
    return _transformer(src, _LOCAL_CRS.to_wkt()).transform(x, y)


def _from_local(x: np.ndarray, y: np.ndarray, crs: object) -> tuple[np.ndarray, np.ndarray]:
    dst = CRS.from_user_input(crs).to_wkt()
    return _transformer(_LOCAL_CRS.to_wkt(), dst).transform(x, y)


# --------------------------------------------------------------------------------------------
# Deterministic noise: a hash of integer lattice coordinates, value noise and its fractal sum.


def _hash01(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) per integer lattice point (splitmix64 finaliser of a mixed key)."""
    with np.errstate(over="ignore"):
        h = np.asarray(i, dtype=np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= np.asarray(j, dtype=np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        h ^= np.uint64(seed) * np.uint64(0x165667B19E3779F9)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    uniform: np.ndarray = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return uniform


def _value_noise(x: np.ndarray, y: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Smoothly interpolated lattice noise in [0, 1) with features about ``cell`` metres wide."""
    gx, gy = np.asarray(x) / cell, np.asarray(y) / cell
    fx, fy = np.floor(gx), np.floor(gy)
    tx, ty = gx - fx, gy - fy
    tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
    i, j = fx.astype(np.int64), fy.astype(np.int64)
    bottom = _hash01(i, j, seed) * (1 - tx) + _hash01(i + 1, j, seed) * tx
    top = _hash01(i, j + 1, seed) * (1 - tx) + _hash01(i + 1, j + 1, seed) * tx
    return bottom * (1 - ty) + top * ty


def _fbm(x: np.ndarray, y: np.ndarray, cell: float, octaves: int, seed: int) -> np.ndarray:
    """Fractal sum of value noise, normalised back to [0, 1)."""
    total = np.zeros(np.shape(x))
    weight = 0.0
    for octave in range(octaves):
        amplitude = 0.5**octave
        total += amplitude * _value_noise(x, y, cell / 2**octave, seed + 101 * octave)
        weight += amplitude
    return total / weight


# --------------------------------------------------------------------------------------------
# The landscape (local metres, x east, y north).

_PARCEL_CELL = 420.0  # jittered-grid spacing of the Voronoi parcels


def _river_centre(x: np.ndarray) -> np.ndarray:
    centre: np.ndarray = -650 + 900 * np.sin(x / 2600 + 0.4) + 350 * np.sin(x / 1100 + 1.3)
    return centre


def _river_slope(x: np.ndarray) -> np.ndarray:
    return 900 / 2600 * np.cos(x / 2600 + 0.4) + 350 / 1100 * np.cos(x / 1100 + 1.3)


_TOWN = (900.0, float(_river_centre(np.array(900.0))) + 450.0)
_ROADS = ((75.0, 1), (262.0, 2))  # (azimuth from the town centre in degrees, road id)
_LAKE = (4700.0, 2700.0, 1050.0, 650.0)  # centre x, y, semi-axes (m)
_POND = (-5300.0, 2300.0, 380.0, 300.0)


def _river_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance (m) from the river bank; negative inside the river."""
    across = np.abs(y - _river_centre(x)) / np.sqrt(1 + _river_slope(x) ** 2)
    half_width = 50 + 25 * _value_noise(x, 0 * x, 900, seed=7)
    distance: np.ndarray = across - half_width
    return distance


def _basin_distance(
    x: np.ndarray, y: np.ndarray, basin: tuple[float, ...], seed: int
) -> np.ndarray:
    """Approximate distance (m) from a wobbly elliptical lake shore; negative inside."""
    cx, cy, a, b = basin
    radius = np.hypot((x - cx) / a, (y - cy) / b)
    wobble = 0.25 * (_value_noise(x, y, 350, seed) - 0.5)
    return (radius - 1 - wobble) * min(a, b)


def _water_body(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """0 for land, else the id of the water body (1 river, 2 lake, 3 pond)."""
    body = np.zeros(np.shape(x), dtype=np.int64)
    body[_river_distance(x, y) < 0] = 1
    body[_basin_distance(x, y, _LAKE, seed=8) < 0] = 2
    body[_basin_distance(x, y, _POND, seed=9) < 0] = 3
    return body


def _road(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """0 off road, else the road id; roads are 40 m wide rays out of the town centre."""
    road = np.zeros(np.shape(x), dtype=np.int64)
    dx, dy = x - _TOWN[0], y - _TOWN[1]
    for azimuth, road_id in _ROADS:
        ux, uy = np.sin(np.radians(azimuth)), np.cos(np.radians(azimuth))
        along, across = dx * ux + dy * uy, dx * uy - dy * ux
        road[(along > 0) & (np.abs(across) < 20)] = road_id
    return road


def _nearest_parcel(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Voronoi parcel of each point: lattice ids (i, j) and the parcel's seed point."""
    ci = np.floor(x / _PARCEL_CELL).astype(np.int64)
    cj = np.floor(y / _PARCEL_CELL).astype(np.int64)
    best = np.full(np.shape(x), np.inf)
    out = [np.zeros(np.shape(x), dtype=np.int64) for _ in range(2)] + [
        np.zeros(np.shape(x)) for _ in range(2)
    ]
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            i, j = ci + di, cj + dj
            sx = (i + 0.1 + 0.8 * _hash01(i, j, 1)) * _PARCEL_CELL
            sy = (j + 0.1 + 0.8 * _hash01(i, j, 2)) * _PARCEL_CELL
            # a mild anisotropy gives fields a preferred east-west elongation
            d2 = 0.6 * (x - sx) ** 2 + (y - sy) ** 2
            closer = d2 < best
            best = np.where(closer, d2, best)
            for arr, new in zip(out, (i, j, sx, sy), strict=True):
                arr[closer] = new[closer]
    return tuple(out)


def _parcel_class(i: np.ndarray, j: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Land-cover class of each parcel, decided at its seed point."""
    elevation = _fbm(sx, sy, 2600, 3, seed=41)
    classes = np.where(elevation > 0.55, FOREST, CROPLAND)
    chance = _hash01(i, j, 42)
    classes[(classes == CROPLAND) & (chance < 0.1)] = FOREST  # woodlots
    classes[(classes == FOREST) & (chance > 0.94)] = CROPLAND  # clearings
    shore = np.minimum.reduce(
        [
            _river_distance(sx, sy),
            _basin_distance(sx, sy, _LAKE, seed=8),
            _basin_distance(sx, sy, _POND, seed=9),
        ]
    )
    classes[(shore < 380) & (elevation < 0.5)] = WETLAND
    town = np.hypot(sx - _TOWN[0], sy - _TOWN[1]) * (0.8 + 0.4 * _hash01(i, j, 43))
    classes[town < 1100] = URBAN
    classes[(town < 1900) & (_hash01(i, j, 44) < 0.4)] = URBAN
    return classes.astype(np.uint8)


@lru_cache(maxsize=1)
def demo_spectra() -> dict[str, np.ndarray]:
    """The real spyndex samples per class: (n, 8) arrays of SR_B1..SR_B7, ST_B10."""
    import spyndex  # only its data file is needed; importing it costs ~0.15 s

    path = Path(spyndex.__file__).parent / "data" / "spectral.json"
    table = json.loads(path.read_text())
    columns = [f"SR_B{b}" for b in range(1, 8)] + ["ST_B10"]
    rows = sorted(table["class"], key=int)  # pandas to_json layout: {column: {row: value}}
    by_class: dict[str, list[list[float]]] = {}
    for row in rows:
        by_class.setdefault(table["class"][row], []).append([table[c][row] for c in columns])
    return {name: np.asarray(values, dtype=np.float64) for name, values in by_class.items()}


# fractions of (Vegetation, Urban, Water) sample spectra in each class
_CLASS_MIXES = {
    WATER: (0.0, 0.0, 1.0),
    FOREST: (1.0, 0.0, 0.0),
    CROPLAND: (0.65, 0.35, 0.0),
    URBAN: (0.0, 1.0, 0.0),
    WETLAND: (0.5, 0.0, 0.5),
}
_GROUND_NAMES = ("coastal", "blue", "green", "red", "nir", "swir16", "swir22", "lwir")


def local_landscape(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class (uint8) and cloud-free values (8, ...) at local-frame metres (see ``to_local``).

    The values are SR_B1..B7 reflectance and ST_B10 kelvin (float64). It makes many temporaries
    the size of ``x``; render large grids in strips.
    """
    spectra = demo_spectra()
    veg, urb, wat = spectra["Vegetation"], spectra["Urban"], spectra["Water"]
    i, j, sx, sy = _nearest_parcel(x, y)
    classes = _parcel_class(i, j, sx, sy)
    body = _water_body(x, y)
    road = _road(x, y)
    classes[body > 0] = WATER
    classes[road > 0] = URBAN  # bridges cross the river

    def pick(table: np.ndarray, key: np.ndarray) -> np.ndarray:
        return table[np.minimum((key * len(table)).astype(np.int64), len(table) - 1)]

    # forest stands change shade smoothly: neighbouring parcels take neighbouring samples
    # of the vegetation table sorted from dark to bright canopy
    veg = veg[np.argsort(veg[:, 3] + veg[:, 5], kind="stable")]
    stand = np.clip(_value_noise(sx, sy, 1800, 26) + 0.2 * (_hash01(i, j, 21) - 0.5), 0, 1)
    v = pick(veg, np.where(classes == FOREST, stand, _hash01(i, j, 21)))
    # towns are built of 90 m blocks, each one real urban sample; roads are one sample each
    block = _hash01(np.floor(x / 90), np.floor(y / 90), 27)
    urban_key = np.where(classes == URBAN, block, _hash01(i, j, 22))
    u = pick(urb, np.where(road > 0, _hash01(road, road, 24), urban_key))
    w = pick(wat, np.where(body > 0, _hash01(body, body, 25), _hash01(i, j, 23)))
    fractions = np.zeros(np.shape(x) + (3,))
    for code, mix in _CLASS_MIXES.items():
        fractions[classes == code] = mix
    values = fractions[..., :1] * v + fractions[..., 1:2] * u + fractions[..., 2:] * w
    values = np.moveaxis(values, -1, 0)

    # parcels are not flat: canopy/soil brightness and a little temperature texture
    gain = (
        1
        + 0.03 * (2 * _value_noise(x, y, 45, 31) - 1)
        + 0.02 * (2 * _value_noise(x, y, 240, 32) - 1)
    )
    values[:7] *= gain
    values[7] += 0.6 * (2 * _value_noise(x, y, 90, 33) - 1)
    return classes, values


# --------------------------------------------------------------------------------------------
# Ground truth: the landscape at coordinates in any CRS.


def demo_truth(x: np.ndarray, y: np.ndarray, crs: str) -> np.ndarray:
    """Ground-truth land-cover class (uint8, 1..len(DEMO_CLASSES)) at coordinates in any CRS."""
    lx, ly = to_local(np.asarray(x, dtype=float), np.asarray(y, dtype=float), crs)
    classes, _ = local_landscape(lx, ly)
    return classes


def demo_ground(x: np.ndarray, y: np.ndarray, crs: str) -> dict[str, np.ndarray]:
    """Cloud-free surface values at coordinates in any CRS: float64 reflectance per band, lwir in K.

    Keys are the pipeline's common band names (coastal, blue, green, red, nir, swir16, swir22,
    lwir). A clear pixel of the demo rasters decodes to these values within DN rounding.
    """
    lx, ly = to_local(np.asarray(x, dtype=float), np.asarray(y, dtype=float), crs)
    _, values = local_landscape(lx, ly)
    return {name: values[i] for i, name in enumerate(_GROUND_NAMES)}


# --------------------------------------------------------------------------------------------
# A known change: a patch of the ground given another cover from a date on.


@dataclass(frozen=True)
class LandCoverPatch:
    """A disk of ground that has another land cover from ``since`` on: a change whose place,
    size and cover are known, for testing change maps against (the demo's ground is otherwise
    the same on every date)."""

    lon: float
    lat: float
    radius_m: float
    cover: int = URBAN
    """The cover it becomes (a ``DEMO_CLASSES`` code): one real spectrum of that class."""
    since: date = date(2023, 6, 15)
    """Acquisitions on or after this day see the patch; earlier ones the ground as it was."""

    def __post_init__(self) -> None:
        if self.cover not in _CLASS_MIXES:
            raise ConfigError(
                f"cover={self.cover!r} is not a demo class: use 1..{len(DEMO_CLASSES)} "
                f"({', '.join(f'{i + 1} {n}' for i, n in enumerate(DEMO_CLASSES))})."
            )
        if not self.radius_m > 0:
            raise ConfigError(f"radius_m={self.radius_m!r} is invalid: use a positive radius.")

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which local-frame points (see ``to_local``) lie in the patch."""
        cx, cy = to_local(np.array(self.lon), np.array(self.lat), "EPSG:4326")
        return np.asarray(np.hypot(x - cx, y - cy) <= self.radius_m)

    def paint(
        self, classes: np.ndarray, ground: np.ndarray, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``local_landscape``'s class and values at ``x``, ``y`` with the patch painted in: the
        middle sample of the cover's real spectra, with the ground's own brightness texture."""
        inside = self.inside(x, y)
        spectra = demo_spectra()
        mix = _CLASS_MIXES[self.cover]
        samples = [spectra[name] for name in ("Vegetation", "Urban", "Water")]
        spectrum = sum(f * t[len(t) // 2] for f, t in zip(mix, samples, strict=True))
        gain = 1 + 0.03 * (2 * _value_noise(x, y, 45, 31) - 1)
        classes, ground = classes.copy(), ground.copy()
        classes[inside] = self.cover
        ground[:7, inside] = np.asarray(spectrum)[:7, None] * gain[inside]
        ground[7, inside] = np.asarray(spectrum)[7]
        return classes, ground
