"""Band naming per sensor and provider: common names to STAC asset keys, QA bands, scale/offset.

The Planetary Computer, Earth Search and USGS name the same Landsat and Sentinel-2 files
differently (``red`` / ``B04`` / ``SR_B4``). The rest of the package speaks only common
names (``blue, green, red, nir, swir16, swir22, lwir, coastal``); this module is the one
place that maps them to an item's assets and says how to turn their digital numbers (DN)
into physical units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pystac

from .errors import BandNotFound, ConfigError
from .valid_range import LANDSAT_SR, LANDSAT_ST, SENTINEL2_SR, ValidRange

#: Common band names this package understands, in spectral order.
COMMON_BANDS: tuple[str, ...] = (
    "coastal",
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "nir08",
    "swir16",
    "swir22",
    "lwir",
)

#: The reflective bands: the default clustering features (thermal is in kelvin, not reflectance).
REFLECTANCE_BANDS: tuple[str, ...] = tuple(b for b in COMMON_BANDS if b != "lwir")


def band_unit(name: str) -> str:
    """The unit a band or index of the exported GeoTIFF is in, as its metadata states it."""
    if name in REFLECTANCE_BANDS:
        return "reflectance"  # unitless surface reflectance, 0-1
    if name == "lwir":
        return "K"  # Collection 2 ST_B10: land surface temperature in kelvin
    if name == "lst":
        return "degree_Celsius"
    return "index"  # NDVI and the spyndex indices: unitless ratios


#: Band centre wavelengths in micrometres, for plots and spectral-index lookups.
WAVELENGTH_UM: dict[str, float] = {
    "coastal": 0.443,
    "blue": 0.482,
    "green": 0.561,
    "red": 0.655,
    "rededge1": 0.705,
    "rededge2": 0.740,
    "rededge3": 0.783,
    "nir": 0.865,
    "nir08": 0.865,
    "swir16": 1.609,
    "swir22": 2.201,
    "lwir": 10.9,
}

QAKind = Literal["qa_pixel", "scl"]


def spectral_order(names: Sequence[str]) -> list[str]:
    """Names sorted by wavelength (known bands first, others after in their given order)."""
    rank = {name: i for i, name in enumerate(COMMON_BANDS)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), list(names).index(n)))


@dataclass(frozen=True)
class Scaling:
    """Linear DN -> physical conversion: ``value = DN * scale + offset``; DN == nodata is missing."""

    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None


@dataclass(frozen=True)
class SensorProfile:
    """How one family of collections names and encodes its bands."""

    name: str
    """Human-readable sensor family, used in messages."""
    qa_kind: QAKind
    """How the QA band is decoded: Landsat QA_PIXEL bit flags or Sentinel-2 SCL classes."""
    asset_keys: Mapping[str, tuple[str, ...]]
    """Common band name -> candidate asset keys, most common provider spelling first."""
    qa_asset_keys: tuple[str, ...]
    """Candidate asset keys of the QA band."""
    fallback_scaling: Mapping[str, Scaling]
    """Scaling used when an item carries no ``raster:bands`` metadata for a band."""
    qa_nodata: int
    """The QA band's fill value."""
    native_resolution: float
    """Finest native pixel size in metres, the default output resolution."""
    band_dtype: str = "uint16"
    """Data type of the spectral DN files, for items whose metadata does not say."""
    qa_dtype: str = "uint16"
    """Data type of the QA band files."""
    valid_ranges: Mapping[str, ValidRange] = field(default_factory=dict)
    """Common band name -> the physical values the producer documents as valid
    (:mod:`geocluster_dagster.valid_range`)."""


_LANDSAT_SR = Scaling(scale=0.0000275, offset=-0.2, nodata=0)
_LANDSAT_ST = Scaling(scale=0.00341802, offset=149.0, nodata=0)

LANDSAT_C2_L2 = SensorProfile(
    name="Landsat Collection 2 Level-2",
    qa_kind="qa_pixel",
    # Planetary Computer and Earth Search use common names (the same for Landsat 4-9, whose
    # band numbers differ); USGS file names are the last resort and are Landsat 8/9 numbering.
    asset_keys={
        "coastal": ("coastal", "SR_B1"),
        "blue": ("blue", "SR_B2"),
        "green": ("green", "SR_B3"),
        "red": ("red", "SR_B4"),
        "nir": ("nir08", "nir", "SR_B5"),
        "nir08": ("nir08", "SR_B5"),
        "swir16": ("swir16", "SR_B6"),
        "swir22": ("swir22", "SR_B7"),
        "lwir": ("lwir11", "lwir", "ST_B10", "ST_B10.TIF", "ST_B6"),
    },
    qa_asset_keys=("qa_pixel", "QA_PIXEL", "QA_PIXEL.TIF"),
    fallback_scaling={
        name: (_LANDSAT_ST if name == "lwir" else _LANDSAT_SR) for name in COMMON_BANDS
    },
    qa_nodata=1,
    native_resolution=30.0,
    valid_ranges={name: LANDSAT_ST if name == "lwir" else LANDSAT_SR for name in COMMON_BANDS},
)

SENTINEL2_L2A = SensorProfile(
    name="Sentinel-2 L2A",
    qa_kind="scl",
    asset_keys={
        "coastal": ("coastal", "B01"),
        "blue": ("blue", "B02"),
        "green": ("green", "B03"),
        "red": ("red", "B04"),
        "rededge1": ("rededge1", "B05"),
        "rededge2": ("rededge2", "B06"),
        "rededge3": ("rededge3", "B07"),
        "nir": ("nir", "B08"),
        "nir08": ("nir08", "B8A"),
        "swir16": ("swir16", "B11"),
        "swir22": ("swir22", "B12"),
    },
    qa_asset_keys=("scl", "SCL"),
    # Processing baseline >= 04.00 adds BOA_ADD_OFFSET = -1000 DN; see sentinel2_scaling().
    fallback_scaling={name: Scaling(scale=0.0001, offset=0.0, nodata=0) for name in COMMON_BANDS},
    qa_nodata=0,
    native_resolution=10.0,
    qa_dtype="uint8",
    valid_ranges={name: SENTINEL2_SR for name in COMMON_BANDS if name != "lwir"},
)


def profile_named(name: str) -> SensorProfile | None:
    """The profile whose ``name`` a stack or raster records (its ``sensor`` attribute)."""
    return next((p for p in (LANDSAT_C2_L2, SENTINEL2_L2A) if p.name == name), None)


def sensor_profile(item: pystac.Item) -> SensorProfile:
    """The profile for an item, from its collection id or platform."""
    hint = " ".join(
        str(v).lower()
        for v in (item.collection_id, item.properties.get("platform"), item.id)
        if v is not None
    )
    if "landsat" in hint or item.id.startswith(("LC0", "LE0", "LT0", "LO0")):
        return LANDSAT_C2_L2
    if "sentinel-2" in hint or "sentinel2" in hint or item.id.startswith(("S2A", "S2B", "S2C")):
        return SENTINEL2_L2A
    raise ConfigError(
        f"Item {item.id!r} (collection {item.collection_id!r}) is neither Landsat Collection 2 "
        "Level-2 nor Sentinel-2 L2A; set `collection` to 'landsat-c2-l2' or 'sentinel-2-l2a'."
    )


def _is_raster(asset: pystac.Asset) -> bool:
    media = (asset.media_type or "").lower()
    return "jp2" not in media and (not media or "tiff" in media or "geotiff" in media)


def _common_names(asset: pystac.Asset) -> list[str]:
    bands = asset.extra_fields.get("eo:bands") or []
    return [str(b["common_name"]) for b in bands if isinstance(b, dict) and b.get("common_name")]


def find_asset_key(item: pystac.Item, band: str, profile: SensorProfile | None = None) -> str:
    """The asset key holding common band ``band`` in ``item``.

    Known provider spellings are tried first; then any GeoTIFF asset whose ``eo:bands``
    declares that common name (so an unknown provider with good metadata still works).
    """
    profile = profile or sensor_profile(item)
    if band not in profile.asset_keys:
        raise BandNotFound(
            f"{profile.name} has no band {band!r}; choose `bands` from "
            f"{sorted(profile.asset_keys)}."
        )
    for key in profile.asset_keys[band]:
        if key in item.assets and _is_raster(item.assets[key]):
            return key
    wanted = {band, *profile.asset_keys[band]}
    for key, asset in item.assets.items():
        if _is_raster(asset) and wanted.intersection(_common_names(asset)):
            return key
    raise BandNotFound(
        f"Item {item.id!r} has no asset for band {band!r} (looked for asset keys "
        f"{list(profile.asset_keys[band])} and eo:bands common_name {band!r}); its assets are "
        f"{sorted(item.assets)}. Remove {band!r} from `bands`, or pick a collection that has it"
        + (
            " (Landsat thermal lives in the ST product: use 'landsat-c2-l2')."
            if band == "lwir"
            else "."
        )
    )


def find_qa_key(item: pystac.Item, profile: SensorProfile | None = None) -> str:
    """The asset key of the item's QA band (QA_PIXEL or SCL)."""
    profile = profile or sensor_profile(item)
    for key in profile.qa_asset_keys:
        if key in item.assets:
            return key
    raise BandNotFound(
        f"Item {item.id!r} has no QA band (looked for {list(profile.qa_asset_keys)}); its assets "
        f"are {sorted(item.assets)}. Without it clouds cannot be masked: use a Level-2 collection "
        "that ships QA_PIXEL (Landsat) or SCL (Sentinel-2), or set `mask_clouds: false`."
    )


def sentinel2_offset(item: pystac.Item) -> float:
    """BOA offset in reflectance for a Sentinel-2 L2A item.

    From processing baseline 04.00 (25 January 2022) L2A DNs carry BOA_ADD_OFFSET = -1000,
    so reflectance = (DN - 1000) / 10000. Providers that harmonise older and newer data declare
    it in ``raster:bands``; this is the fallback when they don't.
    """
    baseline = item.properties.get("s2:processing_baseline")
    if baseline is None:
        when = item.datetime or item.common_metadata.start_datetime
        return -0.1 if when is not None and when.strftime("%Y-%m-%d") >= "2022-01-25" else 0.0
    try:
        return -0.1 if float(baseline) >= 4.0 else 0.0
    except ValueError:
        return 0.0


def asset_scaling(item: pystac.Item, asset_key: str, band: str, profile: SensorProfile) -> Scaling:
    """Scale, offset and nodata of one asset: from ``raster:bands`` when present, else the profile."""
    fallback = profile.fallback_scaling.get(band, Scaling())
    if profile is SENTINEL2_L2A:
        fallback = Scaling(fallback.scale, sentinel2_offset(item), fallback.nodata)
    raster_bands = item.assets[asset_key].extra_fields.get("raster:bands") or []
    meta = raster_bands[0] if raster_bands and isinstance(raster_bands[0], dict) else {}
    return Scaling(
        scale=float(meta.get("scale", fallback.scale)),
        offset=float(meta.get("offset", fallback.offset)),
        nodata=meta.get("nodata", fallback.nodata),
    )


@dataclass(frozen=True)
class BandPlan:
    """What to read from a set of items: asset keys per common band name, and the QA asset."""

    profile: SensorProfile
    assets: dict[str, str]
    """Common band name -> asset key (the same in every item)."""
    qa_asset: str | None
    """Asset key of the QA band, or None when masking is off."""


def plan_bands(
    items: Sequence[pystac.Item], bands: Sequence[str], *, with_qa: bool = True
) -> BandPlan:
    """Resolve common band names to asset keys that every item shares."""
    if not items:
        raise ConfigError("No STAC items to read bands from.")
    profiles = {sensor_profile(item).name: sensor_profile(item) for item in items}
    if len(profiles) > 1:
        raise ConfigError(
            f"The items mix sensors ({sorted(profiles)}); search one `collection` per partition."
        )
    profile = next(iter(profiles.values()))
    unknown = [b for b in bands if b not in profile.asset_keys]
    if unknown:
        raise BandNotFound(
            f"{profile.name} has no band(s) {unknown}; choose `bands` from {sorted(profile.asset_keys)}."
        )
    assets: dict[str, str] = {}
    for band in bands:
        keys = {find_asset_key(item, band, profile) for item in items}
        if len(keys) > 1:
            raise ConfigError(
                f"Band {band!r} is stored under different asset keys {sorted(keys)} across items; "
                "search one provider per partition."
            )
        assets[band] = keys.pop()
    qa_asset = None
    if with_qa:
        qa_keys = {find_qa_key(item, profile) for item in items}
        if len(qa_keys) > 1:
            raise ConfigError(
                f"The QA band has different asset keys {sorted(qa_keys)} across items."
            )
        qa_asset = qa_keys.pop()
    return BandPlan(profile=profile, assets=assets, qa_asset=qa_asset)
