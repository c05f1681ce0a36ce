"""Lazy, chunked loading of STAC items onto one pixel grid, cloud-masked and scaled to physical units.

odc-stac does the reading and reprojection; this module decides the grid (CRS, resolution,
pixel alignment), groups items into time slices, and turns digital numbers into surface
reflectance (or kelvin) with one validity mask shared by every band of a time slice.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, get_args

import dask.array as da
import numpy as np
import odc.stac
import pystac
import shapely
import xarray as xr
from affine import Affine
from odc.geo import XY, xy_
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from . import encoding
from .bands import BandPlan, Scaling, SensorProfile, asset_scaling, plan_bands, sensor_profile
from .blocks import CHUNK_SIZE
from .budget import MAX_GRID_PIXELS, estimate, refuse_runaway
from .errors import ConfigError, NoOverlap
from .fields import described
from .mask import DEFAULT_MASK_FLAGS, MaskFlag, mask_reasons, qa_mask
from .preflight import check_assets
from .remote import RemoteReader, RemoteReadSettings, RetryingRioDriver
from .search import acquired, cloud_cover

log = logging.getLogger(__name__)

#: The layers of the stack that describe its pixels rather than measure the surface.
PIXEL_STATE, MASK_REASONS = "pixel_state", "mask_reasons"
STATE_LAYERS = (PIXEL_STATE, MASK_REASONS)

#: Values of the ``pixel_state`` layer.
NO_DATA, CLEAR, MASKED = 0, 1, 2

Resampling = Literal["nearest", "bilinear", "cubic", "average"]
RESAMPLING_METHODS: tuple[str, ...] = get_args(Resampling)
GroupBy = Literal["solar_day", "id"]


@dataclass(frozen=True)
class LoadSettings:
    """How to read items: which bands, on which grid, and what to mask."""

    bands: tuple[str, ...] | None = described(
        (),
        "Common band names (blue, green, red, nir, swir16, swir22, lwir, "
        "coastal, ...); empty = the sensor's defaults (Landsat adds lwir).",
    )
    resolution: float | None = described(
        None, "Output pixel size in CRS units; None = native (30 m Landsat, 10 m Sentinel-2)."
    )
    crs: str | None = described(
        None,
        "Output CRS, e.g. 'EPSG:32616'; None = the items' most common CRS (no "
        "resampling for them).",
    )
    chunk_size: int = described(
        CHUNK_SIZE, "Dask chunk edge in pixels: memory per task grows with its square."
    )
    resampling: Resampling = described(
        "nearest", "Resampling of spectral bands when reprojecting; QA is always nearest."
    )
    mask_clouds: bool = described(True, "Mask with the QA band (Landsat QA_PIXEL, Sentinel-2 SCL).")
    mask_flags: tuple[MaskFlag, ...] = described(
        DEFAULT_MASK_FLAGS, "QA conditions treated as unusable."
    )
    groupby: GroupBy = described(
        "solar_day",
        "'solar_day' fuses same-day tiles of a path into one observation; "
        "'id' keeps every item apart.",
    )
    preflight: bool = described(
        True, "Open every asset's header before loading, to fail early with the URL that is broken."
    )
    max_upsampling: float = described(
        4.0,
        "Refuse a resolution finer than the sensor's native pixel divided by this (7.5 m for "
        "30 m Landsat): finer pixels add no detail, only pixels and time. Raise it to allow.",
    )
    max_grid_pixels: int = described(
        MAX_GRID_PIXELS,
        "Refuse a partition whose output grid (the AOI's bounding box at the output "
        "resolution) has more pixels than this; a whole Landsat scene has about 61 million.",
    )

    def __post_init__(self) -> None:
        bands = list(self.bands or ())
        twice = sorted({b for b in bands if bands.count(b) > 1})
        if twice:
            raise ConfigError(f"`bands` names {twice} more than once: list each band once.")
        if self.resolution is not None and self.resolution <= 0:
            raise ConfigError(f"`resolution` must be positive, got {self.resolution}.")
        if not self.max_upsampling >= 1:
            raise ConfigError(
                f"`max_upsampling` must be at least 1 (no finer than native), got "
                f"{self.max_upsampling}."
            )
        if self.max_grid_pixels < 1:
            raise ConfigError(
                f"`max_grid_pixels` must be a positive number of pixels, got {self.max_grid_pixels}."
            )
        if self.chunk_size < 64:
            raise ConfigError(f"`chunk_size` must be at least 64 pixels, got {self.chunk_size}.")
        if self.resampling not in RESAMPLING_METHODS:
            raise ConfigError(
                f"`resampling` must be one of {RESAMPLING_METHODS}, got {self.resampling!r}."
            )
        if self.groupby not in get_args(GroupBy):
            raise ConfigError(f"`groupby` must be 'solar_day' or 'id', got {self.groupby!r}.")


DEFAULT_BANDS: dict[str, tuple[str, ...]] = {
    "qa_pixel": ("blue", "green", "red", "nir", "swir16", "swir22", "lwir"),
    "scl": ("blue", "green", "red", "nir", "swir16", "swir22"),
}


def default_bands(profile: SensorProfile) -> tuple[str, ...]:
    return DEFAULT_BANDS[profile.qa_kind]


@dataclass
class _TimeSlice:
    key: tuple[object, ...]
    items: list[pystac.Item] = field(default_factory=list)
    scalings: dict[str, Scaling] = field(default_factory=dict)


def _solar_date(item: pystac.Item) -> str:
    """Local solar date: same-path adjacent scenes share it, different overpasses don't."""
    lon = shapely.geometry.shape(item.geometry).centroid.x if item.geometry else 0.0
    return (acquired(item) + timedelta(hours=lon / 15.0)).date().isoformat()


def group_items(items: Sequence[pystac.Item], plan: BandPlan, groupby: str) -> list[_TimeSlice]:
    """Time slices in odc-stac's order; each slice shares one scale/offset per band."""
    slices: dict[tuple[object, ...], _TimeSlice] = {}
    for index, item in enumerate(items):
        scalings = {
            band: asset_scaling(item, key, band, plan.profile) for band, key in plan.assets.items()
        }
        # Items whose scalings differ (e.g. Sentinel-2 baselines before/after 04.00) never share a slice.
        signature = tuple((b, s.scale, s.offset, s.nodata) for b, s in sorted(scalings.items()))
        when = _solar_date(item) if groupby == "solar_day" else f"{index:06d}"
        key = (when, signature)
        slices.setdefault(key, _TimeSlice(key=key, scalings=scalings)).items.append(item)
    return [slices[key] for key in sorted(slices)]


def _grid_crs(items: Sequence[pystac.Item], aoi: BaseGeometry, crs: str | None) -> CRS:
    if crs is not None:
        try:
            return CRS.from_user_input(crs)
        except Exception as err:  # pyproj raises CRSError; message is enough
            raise ConfigError(f"`crs` {crs!r} is not a CRS pyproj understands: {err}") from err
    epsgs = Counter(epsg for epsg in map(_item_epsg, items) if epsg is not None)
    if not epsgs:
        return CRS.from_epsg(_utm_epsg(aoi))
    ranked = sorted(epsgs.items(), key=lambda kv: (-kv[1], kv[0] != _utm_epsg(aoi), kv[0]))
    return CRS.from_epsg(ranked[0][0])


def _item_epsg(item: pystac.Item) -> int | None:
    epsg = item.properties.get("proj:epsg")
    if epsg is None and str(item.properties.get("proj:code", "")).upper().startswith("EPSG:"):
        epsg = item.properties["proj:code"].split(":")[1]
    return int(epsg) if epsg is not None else None


def _utm_epsg(aoi: BaseGeometry) -> int:
    lon, lat = aoi.centroid.x, aoi.centroid.y
    zone = int((lon + 180) // 6) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def _refuse_upsampling(resolution: float, native: float, crs: CRS, limit: float) -> None:
    """A grid in metres finer than ``native / limit``: refused, saying by how much."""
    if crs.is_geographic or resolution * limit >= native:
        return
    factor = native / resolution
    raise ConfigError(
        f"`resolution` {resolution:g} m is {factor:.3g}x finer than the sensor's native "
        f"{native:g} m (band_stack): finer pixels invent no detail, they multiply the pixels and "
        f"the time by {factor * factor:,.0f}. Use at least {native / limit:g} m (native / "
        f"max_upsampling={limit:g}), leave `resolution` unset for native, or raise "
        "`max_upsampling` to allow it."
    )


def _native_anchor(
    items: Sequence[pystac.Item], crs: CRS, resolution: float
) -> XY[float] | Literal["edge"]:
    """Snap output pixels to the items' own grid when they are on it, so nothing is resampled.

    Landsat pixel centres sit on multiples of 30 m (edges at 15 m offsets), Sentinel-2 edges on
    multiples of 10 m; snapping to edges at 0 would shift Landsat by half a pixel.
    """
    for item in items:
        transform = item.properties.get("proj:transform")
        if (
            transform
            and _item_epsg(item) == crs.to_epsg()
            and abs(abs(transform[0]) - resolution) < 1e-6
        ):
            fx = (transform[2] / resolution) % 1.0
            fy = (transform[5] / resolution) % 1.0
            return xy_(round(fx, 6) % 1.0, round(fy, 6) % 1.0)
    return "edge"


#: A grid dimension at least this many chunks long gets its chunk edges on the source tiles.
ALIGN_MIN_CHUNKS = 4


def tile_aligned_padding(
    items: Sequence[pystac.Item], plan: BandPlan, geobox: GeoBox, chunk_size: int
) -> tuple[int, int]:
    """(rows, cols) to extend the grid by, up and left, so chunk edges fall on source tile edges.

    A chunk straddling the source COGs' tiles decodes up to 3 x 3 tiles of 512 px for 2 x 2
    tiles' worth of pixels, and a tile shared by two rows of chunks is decoded twice unless a
    whole row of chunks fits in GDAL's cache: a scene then costs ~2x the decoding it needs.
    Chunk edges on multiples of ``chunk_size`` from the sources' own origin fall on their tile
    edges (tile sizes divide the chunk size). Items on another CRS or pixel size, or without
    ``proj:transform``, cannot be aligned; with several origins the commonest wins. Dimensions
    shorter than ALIGN_MIN_CHUNKS chunks are not padded: the extra row or column of tiles a
    pad may read would cost more there than the misalignment does.
    """
    offsets: Counter[tuple[int, int]] = Counter()
    origin_x, origin_y = geobox.affine.c, geobox.affine.f
    for item in items:
        if geobox.crs is None or _item_epsg(item) != geobox.crs.epsg:
            continue
        for key in plan.assets.values():
            asset = item.assets.get(key)
            transform = (asset.extra_fields.get("proj:transform") if asset else None) or (
                item.properties.get("proj:transform")
            )
            if not transform or transform[1] or transform[3]:
                continue
            if (
                abs(transform[0] - geobox.affine.a) > 1e-6
                or abs(transform[4] - geobox.affine.e) > 1e-6
            ):
                continue
            cols = (origin_x - transform[2]) / transform[0]
            rows = (origin_y - transform[5]) / transform[4]
            if abs(cols - round(cols)) > 1e-3 or abs(rows - round(rows)) > 1e-3:
                continue
            offsets[(round(rows) % chunk_size, round(cols) % chunk_size)] += 1
    if not offsets:
        return 0, 0
    rows, cols = offsets.most_common(1)[0][0]
    height, width = geobox.shape.yx
    return (
        rows if height >= ALIGN_MIN_CHUNKS * chunk_size else 0,
        cols if width >= ALIGN_MIN_CHUNKS * chunk_size else 0,
    )


def _padded(geobox: GeoBox, rows: int, cols: int) -> GeoBox:
    height, width = geobox.shape.yx
    return GeoBox(
        (height + rows, width + cols),
        geobox.affine * Affine.translation(-cols, -rows),
        geobox.crs,
    )


def load_band_stack(
    items: Sequence[pystac.Item],
    aoi: BaseGeometry,
    settings: LoadSettings = LoadSettings(),
    *,
    href_signer: Callable[[str], str] | None = None,
    remote: RemoteReadSettings | None = None,
) -> xr.Dataset:
    """Lazy (time, y, x) float32 bands in physical units; masked pixels are NaN.

    Also returns ``pixel_state`` (uint8: 0 no data, 1 clear, 2 masked by QA) so later stages
    can count clear pixels without touching the spectral bands, and ``mask_reasons`` (uint16,
    see :func:`geocluster_dagster.mask.mask_reasons`) saying which flags masked a pixel. Hrefs are signed with
    ``href_signer`` when each read happens, not now, and remote reads retry as ``remote`` says
    (default RemoteReadSettings(); see geocluster_dagster.remote); a read that still fails
    raises AssetReadError.
    """
    items = list(items)
    profile = sensor_profile(items[0])
    bands = settings.bands or default_bands(profile)
    plan = plan_bands(items, bands, with_qa=settings.mask_clouds)
    crs = _grid_crs(items, aoi, settings.crs)
    if crs.is_geographic and settings.resolution is None:
        native = profile.native_resolution
        raise ConfigError(
            f"`crs` {settings.crs!r} is geographic (degrees) and `resolution` is unset: the "
            f"sensor's native {native:g} m would become {native:g} degrees per pixel. Set "
            f"`resolution` in degrees (about {native / 111_320:.6f} for {native:g} m at the "
            "equator; less east-west away from it), or leave `crs` unset for the scenes' UTM "
            "grid (band_stack)."
        )
    resolution = settings.resolution or profile.native_resolution
    _refuse_upsampling(resolution, profile.native_resolution, crs, settings.max_upsampling)
    slices = group_items(items, plan, settings.groupby)
    group_of = {item.id: index for index, s in enumerate(slices) for item in s.items}

    geobox = odc.stac.output_geobox(
        [],
        crs=crs,
        resolution=resolution,
        anchor=_native_anchor(items, crs, resolution),
        geopolygon=Geometry(aoi, "EPSG:4326"),
    )
    if geobox is None:  # odc-stac returns None only when given neither items nor a polygon
        raise NoOverlap(f"No output grid for the AOI {aoi.bounds}: it has no area.")
    # Measured before any header or pixel is read: a runaway AOI is refused in milliseconds.
    cost = estimate(
        geobox,
        aoi,
        items,
        bands=len(plan.assets),
        with_qa=plan.qa_asset is not None,
        products_bands=len(plan.assets) + 2,  # + NDVI and LST, the default indices
        time_slices=len(slices),
    )
    refuse_runaway(cost, aoi, resolution, settings.max_grid_pixels)

    asset_keys = [*plan.assets.values(), *([plan.qa_asset] if plan.qa_asset else [])]
    reader = RemoteReader(remote or RemoteReadSettings(), href_signer)
    if settings.preflight:
        check_assets(items, asset_keys, aoi, reader)
    pad_rows, pad_cols = tile_aligned_padding(items, plan, geobox, settings.chunk_size)
    raw = odc.stac.load(
        items,
        bands=asset_keys,
        stac_cfg=_metadata_defaults(items, plan, slices),
        groupby=lambda item, parsed, idx: group_of[item.id],
        geobox=_padded(geobox, pad_rows, pad_cols),
        chunks={"x": settings.chunk_size, "y": settings.chunk_size},
        resampling={
            "*": settings.resampling,
            **({plan.qa_asset: "nearest"} if plan.qa_asset else {}),
        },
        driver=RetryingRioDriver(reader),  # signs and retries in each dask task
        fail_on_error=True,
    )
    # odc-stac names the axes of a geographic grid latitude/longitude: every stage uses y/x.
    raw = raw.rename({k: v for k, v in (("latitude", "y"), ("longitude", "x")) if k in raw.dims})
    raw = raw.isel(y=slice(pad_rows, None), x=slice(pad_cols, None))
    if raw.sizes["time"] != len(slices):
        raise RuntimeError(
            f"odc-stac returned {raw.sizes['time']} time slices for {len(slices)} groups"
        )

    has_data = None
    scaling: dict[str, tuple[xr.DataArray, xr.DataArray]] = {}
    shared: dict[str, tuple[float, float]] = {}  # bands every slice encodes alike
    for band, key in plan.assets.items():
        dn = raw[key]
        scale, offset, nodata = _per_time(slices, band, dn.time)
        if plan.profile.band_dtype == encoding.DN_DTYPE and nodata == encoding.DN_NODATA:
            pairs = {(float(s), float(o)) for s, o in zip(scale.values, offset.values, strict=True)}
            if len(pairs) == 1:
                shared[band] = pairs.pop()
        valid = dn != nodata if nodata is not None else xr.ones_like(dn, dtype=bool)
        has_data = valid if has_data is None else has_data & valid
        scaling[band] = scale, offset

    if has_data is None:
        raise ConfigError("No band to load: name at least one in `bands`.")
    if plan.qa_asset:
        qa = raw[plan.qa_asset]
        masked = qa_mask(qa, plan.profile.qa_kind, settings.mask_flags) | (
            qa == plan.profile.qa_nodata
        )
        reasons = mask_reasons(qa, plan.profile.qa_kind, settings.mask_flags)
    else:
        masked = xr.zeros_like(has_data)
        reasons = xr.zeros_like(has_data, dtype="uint16")
    usable = has_data & ~masked
    state = xr.where(has_data, xr.where(masked, MASKED, CLEAR), NO_DATA).astype("uint8")

    out = xr.Dataset(
        {band: _physical(raw[key], usable, *scaling[band]) for band, key in plan.assets.items()}
    )
    out[PIXEL_STATE] = state
    # Lazy: read only by a partition that fails for lack of clear pixels, to name the flag.
    out[MASK_REASONS] = reasons.where(has_data, 0).astype("uint16")
    out = out.assign_coords(
        item_ids=("time", [",".join(i.id for i in s.items) for s in slices]),
        cloud_cover=("time", [_mean_cloud_cover(s.items) for s in slices]),
    )
    out.attrs.update(
        collection=items[0].collection_id or "",
        sensor=plan.profile.name,
        qa_kind=plan.profile.qa_kind,
        mask_flags=",".join(settings.mask_flags) if settings.mask_clouds else "",
        bands=",".join(plan.assets),
        estimate=cost.as_dict(),
    )
    out.attrs[encoding.STACK_ATTR] = encoding.stack_attr(shared)
    stack: xr.Dataset = out
    return stack


def _metadata_defaults(
    items: Sequence[pystac.Item], plan: BandPlan, slices: Sequence[_TimeSlice]
) -> dict[str, Any]:
    """odc-stac defaults for items that do not declare data type / nodata (e.g. PC Sentinel-2)."""
    assets = {
        key: {"data_type": plan.profile.band_dtype, "nodata": slices[0].scalings[band].nodata}
        for band, key in plan.assets.items()
    }
    if plan.qa_asset:
        assets[plan.qa_asset] = {
            "data_type": plan.profile.qa_dtype,
            "nodata": plan.profile.qa_nodata,
        }
    collections = {item.collection_id or "*" for item in items} | {"*"}
    return {collection: {"assets": assets, "warnings": "ignore"} for collection in collections}


def _physical(
    dn: xr.DataArray, usable: xr.DataArray, scale: xr.DataArray, offset: xr.DataArray
) -> xr.DataArray:
    """(time, y, x) float32 ``dn * scale + offset`` per time slice, NaN where not ``usable``:
    one task per block converting in place, where a chain of xarray operations would allocate
    four float arrays per block (the same float32 arithmetic, so the same values)."""
    data = da.map_blocks(
        _physical_block,
        dn.data,
        usable.transpose(*dn.dims).data,
        scales=scale.values.astype(np.float32),
        offsets=offset.values.astype(np.float32),
        dtype=np.float32,
        meta=np.array((), dtype=np.float32),
    )
    physical: xr.DataArray = dn.copy(data=data)
    return physical


def _physical_block(
    dn: np.ndarray,
    usable: np.ndarray,
    *,
    scales: np.ndarray,
    offsets: np.ndarray,
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    assert block_info is not None  # dask passes it to every block
    first, last = block_info[0]["array-location"][0]  # the block's time slices
    out = dn.astype(np.float32)
    out *= scales[first:last, np.newaxis, np.newaxis]
    out += offsets[first:last, np.newaxis, np.newaxis]
    out[~usable] = np.nan
    return out


def _per_time(
    slices: Sequence[_TimeSlice], band: str, time: xr.DataArray
) -> tuple[xr.DataArray, xr.DataArray, float | None]:
    scalings = [s.scalings[band] for s in slices]
    nodatas = {s.nodata for s in scalings}
    if len(nodatas) > 1:
        raise ConfigError(
            f"Band {band!r} declares different nodata values {sorted(nodatas, key=str)} across items."
        )
    scale = xr.DataArray(
        np.array([s.scale for s in scalings], dtype="float32"), coords={"time": time}
    )
    offset = xr.DataArray(
        np.array([s.offset for s in scalings], dtype="float32"), coords={"time": time}
    )
    return scale, offset, nodatas.pop()


def _mean_cloud_cover(items: Sequence[pystac.Item]) -> float:
    values = [v for v in map(cloud_cover, items) if v is not None]
    return float(np.mean(values)) if values else float("nan")
