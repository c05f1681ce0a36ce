"""Writing and reading rasters: GeoTIFF/COG written block by block, atomically.

Every writer goes through :func:`geocluster_dagster.storage.atomic_path`, so a failure (bad
data, full disk, killed run) never replaces a good earlier output with a broken one. Dask
arrays are computed a few blocks at a time while they are written: peak memory is a handful of
blocks, whatever the raster size.
"""

from __future__ import annotations

import errno
import functools
import json
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import dask.array as da
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import rasterio
import rasterio.shutil
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from rasterio.enums import Resampling
from rasterio.windows import Window

from .blocks import CHUNK_SIZE, iter_blocks
from .encoding import DN_DTYPE, DN_NODATA, STACK_ATTR, DnEncoding, stack_attr
from .errors import AssetReadError, ConfigError
from .fields import described
from .progress import heartbeat, tracked
from .storage import atomic_path, disk_full, location, remove_quietly
from .valid_range import VALID_RANGE_TAG, RangePolicy

T = TypeVar("T")

#: The tag of a GeoTIFF that holds its bands' :class:`RasterStats` (``write_cog(statistics=True)``).
STATISTICS_TAG = "band_statistics"


@dataclass
class RasterStats:
    """Per-band statistics gathered while writing, over valid (non-nodata) pixels."""

    count: dict[str, int] = field(default_factory=dict)
    minimum: dict[str, float] = field(default_factory=dict)
    maximum: dict[str, float] = field(default_factory=dict)
    total: dict[str, float] = field(default_factory=dict)
    pixels: int = 0
    outside: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per band whose valid range was applied (:mod:`geocluster_dagster.valid_range`): the
    values outside it before they were clamped or masked, and the values checked."""

    def mean(self, band: str) -> float:
        return self.total[band] / self.count[band] if self.count.get(band) else float("nan")

    def add(self, names: Sequence[str], summary: np.ndarray, pixels: int) -> None:
        """Merge a :func:`block_summary` of a block of ``pixels`` pixels (with a fifth column,
        the values found outside their valid range before they were clamped or masked)."""
        self.pixels += pixels
        for name, row in zip(names, summary, strict=True):
            n, total, low, high = row[:4]
            if len(row) > 5 and row[5]:
                before = self.outside.get(name, (0, 0))
                self.outside[name] = (before[0] + int(row[4]), before[1] + int(row[5]))
            self.count[name] = self.count.get(name, 0) + int(n)
            if n:
                self.total[name] = self.total.get(name, 0.0) + float(total)
                self.minimum[name] = min(self.minimum.get(name, np.inf), float(low))
                self.maximum[name] = max(self.maximum.get(name, -np.inf), float(high))

    def merge(self, other: RasterStats) -> None:
        """Take in the statistics of other bands of the same grid (another file of a product)."""
        if self.pixels and other.pixels != self.pixels:
            raise ValueError(f"grids differ: {self.pixels} and {other.pixels} pixels")
        self.pixels = other.pixels
        self.count.update(other.count)
        self.minimum.update(other.minimum)
        self.maximum.update(other.maximum)
        self.total.update(other.total)
        self.outside.update(other.outside)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "valid_pixels": self.count[name],
                # Of the whole grid (the AOI's bounding box), not of the AOI: readable.DENOMINATORS.
                "valid_share_of_grid": round(self.count[name] / self.pixels, 6)
                if self.pixels
                else 0.0,
                "min": self.minimum.get(name, float("nan")),
                "max": self.maximum.get(name, float("nan")),
                "mean": self.mean(name),
                **self._outside(name),
            }
            for name in self.count
        }

    def to_tag(self) -> str:
        """These statistics as a GeoTIFF tag (:data:`STATISTICS_TAG`), so that a product made
        of the file without reading its pixels (a link to it) can report them."""
        return json.dumps(
            {
                "pixels": self.pixels,
                "bands": {
                    name: [
                        self.count[name],
                        self.total.get(name, 0.0),
                        self.minimum.get(name),
                        self.maximum.get(name),
                    ]
                    for name in self.count
                },
                "outside": {name: list(pair) for name, pair in self.outside.items()},
            }
        )

    @classmethod
    def from_tag(cls, value: object) -> RasterStats | None:
        """The statistics :meth:`to_tag` wrote, or None when ``value`` is not such a tag."""
        try:
            data = json.loads(str(value))
            stats = cls(pixels=int(data["pixels"]))
            for name, (count, total, low, high) in data["bands"].items():
                stats.count[name] = int(count)
                if count:
                    stats.total[name] = float(total)
                    stats.minimum[name], stats.maximum[name] = float(low), float(high)
            stats.outside = {name: (int(o), int(c)) for name, (o, c) in data["outside"].items()}
        except (ValueError, KeyError, TypeError):
            return None
        return stats

    def _outside(self, name: str) -> dict[str, float]:
        outside, checked = self.outside.get(name, (0, 0))
        return {"outside_valid_range_share": round(outside / checked, 6)} if checked else {}


def block_summary(block: np.ndarray, nodata: float | None) -> np.ndarray:
    """(band, 4) float64: valid (non-nodata) pixel count, sum, minimum and maximum per band."""
    summary = np.zeros((block.shape[0], 4))
    for row, values in zip(summary, block, strict=True):
        valid = (
            values[~np.isnan(values)]
            if nodata is None or np.isnan(nodata)
            else values[values != nodata]
        )
        row[0] = valid.size
        if valid.size:
            row[1:] = valid.sum(dtype="float64"), valid.min(), valid.max()
    return summary


def _within_range(block: np.ndarray, valid: RangePolicy | None) -> tuple[np.ndarray, np.ndarray]:
    if valid is None:
        return block, np.zeros((block.shape[0], 2))
    return valid.apply(block)


def _with_summary(
    block: np.ndarray, nodata: float | None, valid: RangePolicy | None = None
) -> tuple[np.ndarray, np.ndarray]:
    block, outside = _within_range(block, valid)
    return block, np.column_stack([block_summary(block, nodata), outside])


def _encoded_with_summary(
    block: np.ndarray, dn: DnEncoding, valid: RangePolicy | None = None
) -> tuple[np.ndarray, np.ndarray]:
    block, outside = _within_range(block, valid)
    encoded = dn.encode(block)
    summary = dn.physical_summary(block_summary(encoded, DN_NODATA))
    return encoded, np.column_stack([summary, outside])


def _as_band_array(
    ds: xr.Dataset | xr.DataArray, bands: Sequence[str] | None
) -> tuple[list[str], da.Array]:
    if isinstance(ds, xr.DataArray):
        names = [str(ds.name or "band_1")]
        arrays = [ds]
    else:
        names = list(bands) if bands else [str(name) for name in ds.data_vars]
        arrays = [ds[name] for name in names]
    stacked = da.stack([da.asarray(a.data) for a in arrays])
    return names, stacked.rechunk({0: -1})


#: The tag of a COG that records the :class:`CogSettings` it was written with.
COG_SETTINGS_TAG = "cog_settings"

#: The codecs that take a compression level, and the GTiff creation option that sets it.
GTIFF_LEVEL_OPTION = {"deflate": "zlevel", "zstd": "zstd_level"}

Compression = Literal["deflate", "zstd", "lzw"]


@dataclass(frozen=True)
class CogSettings:
    """How a deliverable Cloud-Optimized GeoTIFF is compressed."""

    compress: Compression = described(
        "zstd",
        "COG compression: zstd (default; with level 1, a scene's bands write 1.7x and decode "
        "1.5x faster than deflate level 1, for 1% more bytes; GDAL >= 2.3 built with zstd, as "
        "rasterio's wheels, conda, Debian/Ubuntu and QGIS's installers are), deflate (for "
        "older or minimal GDAL builds) or lzw.",
    )
    compress_level: int | None = described(
        1,
        "Compression level (zstd 1-22, deflate 1-12; ignored by lzw); None = GDAL's default "
        "(zstd 9, deflate 6: 3-16% smaller, 2-5x slower to write).",
    )

    def as_tag(self) -> str:
        """These settings as the :data:`COG_SETTINGS_TAG` tag of a COG written with them."""
        return json.dumps({"compress": self.compress, "compress_level": self.compress_level})

    @classmethod
    def of_file(cls, tags: Mapping[str, object]) -> CogSettings | None:
        """The settings a COG's tags say it was written with (None: it does not say)."""
        try:
            written = json.loads(str(tags[COG_SETTINGS_TAG]))
            return cls(written["compress"], written["compress_level"])
        except (KeyError, ValueError, TypeError, ConfigError):
            return None

    def __post_init__(self) -> None:
        levels = {"deflate": (1, 12), "zstd": (1, 22)}
        if self.compress not in get_args(Compression):
            raise ConfigError(
                f"compress={self.compress!r} is not supported: use one of {get_args(Compression)}."
            )
        low, high = levels.get(self.compress, (None, None))
        if self.compress_level is not None and low is not None and high is not None:
            if not low <= self.compress_level <= high:
                raise ConfigError(
                    f"compress_level={self.compress_level} is invalid for {self.compress}: use "
                    f"{low}..{high}, or None for GDAL's default."
                )


#: The compression every COG writer uses unless told otherwise (one source: CogSettings).
DEFAULT_COG = CogSettings()


def write_cog(
    ds: xr.Dataset | xr.DataArray,
    target: Path | str,
    *,
    bands: Sequence[str] | None = None,
    cog: bool = False,
    nodata: float | None = None,
    tags: Mapping[str, object] | None = None,
    band_tags: Mapping[str, Mapping[str, str]] | None = None,
    compress: str = DEFAULT_COG.compress,
    compress_level: int | None = DEFAULT_COG.compress_level,
    blocksize: int = 512,
    overview_resampling: str = "average",
    blocks_in_flight: int = 4,
    validate: Callable[[RasterStats], None] | None = None,
    blocks: Iterable[tuple[tuple[slice, ...], np.ndarray]] | None = None,
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
    units: Mapping[str, str] | None = None,
    task: str | None = None,
    encoding: DnEncoding | None = None,
    valid: RangePolicy | None = None,
    statistics: bool = False,
) -> RasterStats:
    """Write (band, y, x) to a tiled GeoTIFF, or a Cloud-Optimized GeoTIFF with ``cog=True``.

    Band names go into the band descriptions, ``tags`` into the dataset metadata (values that
    are not strings are JSON-encoded). Float rasters default to NaN nodata. ``compress`` is a
    GDAL codec (deflate, zstd, lzw, ...) at ``compress_level`` (None = GDAL's default level).

    ``validate(stats)`` runs once every block is written and before the file replaces
    ``target``: raising there leaves an earlier output in place.

    ``encoding`` stores float bands as uint16 DN with a per-band GDAL scale/offset
    (:mod:`geocluster_dagster.encoding`); the statistics stay in physical units.

    ``valid`` clamps or masks each band's values outside its documented valid range before
    they are encoded and summarised; the statistics count them (``outside``) and the file's
    ``valid_range`` tag records the ranges, the policy and the counts.

    ``statistics`` records the returned statistics in the file's :data:`STATISTICS_TAG` tag.

    ``colormap`` (value -> RGBA) is the colour table of a single-band class map; ``units``
    (band name -> unit) are set as GDAL band units. ``task`` names the write in the progress
    updates (default: "writing <file name>").

    ``blocks`` are the (band, y, x) raster's ``(index, block)`` pieces computed elsewhere (e.g.
    :class:`geocluster_dagster.cluster.LabelledBlocks`, which summarises what it yields); ``ds``
    then only gives the grid, band names and dtype.

    A COG needs its overviews before the full-resolution tiles, so GDAL's COG driver copies
    from a finished raster. That intermediate is written uncompressed: every pixel is then
    compressed once, by the COG driver, instead of twice.
    """
    target = location(target)
    task = task or f"writing {target.name}"
    names, array = _as_band_array(ds, bands)
    dtype = np.dtype(array.dtype)
    if valid is not None and blocks is not None:
        raise ValueError("valid ranges apply to the blocks computed here, not to given blocks")
    if encoding is not None:
        if blocks is not None:
            raise ValueError("encoding applies to the blocks computed here, not to given blocks")
        dtype, nodata = DN_DTYPE, DN_NODATA
    if nodata is None and np.issubdtype(dtype, np.floating):
        nodata = float("nan")
    geobox = ds.odc.geobox
    profile = {
        "driver": "GTiff",
        "width": array.shape[2],
        "height": array.shape[1],
        "count": len(names),
        "dtype": dtype.name,
        "crs": geobox.crs.to_wkt(),
        "transform": geobox.affine,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",
    }
    level_option = GTIFF_LEVEL_OPTION.get(compress.lower())
    if cog:
        # Band-sequential, so that GDAL builds each band's overviews from that band alone.
        profile["interleave"] = "band"
    else:
        profile["compress"] = compress
        profile["predictor"] = 3 if np.issubdtype(dtype, np.floating) else 2
        if compress_level is not None and level_option:
            profile[level_option] = compress_level
    stats = RasterStats()
    with atomic_path(target) as final_tmp:
        tiled_tmp = final_tmp.with_name(final_tmp.name + ".tiled.tif") if cog else final_tmp
        try:
            with rasterio.open(tiled_tmp, "w", **profile) as dst:
                if colormap is not None:
                    dst.write_colormap(1, dict(colormap))
                if encoding is not None:
                    dst.scales, dst.offsets = encoding.scales, encoding.offsets
                for index, name in enumerate(names, start=1):
                    dst.set_band_description(index, name)
                    if units and name in units:
                        dst.set_band_unit(index, units[name])
                    if band_tags and name in band_tags:
                        dst.update_tags(index, **{k: str(v) for k, v in band_tags[name].items()})
                if tags:
                    dst.update_tags(
                        **{
                            k: v if isinstance(v, str) else json.dumps(v, default=str)
                            for k, v in tags.items()
                        }
                    )
                last = None
                # The workers summarise the blocks they compute; given blocks are summarised here.
                pieces = (
                    ((index, (block, block_summary(block, nodata))) for index, block in blocks)
                    if blocks is not None
                    else iter_blocks(
                        array,
                        in_flight=blocks_in_flight,
                        apply=functools.partial(_with_summary, nodata=nodata, valid=valid)
                        if encoding is None
                        else functools.partial(_encoded_with_summary, dn=encoding, valid=valid),
                    )
                )
                n_blocks = int(np.prod(array.numblocks[1:]))
                for window, (block, summary) in tracked(_windows(pieces), task, total=n_blocks):
                    stats.add(names, summary, block.shape[1] * block.shape[2])
                    dst.write(block, window=window)
                    last = (window, block)
                if valid is not None:
                    dst.update_tags(**{VALID_RANGE_TAG: valid.tag(names, stats.outside)})
                if statistics:
                    dst.update_tags(**{STATISTICS_TAG: stats.to_tag()})
            _verify(tiled_tmp, last)
            if validate is not None:
                validate(stats)
            if cog:
                with heartbeat(f"{task}: overviews"):
                    build_overviews(tiled_tmp, blocksize, overview_resampling)
                with heartbeat(f"{task}: compressing into the COG layout"):
                    copy_to_cog(tiled_tmp, final_tmp, compress, compress_level, blocksize)
                _verify(final_tmp, last)
        except OSError as err:
            # Judge the disk while the temporary files still occupy it.
            if disk_full(target):
                raise OSError(
                    errno.ENOSPC, f"No space left on device while writing {target}"
                ) from err
            raise
        finally:
            if cog:
                remove_quietly(tiled_tmp)
    return stats


class BlockSink:
    """A single-band COG written from blocks another raster's pass computes (e.g. the
    confidence layer beside the cluster map, from the same distances): ``write(index, block)``
    takes (1, y, x) blocks in any order into an uncompressed tiled intermediate, and
    :meth:`close` builds its overviews and compresses it into ``target`` once, verified.

    ``colormap`` (value -> RGBA) is the colour table of a class map. ``cog=False`` leaves
    ``target`` the tiled, uncompressed intermediate (for another pass to read, not to publish).

    Used as a context manager; on an error the intermediate is removed and ``target`` is not
    written. ``target`` should sit in a folder published whole (its atomicity is the folder's).
    """

    def __init__(
        self,
        grid: xr.DataArray,
        target: Path,
        *,
        dtype: str,
        nodata: float,
        description: str,
        unit: str = "",
        tags: Mapping[str, str] | None = None,
        compress: str = DEFAULT_COG.compress,
        compress_level: int | None = DEFAULT_COG.compress_level,
        blocksize: int = 512,
        overview_resampling: str = "average",
        colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
        cog: bool = True,
    ) -> None:
        self.target = target
        self._cog = cog
        self._tiled = target.with_name(target.name + ".tiled.tif")
        self._options = (compress, compress_level, blocksize, overview_resampling)
        self._last: tuple[Window, np.ndarray] | None = None
        geobox = grid.odc.geobox
        self._dst = rasterio.open(
            self._tiled,
            "w",
            driver="GTiff",
            width=geobox.shape.x,
            height=geobox.shape.y,
            count=1,
            dtype=dtype,
            crs=geobox.crs.to_wkt(),
            transform=geobox.affine,
            nodata=nodata,
            tiled=True,
            blockxsize=blocksize,
            blockysize=blocksize,
            BIGTIFF="IF_SAFER",
        )
        self._dst.set_band_description(1, description)
        if colormap is not None:
            self._dst.write_colormap(1, dict(colormap))
        if unit:
            self._dst.set_band_unit(1, unit)
        if tags:
            self._dst.update_tags(**tags)

    def write(self, index: tuple[slice, ...], block: np.ndarray) -> None:
        rows, cols = index[-2], index[-1]
        window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        self._dst.write(block, window=window)
        self._last = (window, block)

    def close(self) -> None:
        self._dst.close()
        _verify(self._tiled, self._last)
        if not self._cog:  # an intermediate another pass reads: tiled, uncompressed
            self._tiled.rename(self.target)
            return
        compress, level, blocksize, resampling = self._options
        build_overviews(self._tiled, blocksize, resampling)
        copy_to_cog(self._tiled, self.target, compress, level, blocksize)
        _verify(self.target, self._last)
        remove_quietly(self._tiled)

    def __enter__(self) -> BlockSink:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if error is None:
            self.close()
        else:
            self._dst.close()
            remove_quietly(self._tiled)


#: GDAL block cache (MB) while building overviews and the COG: bounded, so that the COG of a
#: whole scene does not take GDAL's default 5% of RAM. The intermediate is band-sequential,
#: so each band's overviews come from that band's blocks alone: within this cache, a
#: pixel-interleaved one would make GDAL decode every tile once per band.
COG_CACHE_MB = 256


def copy_to_cog(
    source: Path, target: Path, compress: str, compress_level: int | None, blocksize: int
) -> None:
    """GDAL's COG driver: ``source``'s pixels and overviews, compressed, in the COG layout."""
    takes_level = compress.lower() in GTIFF_LEVEL_OPTION and compress_level is not None
    with rasterio.Env(GDAL_CACHEMAX=COG_CACHE_MB * 2**20):
        rasterio.shutil.copy(
            source,
            target,
            driver="COG",
            overviews="FORCE_USE_EXISTING",
            compress=compress,
            predictor="YES",
            **({"level": compress_level} if takes_level else {}),
            blocksize=blocksize,
            BIGTIFF="IF_SAFER",
            NUM_THREADS="ALL_CPUS",
        )


def overview_factors(width: int, height: int, blocksize: int) -> list[int]:
    """2, 4, 8, ... until the smallest overview fits in one block, as GDAL's COG driver does."""
    factors, factor = [], 2
    while -(-max(width, height) // (factor // 2)) > blocksize:
        factors.append(factor)
        factor *= 2
    return factors


def build_overviews(path: Path, blocksize: int, resampling: str) -> None:
    """Overviews inside the uncompressed intermediate, for the COG driver to copy as they are."""
    # GDAL computes overview blocks on all cores only when asked (GDAL_NUM_THREADS).
    with (
        rasterio.Env(GDAL_CACHEMAX=COG_CACHE_MB * 2**20, GDAL_NUM_THREADS="ALL_CPUS"),
        rasterio.open(path, "r+") as dst,
    ):
        factors = overview_factors(dst.width, dst.height, blocksize)
        if factors:
            dst.build_overviews(factors, Resampling[resampling])


def _verify(path: Path, last: tuple[Window, np.ndarray] | None) -> None:
    """Read the last-written block back: GDAL can fail a write (e.g. a full disk) without raising."""
    if last is None:
        return
    window, block = last
    try:
        with rasterio.open(path) as src:
            back = src.read(window=window)
    except rasterio.errors.RasterioIOError as err:
        raise OSError(f"{path} cannot be read back after writing: {err}") from err
    if not np.array_equal(back, block, equal_nan=np.issubdtype(block.dtype, np.floating)):
        raise OSError(f"{path} does not hold what was written (last block differs): write failed")


def _windows(pieces: Iterable[tuple[tuple[slice, ...], T]]) -> Iterator[tuple[Window, T]]:
    """(band, y, x) block indices as rasterio windows."""
    for (_, rows, cols), piece in pieces:
        yield Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start), piece


def open_cog(path: Path | str, *, chunks: int = CHUNK_SIZE) -> xr.Dataset:
    """A GeoTIFF as a lazy Dataset, one float variable per band named by its description,
    in physical units (GDAL's per-band scale/offset applied, as the loader applies the inputs')."""
    path = location(path)
    try:
        with rasterio.open(str(path)) as src:
            names = [d or f"band_{i}" for i, d in enumerate(src.descriptions, start=1)]
            tags, nodata, dtype = src.tags(), src.nodata, np.dtype(src.dtypes[0])
            scaling = list(zip(src.scales, src.offsets, strict=True))
        # Every band of a window in one read: GDAL decompresses a pixel-interleaved tile once
        # for all its bands, where one read per band would decompress it once per band.
        arr = _open_lazily(str(path), chunks={"band": -1, "y": chunks, "x": chunks}, masked=False)
    except rasterio.errors.RasterioIOError as err:
        raise AssetReadError(f"Cannot open {path} as a GeoTIFF: {err}") from err
    # One task per window turns every band into physical float32: chained xarray operations
    # would hold four float copies of a window at once (astype, the nodata test, where, scale).
    arr = arr.copy(
        data=arr.data.map_blocks(
            _physical_block,
            scaling=tuple(scaling),
            nodata=None if nodata is None or np.isnan(nodata) else nodata,
            dtype=np.float32,
        )
    )
    ds = xr.Dataset({name: arr.isel(band=i, drop=True) for i, name in enumerate(names)})
    ds.attrs.update(tags)
    ds.attrs["source_path"] = str(path)  # provenance for what is made of it downstream
    if dtype == DN_DTYPE and nodata == DN_NODATA:
        # Stored as DN: a product made of these bands can store them so again.
        ds.attrs[STACK_ATTR] = stack_attr(
            {name: pair for name, pair in zip(names, scaling, strict=True) if pair != (1, 0)}
        )
    return ds


def _physical_block(
    block: np.ndarray, *, scaling: tuple[tuple[float, float], ...], nodata: float | None
) -> np.ndarray:
    """A (band, y, x) window as float32: ``DN * scale + offset`` per band, the loader's own
    arithmetic (a first-clear value comes back bit for bit as it was loaded), NaN at nodata."""
    physical = block.astype(np.float32)  # a copy, also of a float32 window: it is changed below
    for band, (scale, offset) in zip(physical, scaling, strict=True):
        if (scale, offset) != (1, 0):
            band *= np.float32(scale)
            band += np.float32(offset)
    if nodata is not None:
        physical[block == nodata] = np.nan
    return physical


def open_single_band(path: Path | str, *, chunks: int = CHUNK_SIZE) -> xr.DataArray:
    """A one-band GeoTIFF (e.g. an integer class map) as a lazy DataArray in its own dtype."""
    try:
        arr = _open_lazily(str(path), chunks={"band": 1, "y": chunks, "x": chunks})
    except rasterio.errors.RasterioIOError as err:
        raise AssetReadError(f"Cannot open {path} as a GeoTIFF: {err}") from err
    band: xr.DataArray = arr.isel(band=0, drop=True)
    return band


def _open_lazily(path: Path | str, **options: Any) -> xr.DataArray:
    """rioxarray's dask-backed (band, y, x) array of a GeoTIFF (one file is one DataArray)."""
    with warnings.catch_warnings():
        # Per-band scale/offset (an encoded mosaic) is read by open_cog from the file;
        # rioxarray's note that it cannot make them one attribute is not the user's concern.
        warnings.filterwarnings("ignore", r"(Offsets|Scales) differ across bands")
        arr = rioxarray.open_rasterio(path, lock=False, **options)
    if not isinstance(arr, xr.DataArray):
        raise AssetReadError(f"{path} holds several subdatasets; expected one GeoTIFF raster.")
    return arr
