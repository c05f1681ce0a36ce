"""The geotiff product of one partition: a folder of two Cloud-Optimized GeoTIFFs.

``bands.tif`` holds the spectral bands in the inputs' own uint16 DN with GDAL's per-band
scale/offset and nodata 0 (:mod:`geocluster_dagster.encoding`), or float32 with NaN nodata when
the inputs share no encoding; ``indices.tif`` holds the spectral indices in float32, NaN nodata
(absent when no index is asked for). A GeoTIFF has one data type for all its bands, and a
float32 copy of DN-precision reflectance costs twice the bytes and compresses far worse: at
3840² px, 8 bands and 2 indices, writing the COGs took 8.6 s as one float32 file and 3.7 + 2.5 s
as the two, decoding them 3.1 s and 1.4 + 0.7 s.

Both files carry the partition's provenance tags, so either opened alone (in QGIS, say) says
what it is. The folder is swapped in whole (:func:`geocluster_dagster.storage.atomic_path`): a
run killed between the two files never leaves new bands beside old indices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from .bands import band_unit
from .blocks import CHUNK_SIZE
from .encoding import STACK_ATTR, DnEncoding
from .errors import AssetReadError
from .export import CogSettings, RasterStats, open_geotiff, write_geotiff
from .storage import atomic_path

BANDS = "bands.tif"
INDICES = "indices.tif"


@dataclass(frozen=True)
class ImageFacts:
    """What writing the geotiff product measured, and which file holds which variables."""

    stats: RasterStats
    """Per-variable statistics of the written pixels, in physical units."""
    files: dict[str, list[str]]
    """File name in the folder -> its bands, in order."""
    encoded: bool
    """Whether the spectral bands are stored as uint16 DN with scale/offset."""


def write_image(
    image: xr.Dataset,
    folder: Path,
    indices: list[str],
    settings: CogSettings | None = None,
    *,
    tags: Mapping[str, object] | None = None,
) -> ImageFacts:
    """Write ``image``'s spectral bands and its ``indices`` (variable names) into ``folder``,
    compressed as ``settings`` say (default: :class:`CogSettings`'s defaults).

    The bands' DN encoding is the one the image's ``attrs`` record (:data:`STACK_ATTR`, set by
    the loader and by :func:`geocluster_dagster.export.open_geotiff` of an encoded mosaic)."""
    settings = settings or CogSettings()
    bands = [str(name) for name in image.data_vars if name not in indices]
    encoding = DnEncoding.for_bands(image.attrs, bands)
    files = {BANDS: bands, **({INDICES: list(indices)} if indices else {})}
    stats = RasterStats()
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for name, names in files.items():
            written = write_geotiff(
                image,
                tmp / name,
                bands=names,
                cog=True,
                tags=tags,
                compress=settings.compress,
                compress_level=settings.compress_level,
                units={band: band_unit(band) for band in names},
                task=f"writing the geotiff's {name.removesuffix('.tif')}",
                encoding=encoding if name == BANDS else None,
            )
            stats.merge(written)
    return ImageFacts(stats=stats, files=files, encoded=encoding is not None)


def open_image(folder: Path, *, chunks: int = CHUNK_SIZE) -> xr.Dataset:
    """The geotiff product as one lazy Dataset: the bands, then the indices, in physical units.

    Its attrs are the bands file's tags; ``source_path`` names the bands file (the colour
    composites are read from it) and :data:`STACK_ATTR` the bands' DN encoding, if any."""
    bands_path = folder / BANDS
    if not bands_path.is_file():
        raise AssetReadError(
            f"{folder} does not hold {BANDS} (a geotiff written by an earlier version is one "
            f"file, {folder.name}.tif): materialize geotiff for this partition again."
        )
    parts = [open_geotiff(bands_path, chunks=chunks)]
    if (folder / INDICES).is_file():
        parts.append(open_geotiff(folder / INDICES, chunks=chunks))
    # Both files are written on one grid: "exact" refuses two that are not.
    image = xr.merge(parts, join="exact", compat="override", combine_attrs="override")
    image.attrs = dict(parts[0].attrs)
    return image


def provenance(attrs: Mapping[str, object]) -> dict[str, object]:
    """The tags of an opened raster worth carrying into a product made of it: not where it
    was read from, and not its encoding (the writer sets that from the bands it writes)."""
    return {k: v for k, v in attrs.items() if k not in ("source_path", STACK_ATTR)}
