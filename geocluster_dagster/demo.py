"""Embedded offline demo: a small static STAC catalog of synthetic Landsat 8/9 C2 L2 scenes.

The demo lets the whole pipeline run without network access. ``build_demo(root)`` writes a
self-contained static STAC catalog (``catalog.json`` -> collection ``landsat-c2-l2`` -> 4 items)
whose Cloud-Optimized GeoTIFFs are encoded exactly like Landsat Collection 2 Level-2 assets on
the Microsoft Planetary Computer (uint16 DN with the C2 scale/offset, nodata 0, USGS QA_PIXEL bit
codes), plus an AOI registry (a GeoJSON FeatureCollection holding the demo AOI).

**The landscape is synthetic; the spectra are real.** Every surface value comes from the 120
labelled Landsat 8 C2 L2 pixels that ship with ``spyndex`` (``spyndex/data/spectral.json``:
SR_B1..SR_B7 reflectance, ST_B10 kelvin, classes Vegetation/Urban/Water). There are five
land-cover classes (``DEMO_CLASSES``):

- ``water``: one real Water sample per water body (a meandering river, a lake, a pond);
- ``forest``: one real Vegetation sample per parcel (neighbouring stands take similar shades);
- ``cropland``: a 65/35 linear mixture of one real Vegetation and one real Urban sample
  (sparse vegetation on bright soil);
- ``urban``: one real Urban sample per 90 m town block or per road (a town on the river);
- ``wetland``: a 50/50 linear mixture of one real Vegetation and one real Water sample.

Parcels are Voronoi cells of a jittered grid. A small per-pixel brightness factor (within 5 %,
the same for all reflective bands) and a few tenths of a kelvin of temperature texture keep
parcels from being flat. Everything is a deterministic function of position in a local
azimuthal-equidistant frame centred on 84 W, 35 N: every tile, in whatever projection, samples
the same ground (``demo_truth``, ``demo_ground``).

The scene straddles the UTM zone 16/17 boundary (84 W). Tile A is in EPSG:32616 (WRS-2 path 19),
tile B in EPSG:32617 (path 18); they overlap by about 90 columns. Both tiles were "acquired" on
two June 2023 dates (Landsat 8, then Landsat 9 eight days later). Each date has cumulus clouds
(bright, flat spectra, 262-272 K), their shadows (ground darkened, shifted away from the sun)
and dilated-cloud rims (thin haze), arranged in WNW-ESE cloud streets that alternate between the
dates, so every pixel is clear on at least one date. Tile A on the Landsat 9 date has a fill
collar on its west edge. All items are marked ``geocluster:synthetic: true``.

Things a reader of the catalog should know:

- Files are named by the USGS product id, as the real ones are
  (``LC08_L2SP_019036_20230610_20230617_02_T1_SR_B4.TIF``); item ids are the PC's
  (``LC08_L2SP_019036_20230610_02_T1``).
- The two tiles of a date carry timestamps minutes apart (two WRS paths), so odc-stac's default
  ``groupby="time"`` gives four time steps; ``groupby="solar_day"`` gives the two dates.
- odc-stac 0.5 takes nodata, data type and unit from ``raster:bands`` but does not apply
  ``scale``/``offset``; decode DN with the scale/offset from ``raster:bands``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
import pystac
import rasterio
import shapely
import shapely.geometry
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from pystac.extensions.classification import Bitfield, Classification, ClassificationExtension
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from pystac.extensions.view import ViewExtension
from rasterio.transform import Affine

from geocluster_dagster.errors import ConfigError, OutputNotWritable

DEMO_VERSION = "1"
DEMO_AOI_ID = "demo"
DEMO_COLLECTION = "landsat-c2-l2"
DEMO_MONTH = "2023-06-01"
DEMO_CLASSES: tuple[str, ...] = ("water", "forest", "cropland", "urban", "wetland")
"""Land-cover class names: ``demo_truth`` code ``i + 1`` is ``DEMO_CLASSES[i]``."""

WATER, FOREST, CROPLAND, URBAN, WETLAND = range(1, 6)

# Collection 2 Level-2 encoding, as in the Planetary Computer's raster:bands.
SR_SCALE, SR_OFFSET = 0.0000275, -0.2
ST_SCALE, ST_OFFSET = 0.00341802, 149.0

_MANIFEST = "demo_manifest.json"
_AOI_REGISTRY = "aois.geojson"
_CATALOG_ID = "geocluster-demo"
_PIXEL = 30.0

# --------------------------------------------------------------------------------------------
# QA_PIXEL bit layout (USGS Landsat 8-9 C2 L2), as the PC item's classification:bitfields.
# (name, offset, length, description, [(class name, class description), ...] by value)


def _confidence(what: str, medium_used: bool) -> list[tuple[str, str]]:
    medium = (
        ("medium", f"Medium confidence {what}")
        if medium_used
        else ("reserved", "Reserved - value not used")
    )
    return [
        ("not_set", "No confidence level set"),
        ("low", f"Low confidence {what}"),
        medium,
        ("high", f"High confidence {what}"),
    ]


_QA_BITFIELDS: tuple[tuple[str, int, int, str, list[tuple[str, str]]], ...] = (
    ("fill", 0, 1, "Image or fill data", [("not_fill", "Image data"), ("fill", "Fill data")]),
    (
        "dilated_cloud",
        1,
        1,
        "Dilated cloud",
        [("not_dilated", "Cloud is not dilated or no cloud"), ("dilated", "Cloud dilation")],
    ),
    (
        "cirrus",
        2,
        1,
        "Cirrus mask",
        [("not_cirrus", "Cirrus confidence is not high"), ("cirrus", "High confidence cirrus")],
    ),
    (
        "cloud",
        3,
        1,
        "Cloud mask",
        [("not_cloud", "Cloud confidence is not high"), ("cloud", "High confidence cloud")],
    ),
    (
        "cloud_shadow",
        4,
        1,
        "Cloud shadow mask",
        [
            ("not_shadow", "Cloud shadow confidence is not high"),
            ("shadow", "High confidence cloud shadow"),
        ],
    ),
    (
        "snow",
        5,
        1,
        "Snow/Ice mask",
        [("not_snow", "Snow/Ice confidence is not high"), ("snow", "High confidence snow cover")],
    ),
    (
        "clear",
        6,
        1,
        "Clear mask",
        [
            ("not_clear", "Cloud or dilated cloud bits are set"),
            ("clear", "Cloud and dilated cloud bits are not set"),
        ],
    ),
    ("water", 7, 1, "Water mask", [("not_water", "Land or cloud"), ("water", "Water")]),
    ("cloud_confidence", 8, 2, "Cloud confidence levels", _confidence("cloud", True)),
    (
        "cloud_shadow_confidence",
        10,
        2,
        "Cloud shadow confidence levels",
        _confidence("cloud shadow", False),
    ),
    ("snow_confidence", 12, 2, "Snow/Ice confidence levels", _confidence("snow/ice", False)),
    ("cirrus_confidence", 14, 2, "Cirrus confidence levels", _confidence("cirrus", False)),
)


def _qa_code(**fields: int) -> int:
    """Pack named QA_PIXEL bitfields (e.g. ``cloud=1, cloud_confidence=3``) into one value."""
    layout = {name: (offset, length) for name, offset, length, _, _ in _QA_BITFIELDS}
    code = 0
    for name, value in fields.items():
        offset, length = layout[name]
        if not 0 <= value < 2**length:
            raise ValueError(f"QA field {name!r} holds {length} bit(s); got {value}")
        code |= value << offset
    return code


def _usgs_qa(**fields: int) -> int:
    """A non-fill QA value: USGS sets every confidence field to at least "low"."""
    low = dict(
        cloud_confidence=1, cloud_shadow_confidence=1, snow_confidence=1, cirrus_confidence=1
    )
    return _qa_code(**{**low, **fields})


DEMO_QA_CODES: dict[str, int] = {
    "fill": _qa_code(fill=1),  # 1
    "clear_land": _usgs_qa(clear=1),  # 21824
    "clear_water": _usgs_qa(clear=1, water=1),  # 21952
    "cloud": _usgs_qa(cloud=1, cloud_confidence=3),  # 22280
    "dilated_low": _usgs_qa(dilated_cloud=1),  # 21762
    "dilated_medium": _usgs_qa(dilated_cloud=1, cloud_confidence=2),  # 22018
    "shadow_land": _usgs_qa(clear=1, cloud_shadow=1, cloud_shadow_confidence=3),  # 23888
    "shadow_water": _usgs_qa(clear=1, water=1, cloud_shadow=1, cloud_shadow_confidence=3),
    "dilated_shadow": _usgs_qa(dilated_cloud=1, cloud_shadow=1, cloud_shadow_confidence=3),
}
"""The QA_PIXEL values the demo writes, derived from the USGS bit layout (the 'clear' bit means
'neither cloud nor dilated cloud', so shadow pixels carry it, as in real USGS data)."""

# --------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True)
class DemoPaths:
    """Where a built demo lives and what it holds."""

    root: Path
    """Directory holding the whole demo (catalog, COGs, AOI registry)."""
    catalog: Path
    """The static STAC catalog's root ``catalog.json``."""
    aoi_registry: Path
    """GeoJSON FeatureCollection holding the demo AOI (feature id ``DEMO_AOI_ID``)."""
    aoi_id: str
    """Id of the demo AOI in the registry."""
    start: datetime
    """Start of the demo's time window (UTC, inclusive): the first day of ``DEMO_MONTH``."""
    end: datetime
    """End of the demo's time window (UTC, exclusive): the first day of the next month."""
    item_ids: tuple[str, ...]
    """Ids of the STAC items in the demo collection, by date then tile."""


def build_demo(root: Path | str, *, overwrite: bool = False) -> DemoPaths:
    """Write the demo catalog into ``root`` (or return the one already there) and say where it is.

    Idempotent: if ``root`` holds a complete demo of the same ``DEMO_VERSION`` it is returned
    untouched unless ``overwrite``. Otherwise the demo is built in a temporary sibling directory
    and renamed into place, so ``root`` never holds a half-built demo.
    """
    root = Path(root).expanduser().absolute()
    paths = _demo_paths(root)
    if not overwrite and _is_complete(root):
        return paths
    _refuse_foreign_directory(root, overwrite)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    except OSError as err:
        raise OutputNotWritable(
            f"Cannot create the demo directory next to {root}: {err}. "
            "Pass build_demo() a root in a writable location."
        ) from err
    try:
        _write_demo(staging)
        _move_into_place(staging, root, overwrite)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError) and not isinstance(err, OutputNotWritable):
            raise OutputNotWritable(
                f"Writing the demo into {root} failed: {err}. "
                "Pass build_demo() a root on a writable disk with a few MB free."
            ) from err
        raise
    return paths


def demo_truth(x: np.ndarray, y: np.ndarray, crs: str) -> np.ndarray:
    """Ground-truth land-cover class (uint8, 1..len(DEMO_CLASSES)) at coordinates in any CRS."""
    lx, ly = _to_local(np.asarray(x, dtype=float), np.asarray(y, dtype=float), crs)
    classes, _ = _landscape(lx, ly)
    return classes


def demo_ground(x: np.ndarray, y: np.ndarray, crs: str) -> dict[str, np.ndarray]:
    """Cloud-free surface values at coordinates in any CRS: float64 reflectance per band, lwir in K.

    Keys are the pipeline's common band names (coastal, blue, green, red, nir, swir16, swir22,
    lwir). A clear pixel of the demo rasters decodes to these values within DN rounding.
    """
    lx, ly = _to_local(np.asarray(x, dtype=float), np.asarray(y, dtype=float), crs)
    _, values = _landscape(lx, ly)
    return {name: values[i] for i, name in enumerate(_GROUND_NAMES)}


# --------------------------------------------------------------------------------------------
# Geography: a local metric frame in which the landscape is defined once.

_LOCAL_CRS = CRS.from_proj4("+proj=aeqd +lat_0=35 +lon_0=-84 +datum=WGS84 +units=m +no_defs")


@lru_cache(maxsize=32)
def _transformer(src_wkt: str, dst_wkt: str) -> Transformer:
    return Transformer.from_crs(CRS.from_wkt(src_wkt), CRS.from_wkt(dst_wkt), always_xy=True)


def _to_local(x: np.ndarray, y: np.ndarray, crs: object) -> tuple[np.ndarray, np.ndarray]:
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
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


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
    return -650 + 900 * np.sin(x / 2600 + 0.4) + 350 * np.sin(x / 1100 + 1.3)


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
    return across - half_width


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
def _spectra() -> dict[str, np.ndarray]:
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


def _landscape(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class (uint8) and cloud-free values (8, ...): SR_B1..B7 reflectance, ST_B10 kelvin."""
    spectra = _spectra()
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
# Tiles, acquisitions and the atmosphere.


@dataclass(frozen=True)
class _Tile:
    """One WRS-2 crop on its own UTM grid."""

    key: str
    epsg: int
    wrs_path: int
    wrs_row: int
    shape: tuple[int, int]
    centre: tuple[float, float]  # local metres
    overpass: time  # UTC time of day of the scene centre


@dataclass(frozen=True)
class _Acquisition:
    """One date: platform, clouds and sun."""

    satellite: str  # product-id prefix, e.g. LC08
    platform: str
    day: date
    processed: date
    cloud_seed: int
    stripe_phase: float  # 0 or 1: which alternate cloud street this date uses
    sun_azimuth: float
    sun_elevation: float
    fill_tile: str | None  # tile key with a fill collar on its west edge


_TILES = (
    _Tile("A", 32616, 19, 36, (300, 320), (-3300.0, -300.0), time(16, 9, 51)),
    _Tile("B", 32617, 18, 36, (310, 300), (3300.0, 600.0), time(16, 3, 38)),
)
_ACQUISITIONS = (
    _Acquisition(
        "LC08", "landsat-8", date(2023, 6, 10), date(2023, 6, 17), 521, 0.0, 110.4, 68.2, None
    ),
    _Acquisition(
        "LC09", "landsat-9", date(2023, 6, 18), date(2023, 6, 25), 522, 1.0, 108.9, 68.6, "A"
    ),
)

_CLOUD_T, _DILATED_T, _MEDIUM_T = 0.57, 0.5, 0.535  # thresholds on cloud density
_STREET_WIDTH, _STREET_TAPER = 2800.0, 450.0
_CLOUD_SPECTRUM = np.array([0.50, 0.51, 0.52, 0.53, 0.56, 0.44, 0.33])  # bright, flat, dips in SWIR


def _shadow_offset(acq: _Acquisition) -> tuple[float, float]:
    """Ground shift (m) from a cloud to its shadow: away from the sun, cloud tops ~2 km high."""
    length = 2000 / np.tan(np.radians(acq.sun_elevation))
    away = np.radians(acq.sun_azimuth + 180)
    return float(length * np.sin(away)), float(length * np.cos(away))


def _cloud_density(x: np.ndarray, y: np.ndarray, acq: _Acquisition) -> np.ndarray:
    """Cumulus density; nonzero only inside this date's cloud streets (parallel to the shadows)."""
    dx, dy = _shadow_offset(acq)
    nx, ny = -dy / np.hypot(dx, dy), dx / np.hypot(dx, dy)  # across-street direction
    phase = np.mod((x * nx + y * ny) / _STREET_WIDTH + acq.stripe_phase, 2.0)
    to_edge = np.where(phase < 1, np.minimum(phase, 1 - phase), 0) * _STREET_WIDTH
    envelope = np.clip(to_edge / _STREET_TAPER, 0, 1)
    if acq.fill_tile is None:
        # keep the other date's fill collar (west edge of tile A) cloud-free on this date
        envelope = envelope * np.clip((x + 5600) / 500, 0, 1)
    return _fbm(x, y, 900, 3, acq.cloud_seed) * envelope


@dataclass(frozen=True)
class _Observation:
    """One tile on one date: encoded rasters and their cloud statistics."""

    sr: np.ndarray  # (7, h, w) uint16 DN
    st: np.ndarray  # (h, w) uint16 DN
    qa: np.ndarray  # (h, w) uint16 QA_PIXEL
    cloud_cover: float
    cloud_cover_land: float


def _observe(
    classes: np.ndarray,
    ground: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    tile: _Tile,
    acq: _Acquisition,
) -> _Observation:
    """What the sensor sees through this date's clouds, encoded as C2 L2 DN and QA_PIXEL."""
    density = _cloud_density(x, y, acq)
    dx, dy = _shadow_offset(acq)
    shadow_density = _cloud_density(x - dx, y - dy, acq)
    cloud = density > _CLOUD_T
    dilated = ~cloud & (density > _DILATED_T)
    shadow = ~cloud & (shadow_density > _CLOUD_T)
    fill = _fill_collar(tile, acq)
    water = classes == WATER

    sr, st = ground[:7].copy(), ground[7].copy()
    darkening = 0.55 - 0.2 * np.clip((shadow_density - _CLOUD_T) / 0.08, 0, 1)
    sr = np.where(shadow, sr * darkening, sr)
    st = np.where(shadow, st - 3.0, st)
    # dilated rims are thin haze: a little brighter and cooler than the ground
    haze = np.where(dilated, (density - _DILATED_T) / (_CLOUD_T - _DILATED_T), 0.0)
    sr = sr + 0.04 * haze
    st = st - 2.0 * haze
    opacity = np.where(cloud, np.clip(0.45 + (density - _CLOUD_T) / 0.08, 0, 1), 0.0)
    brightness = 0.85 + 0.3 * _value_noise(x, y, 150, acq.cloud_seed + 7)
    cloud_sr = _CLOUD_SPECTRUM[:, None, None] * brightness
    cloud_top = 272.0 - 10.0 * np.clip((density - _CLOUD_T) / 0.15, 0, 1)
    sr = (1 - opacity) * sr + opacity * cloud_sr
    st = (1 - opacity) * st + opacity * cloud_top

    sr_dn = _encode(sr, SR_SCALE, SR_OFFSET)
    st_dn = _encode(st, ST_SCALE, ST_OFFSET)
    sr_dn[:, fill] = 0
    st_dn[fill] = 0

    codes = DEMO_QA_CODES
    qa = np.where(water, codes["clear_water"], codes["clear_land"])
    qa = np.where(shadow, np.where(water, codes["shadow_water"], codes["shadow_land"]), qa)
    rim = np.where(density > _MEDIUM_T, codes["dilated_medium"], codes["dilated_low"])
    qa = np.where(dilated, np.where(shadow, codes["dilated_shadow"], rim), qa)
    qa = np.where(cloud, codes["cloud"], qa)
    qa = np.where(fill, codes["fill"], qa).astype(np.uint16)

    valid, land = ~fill, ~fill & ~water
    return _Observation(
        sr=sr_dn,
        st=st_dn,
        qa=qa,
        cloud_cover=round(100 * float((cloud & valid).sum()) / float(valid.sum()), 2),
        cloud_cover_land=round(100 * float((cloud & land).sum()) / float(land.sum()), 2),
    )


def _encode(values: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """Physical values to uint16 DN; 0 is reserved for fill."""
    return np.clip(np.rint((values - offset) / scale), 1, 65535).astype(np.uint16)


def _fill_collar(tile: _Tile, acq: _Acquisition) -> np.ndarray:
    """Slanted no-data collar along the tile's west edge, as at a real scene's edge."""
    rows, cols = np.indices(tile.shape)
    if acq.fill_tile != tile.key:
        return np.zeros(tile.shape, dtype=bool)
    return cols < 18 + 0.09 * rows


def _tile_transform(tile: _Tile) -> Affine:
    """30 m grid whose pixel centres are on multiples of 30 m, as Landsat's."""
    h, w = tile.shape
    cx, cy = _from_local(np.array(tile.centre[0]), np.array(tile.centre[1]), f"EPSG:{tile.epsg}")
    first_x = _PIXEL * round((float(cx) - (w - 1) / 2 * _PIXEL) / _PIXEL)
    first_y = _PIXEL * round((float(cy) + (h - 1) / 2 * _PIXEL) / _PIXEL)
    return Affine(_PIXEL, 0.0, first_x - _PIXEL / 2, 0.0, -_PIXEL, first_y + _PIXEL / 2)


def _pixel_centres(tile: _Tile, transform: Affine) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.indices(tile.shape)
    x = transform.c + (cols + 0.5) * transform.a
    y = transform.f + (rows + 0.5) * transform.e
    return x, y


def _sample_tile(tile: _Tile) -> tuple[Affine, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The tile's grid, its pixel centres in local metres, and the ground class/values there."""
    transform = _tile_transform(tile)
    x, y = _to_local(*_pixel_centres(tile, transform), f"EPSG:{tile.epsg}")
    classes, ground = _landscape(x, y)
    return transform, x, y, classes, ground


# --------------------------------------------------------------------------------------------
# STAC shape (Planetary Computer landsat-c2-l2).

_MEDIA_COG = pystac.MediaType.COG
_LANDSAT_EXT = "https://landsat.usgs.gov/stac/landsat-extension/v1.1.1/schema.json"

# asset key, file suffix, band name, center wavelength, fwhm, band description, asset title
_SR_BANDS = (
    ("coastal", "SR_B1", "OLI_B1", 0.44, 0.02, "Coastal/Aerosol", "Coastal/Aerosol Band"),
    ("blue", "SR_B2", "OLI_B2", 0.48, 0.06, "Visible blue", "Blue Band"),
    ("green", "SR_B3", "OLI_B3", 0.56, 0.06, "Visible green", "Green Band"),
    ("red", "SR_B4", "OLI_B4", 0.65, 0.04, "Visible red", "Red Band"),
    ("nir08", "SR_B5", "OLI_B5", 0.87, 0.03, "Near infrared", "Near Infrared Band 0.8"),
    (
        "swir16",
        "SR_B6",
        "OLI_B6",
        1.61,
        0.09,
        "Short-wave infrared",
        "Short-wave Infrared Band 1.6",
    ),
    ("swir22", "SR_B7", "OLI_B7", 2.2, 0.19, "Short-wave infrared", "Short-wave Infrared Band 2.2"),
)


def _item_id(tile: _Tile, acq: _Acquisition) -> str:
    """PC item id, e.g. LC08_L2SP_019036_20230610_02_T1."""
    return f"{acq.satellite}_L2SP_{tile.wrs_path:03d}{tile.wrs_row:03d}_{acq.day:%Y%m%d}_02_T1"


def _product_id(tile: _Tile, acq: _Acquisition) -> str:
    """USGS product id (names the files), e.g. LC08_L2SP_019036_20230610_20230617_02_T1."""
    path_row = f"{tile.wrs_path:03d}{tile.wrs_row:03d}"
    return f"{acq.satellite}_L2SP_{path_row}_{acq.day:%Y%m%d}_{acq.processed:%Y%m%d}_02_T1"


def _footprint(tile: _Tile, transform: Affine) -> shapely.Polygon:
    """Tile outline in lon/lat, densified so the cross-zone warp is followed; exterior CCW."""
    h, w = tile.shape
    left, top = transform.c, transform.f
    outline = shapely.box(left, top + h * transform.e, left + w * transform.a, top)
    to_lonlat = _transformer(CRS.from_epsg(tile.epsg).to_wkt(), CRS.from_epsg(4326).to_wkt())
    return shapely.transform(
        outline.segmentize(32 * _PIXEL),
        lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])),
    )


def _bitfields() -> list[Bitfield]:
    return [
        Bitfield.create(
            offset=offset,
            length=length,
            description=description,
            name=name,
            classes=[
                Classification.create(value=value, name=class_name, description=class_description)
                for value, (class_name, class_description) in enumerate(classes)
            ],
        )
        for name, offset, length, description, classes in _QA_BITFIELDS
    ]


def _add_assets(item: pystac.Item, folder: Path, product_id: str) -> None:
    """The nine assets, with eo:bands and raster:bands as the Planetary Computer has them."""
    for key, suffix, band, centre, fwhm, band_description, title in _SR_BANDS:
        asset = pystac.Asset(
            href=str(folder / f"{product_id}_{suffix}.TIF"),
            title=title,
            description=f"Collection 2 Level-2 {title} ({suffix}) Surface Reflectance",
            media_type=_MEDIA_COG,
            roles=["data", "reflectance"],
        )
        item.add_asset(key, asset)
        EOExtension.ext(asset, add_if_missing=True).bands = [
            Band.create(
                name=band,
                common_name=key,
                description=band_description,
                center_wavelength=centre,
                full_width_half_max=fwhm,
            )
        ]
        RasterExtension.ext(asset, add_if_missing=True).bands = [
            RasterBand.create(
                scale=SR_SCALE,
                offset=SR_OFFSET,
                nodata=0,
                data_type=DataType.UINT16,
                spatial_resolution=30,
            )
        ]

    lwir = pystac.Asset(
        href=str(folder / f"{product_id}_ST_B10.TIF"),
        title="Surface Temperature Band",
        description="Collection 2 Level-2 Thermal Infrared Band (ST_B10) Surface Temperature",
        media_type=_MEDIA_COG,
        roles=["data", "temperature"],
    )
    item.add_asset("lwir11", lwir)
    lwir.common_metadata.gsd = 100  # TIRS' native resolution, resampled to 30 m by USGS
    EOExtension.ext(lwir, add_if_missing=True).bands = [
        Band.create(
            name="TIRS_B10",
            common_name="lwir11",
            description="Long-wave infrared",
            center_wavelength=10.9,
            full_width_half_max=0.59,
        )
    ]
    RasterExtension.ext(lwir, add_if_missing=True).bands = [
        RasterBand.create(
            unit="kelvin",
            scale=ST_SCALE,
            offset=ST_OFFSET,
            nodata=0,
            data_type=DataType.UINT16,
            spatial_resolution=30,
        )
    ]

    qa = pystac.Asset(
        href=str(folder / f"{product_id}_QA_PIXEL.TIF"),
        title="Pixel Quality Assessment Band",
        description="Collection 2 Level-1 Pixel Quality Assessment Band (QA_PIXEL)",
        media_type=_MEDIA_COG,
        roles=["cloud", "cloud-shadow", "snow-ice", "water-mask"],
    )
    item.add_asset("qa_pixel", qa)
    RasterExtension.ext(qa, add_if_missing=True).bands = [
        RasterBand.create(
            unit="bit index", nodata=1, data_type=DataType.UINT16, spatial_resolution=30
        )
    ]
    ClassificationExtension.ext(qa, add_if_missing=True).bitfields = _bitfields()


def _make_item(
    tile: _Tile, acq: _Acquisition, transform: Affine, obs: _Observation, folder: Path
) -> pystac.Item:
    h, w = tile.shape
    footprint = _footprint(tile, transform)
    acquired = datetime.combine(acq.day, tile.overpass, tzinfo=timezone.utc)
    item = pystac.Item(
        id=_item_id(tile, acq),
        geometry=shapely.geometry.mapping(footprint),
        bbox=list(footprint.bounds),
        datetime=acquired,
        properties={
            "gsd": 30,
            "platform": acq.platform,
            "instruments": ["oli", "tirs"],
            "description": "Landsat Collection 2 Level-2 (SYNTHETIC demo data)",
            "landsat:wrs_path": f"{tile.wrs_path:03d}",
            "landsat:wrs_row": f"{tile.wrs_row:03d}",
            "landsat:wrs_type": "2",
            "landsat:scene_id": (
                f"LC{acq.satellite[-1]}{tile.wrs_path:03d}{tile.wrs_row:03d}"
                f"{acq.day:%Y}{acq.day.timetuple().tm_yday:03d}LGN00"
            ),
            "landsat:correction": "L2SP",
            "landsat:cloud_cover_land": obs.cloud_cover_land,
            "landsat:collection_number": "02",
            "landsat:collection_category": "T1",
            "geocluster:synthetic": True,
            "geocluster:demo_version": DEMO_VERSION,
        },
        collection=DEMO_COLLECTION,
    )
    item.stac_extensions.append(_LANDSAT_EXT)
    EOExtension.ext(item, add_if_missing=True).cloud_cover = obs.cloud_cover
    left, top = transform.c, transform.f
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=f"EPSG:{tile.epsg}",
        shape=[h, w],
        transform=[transform.a, transform.b, transform.c, transform.d, transform.e, transform.f],
        bbox=[left, top + h * transform.e, left + w * transform.a, top],
    )
    ViewExtension.ext(item, add_if_missing=True).apply(
        off_nadir=0, sun_azimuth=acq.sun_azimuth, sun_elevation=acq.sun_elevation
    )
    _add_assets(item, folder, _product_id(tile, acq))
    return item


# --------------------------------------------------------------------------------------------
# Writing.


def _write_cog(
    path: Path, band: np.ndarray, transform: Affine, epsg: int, nodata: int, resampling: str
) -> None:
    """One single-band COG like the USGS ones: uint16, deflate, 256 px blocks, overviews."""
    h, w = band.shape
    profile = dict(
        driver="COG",
        width=w,
        height=h,
        count=1,
        dtype="uint16",
        crs=f"EPSG:{epsg}",
        transform=transform,
        nodata=nodata,
        compress="deflate",
        predictor=2,
        blocksize=256,
        overview_resampling=resampling,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(band, 1)


def _catalog_and_collection() -> tuple[pystac.Catalog, pystac.Collection]:
    """The empty catalog and its ``landsat-c2-l2`` collection, both labelled synthetic."""
    catalog = pystac.Catalog(
        id=_CATALOG_ID,
        title="geocluster_dagster offline demo (SYNTHETIC)",
        description=(
            "Offline demo catalog for geocluster_dagster. SYNTHETIC data: a procedurally "
            "generated landscape filled with real Landsat 8 C2 L2 spectra (spyndex), encoded "
            "like Planetary Computer landsat-c2-l2 assets. Not an observation of any place."
        ),
    )
    collection = pystac.Collection(
        id=DEMO_COLLECTION,
        title="Landsat Collection 2 Level-2 (SYNTHETIC demo)",
        description=(
            "SYNTHETIC stand-in for the Planetary Computer's `landsat-c2-l2` collection, built by "
            "geocluster_dagster.demo. The landscape, clouds and acquisitions are invented; the "
            "surface spectra are real Landsat 8 C2 L2 samples shipped with spyndex (MIT). "
            "Assets use the Collection 2 Level-2 encoding (SR: DN*2.75e-5-0.2, ST: "
            "DN*0.00341802+149 K, QA_PIXEL USGS bit flags). Do not use for science."
        ),
        extent=pystac.Extent(
            pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
            pystac.TemporalExtent([[None, None]]),
        ),
        license="MIT",
        keywords=["Landsat", "synthetic", "demo", "Reflectance", "Temperature"],
        providers=[
            pystac.Provider(
                name="geocluster_dagster (synthetic demo generator)",
                roles=[pystac.ProviderRole.PROCESSOR, pystac.ProviderRole.HOST],
            )
        ],
        summaries=pystac.Summaries(
            {
                "platform": sorted({a.platform for a in _ACQUISITIONS}),
                "instruments": ["oli", "tirs"],
                "gsd": [30],
            }
        ),
        extra_fields={"geocluster:synthetic": True},
    )
    catalog.add_child(collection)
    return catalog, collection


def _write_demo(staging: Path) -> None:
    """Write the catalog, COGs, AOI registry and (last) the manifest into ``staging``."""
    catalog, collection = _catalog_and_collection()

    # the ground is the same on both dates; only the sky changes
    sampled = {tile.key: _sample_tile(tile) for tile in _TILES}
    for acq in _ACQUISITIONS:
        for tile in _TILES:
            transform, x, y, classes, ground = sampled[tile.key]
            obs = _observe(classes, ground, x, y, tile, acq)
            folder = staging / DEMO_COLLECTION / _item_id(tile, acq)
            folder.mkdir(parents=True)
            item = _make_item(tile, acq, transform, obs, folder)
            rasters = {key: (obs.sr[i], 0, "average") for i, (key, *_) in enumerate(_SR_BANDS)}
            rasters["lwir11"] = (obs.st, 0, "average")
            rasters["qa_pixel"] = (obs.qa, 1, "nearest")  # never average bit flags
            for key, (band, nodata, resampling) in rasters.items():
                href = Path(item.assets[key].href)
                _write_cog(href, band, transform, tile.epsg, nodata, resampling)
            collection.add_item(item)

    collection.update_extent_from_items()
    # the assets' eo/raster/classification fields are repeated in item_assets
    collection.stac_extensions = [
        EOExtension.get_schema_uri(),
        RasterExtension.get_schema_uri(),
        ClassificationExtension.get_schema_uri(),
    ]
    collection.item_assets = {
        key: pystac.ItemAssetDefinition({k: v for k, v in asset.to_dict().items() if k != "href"})
        for key, asset in next(iter(collection.get_items())).assets.items()
    }
    # a file href: pystac would take a directory name with a dot in it for a file
    catalog.normalize_hrefs(str(staging / "catalog.json"))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    (staging / _AOI_REGISTRY).write_text(json.dumps(_aoi_registry(), indent=2) + "\n")
    _write_manifest(staging)


# AOI polygon vertices in local metres, counter-clockwise; the notch makes clip != bbox.
_AOI_OUTLINE = (
    (-7000, -3500),
    (-1500, -3800),
    (1200, -2600),
    (6700, -3300),
    (6900, 3500),
    (2600, 4000),
    (300, 1200),
    (-2800, 3500),
    (-7100, 3300),
)


def _aoi_registry() -> dict:
    """GeoJSON FeatureCollection with the demo AOI (RFC 7946: lon/lat, exterior CCW)."""
    x = np.array([p[0] for p in _AOI_OUTLINE], dtype=float)
    y = np.array([p[1] for p in _AOI_OUTLINE], dtype=float)
    lon, lat = _from_local(x, y, "EPSG:4326")
    ring = [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat, strict=True)]
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": DEMO_AOI_ID,
                "properties": {
                    "id": DEMO_AOI_ID,
                    "name": "Demo AOI (synthetic landscape across the UTM 16/17 boundary, 84 W)",
                },
                "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]},
            }
        ],
    }


# --------------------------------------------------------------------------------------------
# Idempotence and atomic replacement.


def _demo_paths(root: Path) -> DemoPaths:
    month = date.fromisoformat(DEMO_MONTH)
    start = datetime.combine(month, time(0), tzinfo=timezone.utc)
    next_month = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    return DemoPaths(
        root=root,
        catalog=root / "catalog.json",
        aoi_registry=root / _AOI_REGISTRY,
        aoi_id=DEMO_AOI_ID,
        start=start,
        end=datetime.combine(next_month, time(0), tzinfo=timezone.utc),
        item_ids=tuple(_item_id(tile, acq) for acq in _ACQUISITIONS for tile in _TILES),
    )


def _write_manifest(folder: Path) -> None:
    """Record the version and every file's size; written last, so it marks a complete demo."""
    files = {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    manifest = {"demo_version": DEMO_VERSION, "files": files}
    (folder / _MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(root: Path) -> bool:
    """True if ``root`` holds every file of a ``DEMO_VERSION`` demo, at its recorded size."""
    manifest = _read_manifest(root)
    if not isinstance(manifest, dict) or manifest.get("demo_version") != DEMO_VERSION:
        return False
    try:
        return all((root / name).stat().st_size == size for name, size in manifest["files"].items())
    except (OSError, KeyError, AttributeError, TypeError):
        return False


def _refuse_foreign_directory(root: Path, overwrite: bool) -> None:
    """Never replace a file, or a non-empty directory that is not a demo, unless told to."""
    if root.exists() and not root.is_dir():
        raise ConfigError(f"Demo root {root} is a file; pass build_demo() a directory path.")
    if overwrite or not root.is_dir() or (root / _MANIFEST).exists():
        return
    if any(root.iterdir()):
        raise ConfigError(
            f"Demo root {root} is a non-empty directory that holds no demo; refusing to replace "
            "it. Pass an empty or new directory, or overwrite=True to replace its contents."
        )


def _move_into_place(staging: Path, root: Path, overwrite: bool) -> None:
    """Rename the finished staging directory to ``root``, replacing what was there."""
    if not root.exists():
        try:
            os.rename(staging, root)
            return
        except OSError:
            if not root.exists():
                raise
        # another process won the race; its demo is as good as ours
    if not overwrite and _is_complete(root):
        shutil.rmtree(staging, ignore_errors=True)
        return
    retired = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(root, retired)
    try:
        os.rename(staging, root)
    except OSError:
        os.rename(retired, root)
        raise
    shutil.rmtree(retired, ignore_errors=True)
