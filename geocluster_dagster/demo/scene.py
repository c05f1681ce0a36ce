"""The demo's scenes: tiles, acquisitions, the atmosphere, and their C2 L2 encoding.

Two WRS-2 tiles on their own UTM grids (EPSG:32616 and EPSG:32617, straddling 84 W), each
"acquired" on two June 2023 dates. Each date has cumulus clouds, their shadows and dilated-cloud
rims in alternating cloud streets, and one tile has a fill collar on the second date. What the
sensor sees is encoded as Collection 2 Level-2 uint16 DN (``SR_*``/``ST_*`` scale and offset,
nodata 0) and USGS QA_PIXEL bit codes (``_QA_BITFIELDS``, ``DEMO_QA_CODES``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time

import numpy as np
from rasterio.transform import Affine

from geocluster_dagster.demo.landscape import (
    WATER,
    _fbm,
    _from_local,
    _value_noise,
    local_landscape,
    to_local,
)

# Collection 2 Level-2 encoding, as in the Planetary Computer's raster:bands.
SR_SCALE, SR_OFFSET = 0.0000275, -0.2
ST_SCALE, ST_OFFSET = 0.00341802, 149.0

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
# Tiles, acquisitions and the atmosphere.


@dataclass(frozen=True)
class Tile:
    """One WRS-2 crop on its own UTM grid."""

    key: str
    epsg: int
    wrs_path: int
    wrs_row: int
    shape: tuple[int, int]
    centre: tuple[float, float]  # local metres
    overpass: time  # UTC time of day of the scene centre


@dataclass(frozen=True)
class Acquisition:
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


DEMO_TILES = (
    Tile("A", 32616, 19, 36, (300, 320), (-3300.0, -300.0), time(16, 9, 51)),
    Tile("B", 32617, 18, 36, (310, 300), (3300.0, 600.0), time(16, 3, 38)),
)
"""The demo's two tiles: A (EPSG:32616, WRS 19/36) and B (EPSG:32617, WRS 18/36)."""
DEMO_ACQUISITIONS = (
    Acquisition(
        "LC08", "landsat-8", date(2023, 6, 10), date(2023, 6, 17), 521, 0.0, 110.4, 68.2, None
    ),
    Acquisition(
        "LC09", "landsat-9", date(2023, 6, 18), date(2023, 6, 25), 522, 1.0, 108.9, 68.6, "A"
    ),
)
"""The demo's two dates: Landsat 8 on 2023-06-10, Landsat 9 on 2023-06-18 (fill collar on A)."""

_CLOUD_T, _DILATED_T, _MEDIUM_T = 0.57, 0.5, 0.535  # thresholds on cloud density
_STREET_WIDTH, _STREET_TAPER = 2800.0, 450.0
_CLOUD_SPECTRUM = np.array([0.50, 0.51, 0.52, 0.53, 0.56, 0.44, 0.33])  # bright, flat, dips in SWIR


def _shadow_offset(acq: Acquisition) -> tuple[float, float]:
    """Ground shift (m) from a cloud to its shadow: away from the sun, cloud tops ~2 km high."""
    length = 2000 / np.tan(np.radians(acq.sun_elevation))
    away = np.radians(acq.sun_azimuth + 180)
    return float(length * np.sin(away)), float(length * np.cos(away))


def _cloud_density(x: np.ndarray, y: np.ndarray, acq: Acquisition) -> np.ndarray:
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
class Observation:
    """One tile on one date: encoded rasters and their cloud statistics."""

    sr: np.ndarray  # (7, h, w) uint16 DN
    st: np.ndarray  # (h, w) uint16 DN
    qa: np.ndarray  # (h, w) uint16 QA_PIXEL
    cloud_cover: float
    cloud_cover_land: float


def observe(
    classes: np.ndarray,
    ground: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    tile: Tile,
    acq: Acquisition,
) -> Observation:
    """What the sensor sees through this date's clouds, encoded as C2 L2 DN and QA_PIXEL.

    ``classes`` and ``ground`` are ``local_landscape`` at the local-frame points ``x``, ``y``
    (all of ``tile.shape``). The fill collar is drawn when ``acq.fill_tile == tile.key``; when
    ``acq.fill_tile`` is None the clouds keep off the other date's collar.
    """
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
    return Observation(
        sr=sr_dn,
        st=st_dn,
        qa=qa,
        cloud_cover=round(100 * float((cloud & valid).sum()) / float(valid.sum()), 2),
        cloud_cover_land=round(100 * float((cloud & land).sum()) / float(land.sum()), 2),
    )


def _encode(values: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """Physical values to uint16 DN; 0 is reserved for fill."""
    return np.clip(np.rint((values - offset) / scale), 1, 65535).astype(np.uint16)


def _fill_collar(tile: Tile, acq: Acquisition) -> np.ndarray:
    """Slanted no-data collar along the tile's west edge, as at a real scene's edge."""
    rows, cols = np.indices(tile.shape)
    if acq.fill_tile != tile.key:
        return np.zeros(tile.shape, dtype=bool)
    return cols < 18 + 0.09 * rows


def tile_transform(tile: Tile) -> Affine:
    """30 m grid whose pixel centres are on multiples of 30 m, as Landsat's."""
    h, w = tile.shape
    cx, cy = _from_local(np.array(tile.centre[0]), np.array(tile.centre[1]), f"EPSG:{tile.epsg}")
    first_x = _PIXEL * round((float(cx) - (w - 1) / 2 * _PIXEL) / _PIXEL)
    first_y = _PIXEL * round((float(cy) + (h - 1) / 2 * _PIXEL) / _PIXEL)
    return Affine(_PIXEL, 0.0, first_x - _PIXEL / 2, 0.0, -_PIXEL, first_y + _PIXEL / 2)


def _pixel_centres(tile: Tile, transform: Affine) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.indices(tile.shape)
    x = transform.c + (cols + 0.5) * transform.a
    y = transform.f + (rows + 0.5) * transform.e
    return x, y


def _sample_tile(tile: Tile) -> tuple[Affine, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The tile's grid, its pixel centres in local metres, and the ground class/values there."""
    transform = tile_transform(tile)
    x, y = to_local(*_pixel_centres(tile, transform), f"EPSG:{tile.epsg}")
    classes, ground = local_landscape(x, y)
    return transform, x, y, classes, ground
