"""What each stage hands to storage, and how it is saved and reopened (lazily).

These containers are what the Dagster assets return; the IO manager only decides *where*
(one path per asset and partition) and calls :func:`save` / :func:`load`. Everything is
written to temporary paths and renamed into place, so a failed run never replaces a good
earlier output.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pystac
import pystac.errors
import shapely
import xarray as xr

from .errors import AssetReadError
from .export import (
    RasterStats,
    atomic_path,
    open_geotiff,
    open_single_band,
    write_geotiff,
    write_json,
)
from .load import LoadSettings
from .remote import RemoteReadSettings
from .search import StacSource


@dataclass
class BandStackRecipe:
    """A band stack stored as what rebuilds it lazily: the items, AOI, grid/mask and read settings.

    The stack is a view of the source COGs (masked, scaled, on one grid); storing the recipe
    instead of a copy of its pixels means the next stage reads each source pixel exactly once,
    and partitions cost kilobytes on disk instead of gigabytes. Reopening it reads no pixels.
    """

    items: pystac.ItemCollection
    aoi: shapely.Geometry
    settings: LoadSettings
    source: StacSource | None = None
    """Where the items came from: decides read-time signing (Planetary Computer)."""
    remote: RemoteReadSettings = field(default_factory=RemoteReadSettings)

    def open(self) -> xr.Dataset:
        """The lazy (time, y, x) stack of :func:`geocluster_dagster.load.load_band_stack`."""
        from .load import load_band_stack

        stack = load_band_stack(
            self.items.items,
            self.aoi,
            dataclasses.replace(self.settings, preflight=False),
            href_signer=self.source.href_signer() if self.source else None,
            remote=self.remote,
        )
        # Provenance for the GeoTIFF tags downstream.
        stack.attrs["load_config"] = json.dumps(dataclasses.asdict(self.settings), sort_keys=True)
        return stack

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "geocluster_dagster.BandStackRecipe",
            "aoi": shapely.geometry.mapping(self.aoi),
            "settings": dataclasses.asdict(self.settings),
            "source": dataclasses.asdict(self.source) if self.source else None,
            "remote": dataclasses.asdict(self.remote),
            "items": self.items.to_dict(transform_hrefs=False),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BandStackRecipe:
        def tuples(values: dict[str, Any]) -> dict[str, Any]:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}

        return cls(
            items=pystac.ItemCollection.from_dict(data["items"]),
            aoi=shapely.geometry.shape(data["aoi"]),
            settings=LoadSettings(**tuples(data["settings"])),
            source=StacSource(**data["source"]) if data.get("source") else None,
            remote=RemoteReadSettings(**tuples(data["remote"])),
        )


@dataclass
class RasterOutput:
    """A lazy raster to be written as GeoTIFF (``cog=True``: Cloud-Optimized)."""

    data: xr.Dataset | xr.DataArray
    cog: bool = True
    nodata: float | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    overview_resampling: str = "average"
    compress: str = "deflate"
    """GDAL codec; intermediate rasters use a fast one (zstd level 1), deliverables deflate."""
    compress_level: int | None = None
    validate: Callable[[RasterStats], dict[str, Any]] | None = None
    """Called with the statistics of the written raster before it replaces the earlier output:
    raising keeps the earlier output, a returned dict is shown as metadata."""
    blocks: Iterable[tuple[tuple[slice, ...], np.ndarray]] | None = None
    """The raster's blocks when computed elsewhere (see export.write_geotiff); None = ``data``'s."""
    stats: RasterStats | None = None
    """Filled in by :func:`save`: per-band statistics gathered while writing."""


@dataclass
class ClusterProduct:
    """The ``clusters`` asset: cluster map, fitted model, signatures, and the fit sample."""

    cluster_map: RasterOutput
    model: Any
    """A geocluster_dagster.cluster.FittedClusterer."""
    signatures: pd.DataFrame | Callable[[], pd.DataFrame]
    """Per-cluster table, or what makes it once the map is written (cluster.LabelledBlocks sums
    it while the map's blocks are written); :func:`save` replaces it by the table."""
    sample: np.ndarray
    """The (n, features) pixels the model was fitted on, for scores and plots downstream."""
    summary: dict[str, Any]


@dataclass
class StoredClusters:
    """A ``clusters`` output reopened from disk (the map stays lazy)."""

    directory: Path
    cluster_map: xr.DataArray
    model: Any
    signatures: pd.DataFrame
    sample: np.ndarray
    summary: dict[str, Any]

    @property
    def cluster_map_path(self) -> Path:
        return self.directory / CLUSTER_MAP


@dataclass
class DiagnosticsProduct:
    """The ``diagnostics`` asset: PNG plots (bytes) and scores."""

    pngs: dict[str, bytes]
    scores: dict[str, float]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


CLUSTER_MAP = "cluster_map.tif"
MODEL = "model.joblib"
SIGNATURES_CSV = "signatures.csv"
SIGNATURES_JSON = "signatures.json"
SAMPLE = "fit_sample.npy"
SUMMARY = "summary.json"
SCORES = "scores.json"


def extension(obj: Any) -> str:
    """File suffix (or '' for a directory) that :func:`save` uses for ``obj``."""
    if isinstance(obj, (pystac.ItemCollection, BandStackRecipe)):
        return ".json"
    if isinstance(obj, RasterOutput):
        return ".tif"
    if isinstance(obj, (ClusterProduct, DiagnosticsProduct)):
        return ""
    raise TypeError(f"Don't know how to store a {type(obj).__name__}")


def save(obj: Any, path: Path) -> dict[str, Any]:
    """Write ``obj`` at ``path`` atomically; returns facts worth showing as metadata."""
    if isinstance(obj, pystac.ItemCollection):
        write_json(obj.to_dict(transform_hrefs=False), path)
        return {}
    if isinstance(obj, BandStackRecipe):
        write_json(obj.to_dict(), path)
        return {}
    if isinstance(obj, RasterOutput):
        return _write_raster(obj, path)
    if isinstance(obj, ClusterProduct):
        return _save_clusters(obj, path)
    if isinstance(obj, DiagnosticsProduct):
        with atomic_path(path) as tmp:
            tmp.mkdir()
            for name, data in obj.pngs.items():
                (tmp / name).write_bytes(data)
            write_json(obj.scores, tmp / SCORES)
            for name, table in obj.tables.items():
                table.to_csv(tmp / f"{name}.csv", index=False)
        return {}
    raise TypeError(f"Don't know how to store a {type(obj).__name__}")


def _write_raster(output: RasterOutput, path: Path, *, cog: bool | None = None) -> dict[str, Any]:
    """Write ``output`` (a COG if ``cog``, default ``output.cog``); fills ``output.stats``."""
    checked: dict[str, Any] = {}

    def check(stats: RasterStats) -> None:
        if output.validate is not None:
            checked.update(output.validate(stats) or {})

    output.stats = write_geotiff(
        output.data,
        path,
        cog=output.cog if cog is None else cog,
        nodata=output.nodata,
        tags=output.tags,
        overview_resampling=output.overview_resampling,
        compress=output.compress,
        compress_level=output.compress_level,
        validate=check,
        blocks=output.blocks,
    )
    return {**checked, "band_statistics": output.stats.as_dict()}


def _save_clusters(product: ClusterProduct, path: Path) -> dict[str, Any]:
    from .cluster import save_model

    with atomic_path(path) as tmp:
        tmp.mkdir()
        _write_raster(product.cluster_map, tmp / CLUSTER_MAP, cog=True)
        if callable(product.signatures):
            product.signatures = product.signatures()
        save_model(product.model, tmp / MODEL)
        product.signatures.to_csv(tmp / SIGNATURES_CSV, index=False)
        write_json(json.loads(product.signatures.to_json(orient="records")), tmp / SIGNATURES_JSON)
        np.save(tmp / SAMPLE, product.sample)
        write_json(product.summary, tmp / SUMMARY)
    return {}


def load(path: Path, kind: type, *, chunks: int = 1024) -> Any:
    """Reopen what :func:`save` wrote; rasters come back lazy (dask-backed)."""
    if kind is pystac.ItemCollection:
        return pystac.ItemCollection.from_dict(json.loads(path.read_text()))
    if kind is BandStackRecipe:
        try:
            recipe = BandStackRecipe.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, pystac.errors.STACTypeError) as err:
            raise AssetReadError(
                f"{path} is not a band stack written by this version of geocluster_dagster "
                f"({err}): materialize band_stack for this partition again."
            ) from err
        return recipe.open()
    if kind is RasterOutput:
        ds = open_geotiff(path, chunks=chunks)
        ds.attrs["source_path"] = str(path)
        return ds
    if kind is ClusterProduct:
        from .cluster import load_model

        return StoredClusters(
            directory=path,
            cluster_map=open_single_band(path / CLUSTER_MAP, chunks=chunks),
            model=load_model(path / MODEL),
            signatures=pd.read_csv(path / SIGNATURES_CSV),
            sample=np.load(path / SAMPLE),
            summary=json.loads((path / SUMMARY).read_text()),
        )
    if kind is DiagnosticsProduct:
        return path
    raise TypeError(f"Don't know how to load a {kind.__name__}")


def render_pngs(render) -> dict[str, bytes]:
    """Call ``render(folder)`` to draw PNGs into a scratch folder, and keep their bytes.

    Plots are small; holding their bytes lets the IO manager place them atomically.
    """
    with tempfile.TemporaryDirectory(prefix="geocluster-plots-") as folder:
        render(Path(folder))
        return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("*.png"))}
