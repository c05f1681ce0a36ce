"""Cloud-free compositing of a time stack, clipped to the AOI polygon itself, and its GeoTIFF.

The stack comes from :func:`geocluster_dagster.load.load_band_stack`: masked observations are
NaN, and ``pixel_state`` tells clear, masked and missing pixels apart without reading the
spectral bands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import dask.array as da
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import rasterio.features
import xarray as xr
from affine import Affine
from dask.base import compute
from odc.geo.crs import CRS
from odc.geo.geom import Geometry
from shapely.geometry.base import BaseGeometry

from .bands import spectral_order
from .errors import ConfigError, NoClearPixels, NoOverlap
from .fields import described
from .load import CLEAR, MASK_REASONS, NO_DATA, STATE_LAYERS
from .mask import MASKABLE_FLAGS
from .valid_range import OutOfRange, check_policy

CompositeMethod = Literal["median", "first_clear"]


@dataclass(frozen=True)
class CompositeSettings:
    """How overlapping observations become one image."""

    method: CompositeMethod = described(
        "median",
        "'median' of clear observations, or 'first_clear': the clear "
        "observation from the least cloudy scene (real spectra, no mixing of dates).",
    )
    all_touched: bool = described(
        False, "Keep every pixel the AOI polygon touches (default: pixel centre inside)."
    )
    out_of_range: OutOfRange = described(
        "keep",
        "A composite value outside its band's documented valid range (Landsat C2 surface "
        "reflectance DN 7273-43636 and temperature DN 293-61440, USGS LSDS-1619; Sentinel-2 "
        "L2A reflectance 0-1): 'keep' it in the band but compute no index from it (the "
        "index is nodata there, so NDVI stays within -1..1), 'clamp' it to the range, or "
        "'mask' it (nodata in that band; the pixel is then left unlabelled). The share "
        "outside is reported either way (the geotiff's physical_reflectance check).",
    )

    def __post_init__(self) -> None:
        if self.method not in get_args(CompositeMethod):
            raise ConfigError(f"`method` must be 'median' or 'first_clear', got {self.method!r}.")
        check_policy(self.out_of_range)


@dataclass(frozen=True)
class CoverageCounts:
    """Pixel bookkeeping of one partition, within the AOI polygon."""

    aoi_pixels: int
    """Pixels whose centre falls inside the AOI."""
    with_data: int | None
    """... of which at least one scene has data (inside a footprint, not fill); None when not
    counted (see :func:`written_coverage`)."""
    clear: int
    """... of which at least one scene has a clear (unmasked) observation."""
    masked_by: dict[str, float] = field(default_factory=dict)
    """Per mask flag, the share of the AOI's observations with data that it alone masked
    (counted only for a partition refused for having no clear pixel)."""

    @property
    def clear_fraction(self) -> float:
        return self.clear / self.aoi_pixels if self.aoi_pixels else 0.0

    def as_dict(self) -> dict[str, float]:
        counts = {
            "aoi_pixels": self.aoi_pixels,
            "pixels_with_data": self.with_data,
            "clear_pixels": self.clear,
            "clear_fraction": round(self.clear_fraction, 6),
        }
        return {key: value for key, value in counts.items() if value is not None}


def _grid(ds: xr.Dataset) -> tuple[Affine, CRS]:
    return ds.odc.geobox.affine, ds.odc.geobox.crs


def aoi_mask(ds: xr.Dataset, aoi: BaseGeometry, *, all_touched: bool = False) -> xr.DataArray:
    """Lazy boolean (y, x) mask, True inside the AOI polygon (given in lon/lat)."""
    transform, crs = _grid(ds)
    shape_in_grid = Geometry(aoi, "EPSG:4326").to_crs(crs).geom
    chunks = _yx_chunks(ds)

    def block(block_info: dict[Any, Any] | None = None) -> np.ndarray:
        assert block_info is not None  # dask passes it to every block
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        window_transform = transform * Affine.translation(x0, y0)
        mask: np.ndarray = rasterio.features.geometry_mask(
            [shape_in_grid],
            out_shape=(y1 - y0, x1 - x0),
            transform=window_transform,
            invert=True,
            all_touched=all_touched,
        )
        return mask

    mask = da.map_blocks(block, chunks=chunks, dtype=bool, meta=np.array((), dtype=bool))
    return xr.DataArray(mask, dims=("y", "x"), coords={"y": ds.y, "x": ds.x})


def _yx_chunks(ds: xr.Dataset) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (y, x) chunking of the first chunked variable, or one block for numpy data."""
    for var in ds.data_vars.values():
        if var.chunks is not None and "y" in var.dims and "x" in var.dims:
            chunks = dict(zip(var.dims, var.chunks, strict=True))
            return tuple(chunks["y"]), tuple(chunks["x"])
    return (ds.sizes["y"],), (ds.sizes["x"],)


def coverage_counts(stack: xr.Dataset, inside: xr.DataArray) -> CoverageCounts:
    """Count AOI pixels, pixels with data and pixels with a clear view (reads pixel_state only)."""
    state = stack["pixel_state"]
    observed = (state != NO_DATA) & inside
    sums = [
        inside.sum(),
        observed.any("time").sum(),
        ((state == CLEAR).any("time") & inside).sum(),
        observed.sum(),
    ]
    flags = [f for f in MASKABLE_FLAGS if f in stack.attrs.get("mask_flags", "").split(",")]
    if MASK_REASONS in stack:
        reasons = stack[MASK_REASONS]
        # Masked by this flag and no other: what dropping the flag alone would give back.
        sums += [((reasons == 1 << MASKABLE_FLAGS.index(f)) & observed).sum() for f in flags]
    total, with_data, clear, observations, *by_flag = compute(*(s.data for s in sums))
    shares: dict[str, float] = {
        flag: int(count) / int(observations)
        for flag, count in zip(flags, by_flag, strict=False)
        if observations
    }
    return CoverageCounts(int(total), int(with_data), int(clear), masked_by=shares)


def aoi_pixel_count(inside: xr.DataArray, *, where: str) -> int:
    """Pixels of the grid inside the AOI (rasterizes the polygon, reads no image); refuses 0."""
    aoi_pixels = int(inside.sum())
    check_coverage(CoverageCounts(aoi_pixels, None, 0), where=where)
    return aoi_pixels


def written_coverage(
    stack: xr.Dataset, inside: xr.DataArray, aoi_pixels: int, clear: int, *, where: str
) -> CoverageCounts:
    """Coverage of a composite from what writing it counted, refused when nothing is clear.

    ``clear`` is the composite's valid pixels: it is NaN exactly where no scene has a clear
    observation inside the AOI. So the stack is read once, by the writer; only a failed
    partition reads ``pixel_state`` again, to say whether the scenes miss the AOI or cover it
    with clouds.
    """
    if clear == 0:
        check_coverage(coverage_counts(stack, inside), where=where)
    return CoverageCounts(aoi_pixels, None, clear)


def check_coverage(counts: CoverageCounts, *, where: str) -> None:
    """Refuse a partition whose AOI has no data or no clear pixel, saying what to change."""
    if counts.aoi_pixels == 0:
        raise NoOverlap(
            f"The AOI of {where} covers no pixel of the output grid: it is smaller than one pixel "
            "or outside the grid. Enlarge the AOI or lower `resolution`."
        )
    if counts.with_data is None:
        return
    if counts.with_data == 0:
        raise NoOverlap(
            f"No scene of {where} has data inside the AOI polygon ({counts.aoi_pixels} pixels): "
            "the rasters do not overlap it. Check the AOI coordinates (lon/lat order) and the "
            "catalog's footprints."
        )
    if counts.clear == 0:
        worst = max(counts.masked_by, key=lambda flag: counts.masked_by[flag], default=None)
        culprit = (
            f" `{worst}` alone masked {counts.masked_by[worst]:.0%} of the observations with data: "
            f"if that is land cover you want mapped, drop `{worst}` from `mask_flags` "
            "(band_stack config)."
            if worst is not None and counts.masked_by[worst] > 0
            else ""
        )
        raise NoClearPixels(
            f"Every one of the {counts.with_data} AOI pixels with data is masked (cloud, shadow, "
            f"snow or fill) in every scene of {where}.{culprit} Widen the date range, raise "
            "`max_cloud_cover` to find more scenes, or remove flags from `mask_flags`."
        )


def _first_valid(values: np.ndarray) -> np.ndarray:
    """Along the last axis, the first non-NaN value (NaN where there is none)."""
    valid = ~np.isnan(values)
    index = np.argmax(valid, axis=-1)[..., None]
    first = np.take_along_axis(values, index, axis=-1)[..., 0]
    return np.where(valid.any(axis=-1), first, np.nan).astype(values.dtype)


#: Up to this many dates, :func:`nan_median` sorts with whole-image min/max compare-exchanges.
SORTING_NETWORK_MAX_DATES = 8


def _sorted_by_network(dates: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The dates' images sorted pixel by pixel, NaN as +inf, by odd-even transposition.

    A handful of dates at millions of pixels: n rounds of elementwise minimum/maximum over
    whole images beat np.sort, which sorts each pixel's few values on its own.
    """
    rows = [np.where(np.isnan(image), np.inf, image) for image in dates]
    for round_ in range(len(rows)):
        for i in range(round_ % 2, len(rows) - 1, 2):
            rows[i], rows[i + 1] = (
                np.minimum(rows[i], rows[i + 1]),
                np.maximum(rows[i], rows[i + 1]),
            )
    return rows


def median_of_dates(*dates: np.ndarray) -> np.ndarray:
    """Per pixel, the median of the non-NaN values of same-shaped images (NaN where none is).

    np.nanmedian goes through masked arrays for short axes and is an order of magnitude slower
    on composites, which median a handful of dates at millions of pixels. The images are sorted
    pixel by pixel (NaNs last), and the middle of each pixel's finite values is picked by its
    count. Taking the dates as separate images spares stacking them into one array first.
    """
    if len(dates) == 1:
        return np.array(dates[0], copy=True)
    if len(dates) == 2:
        # fmin/fmax skip a NaN, so one clear date gives (x + x) / 2 = x exactly: four passes
        # instead of a dozen, for the commonest month of one Landsat path.
        first, second = dates
        middle = np.fmin(first, second)
        middle += np.fmax(first, second)
        middle *= 0.5
        same_dtype: np.ndarray = middle.astype(first.dtype, copy=False)
        return same_dtype
    count = np.zeros(dates[0].shape, dtype=np.int16)
    for image in dates:
        count += ~np.isnan(image)
    low = np.maximum(count - 1, 0) // 2
    high = np.maximum(count // 2 - (count == 0), 0)
    if len(dates) <= SORTING_NETWORK_MAX_DATES:
        rows = _sorted_by_network(dates)
        lower, upper = np.choose(low, rows), np.choose(high, rows)
    else:
        # np.choose takes at most 64 arrays; a month of many overlapping tiles can exceed it.
        ordered = np.sort(np.stack(dates), axis=0)
        lower = np.take_along_axis(ordered, low[None], axis=0)[0]
        upper = np.take_along_axis(ordered, high[None], axis=0)[0]
    middle = np.where(low == high, lower, (lower + upper) / 2)
    return np.where(count > 0, middle, np.nan).astype(dates[0].dtype)


def nan_median(values: np.ndarray) -> np.ndarray:
    """Along the last axis, the median of the non-NaN values (NaN where there is none)."""
    return median_of_dates(*np.moveaxis(values, -1, 0))


def composite(stack: xr.Dataset, method: CompositeMethod = "median") -> xr.Dataset:
    """One (y, x) image per band from the clear observations of a (time, y, x) stack."""
    bands = spectral_order([str(name) for name in stack.data_vars if name not in STATE_LAYERS])
    if method == "first_clear":
        order = np.lexsort(
            (np.arange(stack.sizes["time"]), np.nan_to_num(stack.cloud_cover.values, nan=101.0))
        )
        stack = stack.isel(time=order)
    out = {}
    for band in bands:
        series = stack[band]
        if method == "median":
            reduced = _median_over_time(series)
        else:
            if series.chunks:
                series = series.chunk({"time": -1})
            reduced = xr.apply_ufunc(
                _first_valid,
                series,
                input_core_dims=[["time"]],
                dask="parallelized",
                output_dtypes=[series.dtype],
            )
        out[band] = reduced.astype("float32")
    result = xr.Dataset(out, attrs=dict(stack.attrs))
    result.attrs["composite"] = method
    return result


def _median_over_time(series: xr.DataArray) -> xr.DataArray:
    """(y, x) median of a (time, y, x) band, each block from the dates' blocks side by side."""
    series = series.transpose("time", "y", "x")
    dates = [series.isel(time=i) for i in range(series.sizes["time"])]
    template = dates[0].drop_vars("time", errors="ignore")
    if series.chunks:
        data = da.map_blocks(
            median_of_dates,
            *(d.data for d in dates),
            dtype=series.dtype,
            meta=np.array((), series.dtype),
        )
    else:
        data = median_of_dates(*(d.values for d in dates))
    median: xr.DataArray = template.copy(data=data)
    return median


def clip(ds: xr.Dataset, inside: xr.DataArray) -> xr.Dataset:
    """NaN outside the AOI polygon (not just its bounding box)."""
    clipped: xr.Dataset = ds.where(inside).astype("float32").assign_attrs(ds.attrs)
    return clipped
