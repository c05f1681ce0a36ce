"""The geotiff product of one partition: a folder of two Cloud-Optimized GeoTIFFs.

``bands.tif`` holds the spectral bands in the inputs' own uint16 DN with GDAL's per-band
scale/offset and nodata 0 (:mod:`geocluster_dagster.encoding`), or float32 with NaN nodata when
the inputs share no encoding; ``indices.tif`` holds the spectral indices in float32, NaN nodata
(absent when no index is asked for). A GeoTIFF has one data type for all its bands, and a
float32 copy of DN-precision reflectance costs twice the bytes and compresses far worse: two
files write and decode faster than one float32 file (measured in benchmarks/README.md).

Both files carry the partition's provenance tags, so either opened alone (in QGIS, say) says
what it is. The folder is swapped in whole (:func:`geocluster_dagster.storage.atomic_path`): a
run killed between the two files never leaves new bands beside old indices.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from .. import __version__
from ..bands import band_unit
from ..blocks import CHUNK_SIZE
from ..encoding import STACK_ATTR, DnEncoding
from ..errors import AssetReadError
from ..export import CogSettings, RasterStats, open_cog, write_cog
from ..indices import IndexSettings, add_indices
from ..quality import Judgement, judge_cog
from ..storage import atomic_path, published
from ..valid_range import VALID_RANGE_TAG, read_tag, within
from .described import DENOMINATORS, Detail, Facts, FilePath, Json, Measure, rounded

#: The version of what this product's writer makes: raise it when a release changes its
#: files or numbers, so that Dagster shows the partitions made before as stale (code_version).
VERSION = "2"  # 2: no index from a value outside its band's valid range

BANDS = "bands.tif"
INDICES = "indices.tif"


@dataclass(frozen=True)
class GeotiffFacts(Facts):
    """What writing the geotiff product measured, and which file holds which variables."""

    stats: RasterStats
    """Per-variable statistics of the written pixels, in physical units."""
    files: dict[str, list[str]]
    """File name in the folder -> its bands, in order."""
    encoded: bool
    """Whether the spectral bands are stored as uint16 DN with scale/offset."""
    folder: Path
    file_bytes: dict[str, int] = field(default_factory=dict)
    """File name -> its size on disk, with overviews."""
    indices: list[str] = field(default_factory=list)
    """The indices asked for, by name."""
    valid_range: dict[str, dict[str, object]] = field(default_factory=dict)
    """The mosaic's ``valid_range`` tag: per band, its documented range, the policy and the
    values that were outside it (:mod:`geocluster_dagster.valid_range`)."""

    def paths(self) -> dict[str, Path]:
        return {name: self.folder / name for name in self.files}

    def measures(self) -> list[Measure]:
        measures = [
            Measure(
                "band_count",
                sum(map(len, self.files.values())),
                "bands",
                "spectral bands plus indices",
            ),
            Measure(
                "file_mb",
                sum(self.file_bytes.values()) / 1e6,
                "MB",
                "the COGs on disk, with overviews",
            ),
        ]
        for band, values in self.stats.as_dict().items():
            unit = band_unit(band)
            measures.append(
                Measure(
                    f"{band}_mean",
                    values["mean"],
                    unit,
                    f"mean over valid pixels (range {values['min']:.4g} .. {values['max']:.4g} "
                    f"{unit}); valid: {values['valid_share_of_grid']:.4g} of the "
                    f"{DENOMINATORS['grid']}",
                    trend=False,
                )
            )
        return measures

    def details(self) -> dict[str, Detail]:
        storage = f"{BANDS}: " + (
            "uint16 DN with scale/offset, nodata 0" if self.encoded else "float32, NaN nodata"
        )
        if INDICES in self.files:
            storage += f"; {INDICES}: float32, NaN nodata"
        return {
            "bands": ", ".join(self.files[BANDS]),
            "indices": ", ".join(self.indices) or "none",
            "storage": storage,
            **{
                f"path_{name.removesuffix('.tif')}": FilePath(path)
                for name, path in self.paths().items()
            },
            "band_statistics": Json(rounded(self.stats.as_dict())),
        }

    def judge(self) -> list[Judgement]:
        files = self.paths()
        return judge_cog(
            {files[name]: bands for name, bands in self.files.items()},
            self.stats.as_dict(),
            self.valid_range,
        )


def write_geotiff(
    mosaic: xr.Dataset,
    folder: Path,
    indices: IndexSettings | None = None,
    cog: CogSettings | None = None,
    *,
    aoi_id: str,
    config: Mapping[str, Any] | None = None,
) -> GeotiffFacts:
    """Add the spectral indices ``indices`` asks for to ``mosaic`` (the opened mosaic product)
    and write both into ``folder``, tagged with the mosaic's provenance, the AOI, this package's
    version and the run's ``config`` of this step."""
    names = (indices or IndexSettings()).names_for(mosaic)
    valid_range = read_tag(mosaic.attrs.get(VALID_RANGE_TAG))
    # Indices only from valid reflectance: where an input is outside its documented range
    # (kept as delivered), the index is nodata rather than NDVI = +85.
    inputs = mosaic.assign(
        {band: within(mosaic[band], valid_range[band]) for band in valid_range if band in mosaic}
    )
    added_indices = add_indices(inputs, names)
    added = [str(name) for name in added_indices.data_vars if name not in mosaic.data_vars]
    image = mosaic.assign({name: added_indices[name] for name in added})
    tags = provenance(mosaic.attrs)
    tags.update(
        {
            "aoi_id": aoi_id,
            "package": f"geocluster_dagster {__version__}",
            "indices": ",".join(n.lower() for n in names),
            "config": json.dumps(dict(config or {})),
        }
    )
    facts = write_image(image, folder, added, cog, tags=tags)
    return dataclasses.replace(facts, indices=list(names), valid_range=valid_range)


def write_image(
    image: xr.Dataset,
    folder: Path,
    indices: list[str],
    settings: CogSettings | None = None,
    *,
    tags: Mapping[str, object] | None = None,
) -> GeotiffFacts:
    """Write ``image``'s spectral bands and its ``indices`` (variable names) into ``folder``,
    compressed as ``settings`` say (default: :class:`CogSettings`'s defaults).

    The bands' DN encoding is the one the image's ``attrs`` record (:data:`STACK_ATTR`, set by
    the loader and by :func:`geocluster_dagster.export.open_cog` of an encoded mosaic)."""
    settings = settings or CogSettings()
    bands = [str(name) for name in image.data_vars if name not in indices]
    encoding = DnEncoding.for_bands(image.attrs, bands)
    files = {BANDS: bands, **({INDICES: list(indices)} if indices else {})}
    stats = RasterStats()
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for name, names in files.items():
            written = write_cog(
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
        sizes = {name: (tmp / name).stat().st_size for name in files}
    return GeotiffFacts(
        stats=stats,
        files=files,
        encoded=encoding is not None,
        folder=published(folder),
        file_bytes=sizes,
    )


def open_geotiff(folder: Path, *, chunks: int = CHUNK_SIZE) -> xr.Dataset:
    """The geotiff product as one lazy Dataset: the bands, then the indices, in physical units.

    Its attrs are the bands file's tags; ``source_path`` names the bands file (the colour
    composites are read from it) and :data:`STACK_ATTR` the bands' DN encoding, if any."""
    bands_path = folder / BANDS
    if not bands_path.is_file():
        raise AssetReadError(
            f"{folder} does not hold {BANDS} (a geotiff written by an earlier version is one "
            f"file, {folder.name}.tif): materialize geotiff for this partition again."
        )
    parts = [open_cog(bands_path, chunks=chunks)]
    if (folder / INDICES).is_file():
        parts.append(open_cog(folder / INDICES, chunks=chunks))
    # Both files are written on one grid: "exact" refuses two that are not.
    image = xr.merge(parts, join="exact", compat="override", combine_attrs="override")
    image.attrs = dict(parts[0].attrs)
    return image


def provenance(attrs: Mapping[str, object]) -> dict[str, object]:
    """The tags of an opened raster worth carrying into a product made of it: not where it
    was read from, and not its encoding (the writer sets that from the bands it writes)."""
    return {k: v for k, v in attrs.items() if k not in ("source_path", STACK_ATTR)}
