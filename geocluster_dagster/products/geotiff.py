"""The geotiff product of one partition: a folder of two Cloud-Optimized GeoTIFFs.

``bands.tif`` holds the spectral bands in the inputs' own uint16 DN with GDAL's per-band
scale/offset and nodata 0 (:mod:`geocluster_dagster.encoding`), or float32 with NaN nodata when
the inputs share no encoding; ``indices.tif`` holds the spectral indices in float32, NaN nodata
(absent when no index is asked for). A GeoTIFF has one data type for all its bands, and a
float32 copy of DN-precision reflectance costs twice the bytes and compresses far worse: two
files write and decode faster than one float32 file (measured in benchmarks/README.md).

``bands.tif`` *is* the mosaic's COG: a hard link to it on a disk (no byte copied; the mosaic is
replaced by a rename, so a remade mosaic never changes the bands of a geotiff made before),
a byte copy on object storage. The pixels are then encoded once per partition, and this step
only computes and writes the indices. Its tags are the mosaic's (AOI, window, sources,
method, package, compression, band statistics); ``indices.tif`` adds this step's settings.

Both files carry the partition's provenance tags, so either opened alone (in QGIS, say) says
what it is. The folder is swapped in whole (:func:`geocluster_dagster.storage.atomic_path`): a
run killed between the two files never leaves new bands beside old indices.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .. import __version__
from ..bands import band_unit
from ..blocks import CHUNK_SIZE, iter_blocks
from ..cluster import (
    SAMPLE_ATTR,
    ClusterSettings,
    SampleCandidates,
    feature_stack,
    first_pass_threshold,
    keyed_candidates,
)
from ..encoding import STACK_ATTR, DnEncoding
from ..errors import AssetReadError
from ..export import (
    COG_SETTINGS_TAG,
    STATISTICS_TAG,
    CogSettings,
    RasterStats,
    open_cog,
    write_cog,
)
from ..indices import IndexSettings, add_indices
from ..quality import Judgement, judge_cog
from ..storage import atomic_path, link_or_copy, published
from ..valid_range import VALID_RANGE_TAG, read_tag, within
from .described import DENOMINATORS, Detail, Facts, FilePath, Json, Measure, rounded

#: The version of what this product's writer makes: raise it when a release changes its
#: files or numbers, so that Dagster shows the partitions made before as stale (code_version).
VERSION = "3"  # 2: no index from a value outside its band's valid range
# 3: bands.tif is the mosaic's own file (its tags), not a second encoding of it

BANDS = "bands.tif"
INDICES = "indices.tif"
#: The clusters' fit sample candidates, drawn while the indices are written (not a raster).
SAMPLE = "sample_candidates.npz"


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
    mosaic_path: Path,
    folder: Path,
    indices: IndexSettings | None = None,
    cog: CogSettings | None = None,
    *,
    aoi_id: str,
    config: Mapping[str, Any] | None = None,
    chunks: int = CHUNK_SIZE,
) -> GeotiffFacts:
    """Write the geotiff product of the mosaic at ``mosaic_path`` into ``folder``: the mosaic's
    own file as :data:`BANDS`, and the spectral indices ``indices`` asks for, computed from it,
    as :data:`INDICES`, tagged with the mosaic's provenance, the AOI, this package's version and
    the run's ``config`` of this step.

    The bands are not encoded again: ``bands.tif`` is the mosaic's file (a hard link on a disk,
    a byte copy otherwise), whose tags hold its statistics. Only when ``cog`` asks for other
    compression than the mosaic was written with are they decoded and written again."""
    cog = cog or CogSettings()
    mosaic = open_cog(mosaic_path, chunks=chunks)
    band_stats = RasterStats.from_tag(mosaic.attrs.get(STATISTICS_TAG))
    if band_stats is None:
        raise AssetReadError(
            f"{mosaic_path} holds no band statistics (a mosaic written by an earlier version): "
            "materialize mosaic for this partition again, then geotiff."
        )
    names = (indices or IndexSettings()).names_for(mosaic)
    valid_range = read_tag(mosaic.attrs.get(VALID_RANGE_TAG))
    # Indices only from valid reflectance: where an input is outside its documented range
    # (kept as delivered), the index is nodata rather than NDVI = +85.
    inputs = mosaic.assign(
        {band: within(mosaic[band], valid_range[band]) for band in valid_range if band in mosaic}
    )
    added_indices = add_indices(inputs, names)
    added = [str(name) for name in added_indices.data_vars if name not in mosaic.data_vars]
    bands = [str(name) for name in mosaic.data_vars]
    tags = provenance(mosaic.attrs)
    tags.update(
        {
            "aoi_id": aoi_id,
            "package": f"geocluster_dagster {__version__}",
            "indices": ",".join(n.lower() for n in names),
            "config": json.dumps(dict(config or {})),
            COG_SETTINGS_TAG: cog.as_tag(),
        }
    )
    files = {BANDS: bands, **({INDICES: added} if added else {})}
    stats = RasterStats()
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        if CogSettings.of_file(mosaic.attrs) == cog:
            link_or_copy(mosaic_path, tmp / BANDS)
            stats.merge(band_stats)
        else:  # other compression asked for: decoded and encoded again, at a cost
            stats.merge(_write_cog(mosaic, tmp / BANDS, bands, cog, tags))
        if added:
            # The pass that computes the indices reads every band anyway: it also draws the
            # clusters' fit sample candidates, so that step need not read the bands for them.
            blocks = _IndicesAndCandidates(added_indices, added, mosaic)
            stats.merge(_write_cog(added_indices, tmp / INDICES, added, cog, tags, blocks=blocks))
            candidates = blocks.candidates()
            if candidates is not None:
                candidates.save(tmp / SAMPLE)
        sizes = {name: (tmp / name).stat().st_size for name in files}
    return GeotiffFacts(
        stats=stats,
        files=files,
        encoded=STACK_ATTR in mosaic.attrs,
        folder=published(folder),
        file_bytes=sizes,
        indices=list(names),
        valid_range=valid_range,
    )


def _write_cog(
    image: xr.Dataset,
    path: Path,
    names: list[str],
    cog: CogSettings,
    tags: Mapping[str, object],
    *,
    blocks: Iterable[tuple[tuple[slice, ...], np.ndarray]] | None = None,
) -> RasterStats:
    """The bands as the mosaic stores them (its DN encoding, if any), or the indices in
    float32 from the ``blocks`` computed with the fit sample's candidates."""
    return write_cog(
        image,
        path,
        bands=names,
        cog=True,
        tags=tags,
        compress=cog.compress,
        compress_level=cog.compress_level,
        units={band: band_unit(band) for band in names},
        task=f"writing the geotiff's {path.stem}",
        encoding=DnEncoding.for_bands(image.attrs, names) if blocks is None else None,
        blocks=blocks,
    )


class _IndicesAndCandidates:
    """The (index, y, x) blocks of ``indices``' variables ``names`` for the writer; the same
    read of each block draws the clusters' fit sample candidates of the default features, as
    the mosaic stores them (:func:`geocluster_dagster.cluster.keyed_candidates`), collected by
    :meth:`candidates` once every block has been iterated."""

    def __init__(self, indices: xr.Dataset, names: list[str], mosaic: xr.Dataset) -> None:
        self._default = ClusterSettings()
        self._features = self._default.feature_bands(mosaic)
        self._count = len(names)
        self._stack, _ = feature_stack(
            xr.Dataset(
                {**{n: indices[n] for n in names}, **{f: mosaic[f] for f in self._features}}
            ),
            [*names, *self._features],
        )
        self._parts: list[tuple[np.ndarray, np.ndarray, int]] = []

    def __iter__(self) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
        pixels = self._stack.shape[1] * self._stack.shape[2]
        draw = functools.partial(
            _split_block,
            count=self._count,
            seed=self._default.seed,
            threshold=first_pass_threshold(self._default.sample_size, pixels),
            sample=bool(self._features),
        )
        self._parts = []
        for index, (block, candidates) in iter_blocks(self._stack, apply=draw, with_index=True):
            if candidates is not None:
                self._parts.append(candidates)
            yield (slice(0, self._count), *index[1:]), block

    def candidates(self) -> SampleCandidates | None:
        """The candidates drawn while the blocks were iterated (None without features)."""
        if not self._features:
            return None
        return SampleCandidates.collect(
            self._parts,
            features=self._features,
            seed=self._default.seed,
            chunks=(self._stack.chunks[1][0], self._stack.chunks[2][0]),
            keep=self._default.sample_size,
        )


def _split_block(
    block: np.ndarray,
    index: tuple[slice, ...],
    *,
    count: int,
    seed: int,
    threshold: float,
    sample: bool,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, int] | None]:
    if not sample:  # no reflectance band to cluster on: nothing to draw
        return block[:count], None
    return block[:count], keyed_candidates(block[count:], index, seed=seed, threshold=threshold)


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
    if (folder / SAMPLE).is_file():
        image.attrs[SAMPLE_ATTR] = str(folder / SAMPLE)
    return image


def provenance(attrs: Mapping[str, object]) -> dict[str, object]:
    """The tags of an opened raster worth carrying into a product made of it: not where it
    was read from, and not its encoding (the writer sets that from the bands it writes)."""
    own = ("source_path", STACK_ATTR, STATISTICS_TAG, COG_SETTINGS_TAG)  # of that file alone
    return {k: v for k, v in attrs.items() if k not in own}
