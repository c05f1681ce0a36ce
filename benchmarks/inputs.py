"""The benchmark's inputs on disk: a local static STAC catalog of full-scene COGs.

For a size N: two Planetary-Computer-shaped ``landsat-c2-l2`` items (Landsat 8 and 9, June
2023) of N x N 30 m pixels, each with SR_B1..B7, ST_B10 and QA_PIXEL as separate uint16 deflate
COGs with 512 px tiles, named and described by the demo's own item builder; plus an AOI registry
with one AOI covering the scene but a 2 % margin. The pixels come from ``benchmarks.render``.
A manifest, written last, marks a complete build; a later run with the same spec reuses it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import rasterio.windows
import shapely
from pyproj import Transformer
from shapely.geometry.polygon import orient

from benchmarks.render import (
    GENERATOR_VERSION,
    WINDOW,
    SceneSpec,
    acquisitions,
    landscape_block,
    load_block,
    render_window,
    scene_tile,
    spec_for,
    windows,
)
from geocluster_dagster.demo.catalog import (
    DEMO_COLLECTION,
    SR_BANDS,
    catalog_and_collection,
    item_id,
    make_item,
    product_id,
    save_catalog,
)
from geocluster_dagster.demo.scene import Acquisition, Tile, tile_transform

MARGIN = 0.02  # AOI inset from the scene edge, as a fraction of the scene width
_MANIFEST = "bench_manifest.json"


@dataclass(frozen=True)
class Inputs:
    """A built benchmark catalog."""

    root: Path
    """Directory holding the catalog, the COGs and the AOI registry."""
    catalog: Path
    """The static catalog's catalog.json."""
    aoi_registry: Path
    """GeoJSON FeatureCollection with the one AOI."""
    aoi_id: str
    """Id of the AOI covering the scene."""
    files: tuple[str, ...]
    """Every COG, relative to root."""


def build_inputs(work: Path, size: int, seed: int, jobs: int) -> Inputs:
    """Build the catalog for ``size`` under ``work`` (or reuse a complete one with the same spec)."""
    spec = spec_for(size, seed)
    root = work / "inputs" / f"{size}"
    cached = _read_complete_manifest(root, spec)
    if cached is not None:
        print(f"[inputs {size}] reusing {root}", flush=True)
        return cached
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{size}.building-", dir=root.parent))
    started = time.perf_counter()
    try:
        block = landscape_block(work, spec.block)
        _write_catalog(staging, spec, block, jobs)
        os.rename(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"[inputs {size}] built {root} in {time.perf_counter() - started:.0f} s", flush=True)
    inputs = _read_complete_manifest(root, spec)
    if inputs is None:
        raise RuntimeError(f"Inputs at {root} are incomplete right after building them.")
    return inputs


def warm_page_cache(inputs: Inputs) -> None:
    """Read every input file once, so no step pays for (or profits from) a cold disk."""
    for rel in inputs.files:
        with (inputs.root / rel).open("rb") as f:
            while f.read(1 << 24):
                pass


def _asset_files(tile: Tile, acq: Acquisition) -> dict[str, str]:
    """Asset key -> file path relative to the catalog root, named as the demo names them."""
    folder = f"{DEMO_COLLECTION}/{item_id(tile, acq)}/{product_id(tile, acq)}"
    files = {key: f"{folder}_{suffix}.TIF" for key, suffix, *_ in SR_BANDS}
    files["lwir11"] = f"{folder}_ST_B10.TIF"
    files["qa_pixel"] = f"{folder}_QA_PIXEL.TIF"
    return files


def _write_catalog(staging: Path, spec: SceneSpec, block: Path, jobs: int) -> None:
    """Render the scene into tiled GeoTIFFs, convert them to COGs, add STAC, AOIs, manifest."""
    started = time.perf_counter()
    tile = scene_tile(spec.size)
    files = [_asset_files(tile, acq) for acq in acquisitions()]
    raw = staging / ".raw"
    raw.mkdir()
    counts = _render_rasters(raw, spec, block, jobs, files)
    for d, date_files in enumerate(files):
        for key, rel in date_files.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            _to_cog(raw / f"{d}_{key}.tif", target, "nearest" if key == "qa_pixel" else "average")
            (raw / f"{d}_{key}.tif").unlink()
    raw.rmdir()
    print(f"[inputs {spec.size}] COGs done ({time.perf_counter() - started:.0f} s)", flush=True)
    _write_stac(staging, spec, counts)
    (staging / "aois.geojson").write_text(json.dumps(_aoi_registry(spec), indent=1) + "\n")
    _write_manifest(staging, spec)


def _render_rasters(
    raw: Path, spec: SceneSpec, block: Path, jobs: int, files: list[dict[str, str]]
) -> np.ndarray:
    """Render every window on ``jobs`` processes into ``raw/<date>_<key>.tif``.

    Returns the pixel counts per date (cloud, valid, cloud over land, valid land).
    """
    started = time.perf_counter()
    tile = scene_tile(spec.size)
    profile: dict[str, Any] = dict(
        driver="GTiff",
        width=spec.size,
        height=spec.size,
        count=1,
        dtype="uint16",
        crs=f"EPSG:{tile.epsg}",
        transform=tile_transform(tile),
        tiled=True,
        blockxsize=WINDOW,
        blockysize=WINDOW,
    )
    sinks = [
        {
            key: rasterio.open(
                raw / f"{d}_{key}.tif", "w", nodata=1 if key == "qa_pixel" else 0, **profile
            )
            for key in date_files
        }
        for d, date_files in enumerate(files)
    ]
    sr_keys = [key for key, *_ in SR_BANDS]
    counts = np.zeros((len(files), 4), dtype=np.int64)
    scene_windows = list(windows(spec.size))
    try:
        with ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=get_context("spawn"),
            initializer=load_block,
            initargs=(str(block),),
        ) as pool:
            tasks = ((spec, window) for window in scene_windows)
            rendered = pool.map(render_window, tasks)
            for done, (window, dates) in enumerate(
                zip(scene_windows, rendered, strict=True), start=1
            ):
                row0, col0, h, w = window
                where = rasterio.windows.Window(col0, row0, w, h)
                for d, date in enumerate(dates):
                    for i, key in enumerate(sr_keys):
                        sinks[d][key].write(date.sr[i], 1, window=where)
                    sinks[d]["lwir11"].write(date.st, 1, window=where)
                    sinks[d]["qa_pixel"].write(date.qa, 1, window=where)
                    counts[d] += date.counts
                if done % 50 == 0 or done == len(scene_windows):
                    print(
                        f"[inputs {spec.size}] window {done}/{len(scene_windows)} "
                        f"({time.perf_counter() - started:.0f} s)",
                        flush=True,
                    )
    finally:
        for date_sinks in sinks:
            for sink in date_sinks.values():
                sink.close()
    return counts


def _to_cog(source: Path, target: Path, resampling: str) -> None:
    """The USGS layout: deflate with horizontal predictor, internal overviews (512 px tiles here)."""
    rasterio.shutil.copy(
        source,
        target,
        driver="COG",
        compress="DEFLATE",
        predictor=2,
        blocksize=WINDOW,
        overview_resampling=resampling,
        num_threads="ALL_CPUS",
    )


def _write_stac(staging: Path, spec: SceneSpec, counts: np.ndarray) -> None:
    """Items made by the demo's own item builder; catalog saved as the demo saves it."""
    tile = scene_tile(spec.size)
    transform = tile_transform(tile)
    catalog, collection = catalog_and_collection()
    catalog.title = f"geocluster_dagster benchmark, {spec.size} px (SYNTHETIC)"
    for acq, (cloud, valid, land_cloud, land) in zip(acquisitions(), counts.tolist(), strict=True):
        # hrefs are absolute here; the catalog makes them relative on saving
        folder = staging / _asset_files(tile, acq)["qa_pixel"].rsplit("/", 1)[0]
        item = make_item(
            tile,
            acq,
            transform,
            folder,
            cloud_cover=round(100 * cloud / max(valid, 1), 2),
            cloud_cover_land=round(100 * land_cloud / max(land, 1), 2),
        )
        item.properties["geocluster:benchmark"] = True
        collection.add_item(item)
    save_catalog(catalog, collection, staging)


def _aoi_id(size: int) -> str:
    return f"bench-{size}"


def _aoi_registry(spec: SceneSpec) -> dict[str, Any]:
    """One AOI: the scene inset by MARGIN, in lon/lat, exterior counter-clockwise."""
    tile = scene_tile(spec.size)
    transform = tile_transform(tile)
    inset = MARGIN * spec.size * transform.a
    left, top = transform.c, transform.f
    right, bottom = left + spec.size * transform.a, top + spec.size * transform.e
    outline = shapely.box(left + inset, bottom + inset, right - inset, top - inset)
    to_lonlat = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    lonlat = shapely.transform(
        outline.segmentize(spec.size * transform.a / 16),
        lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])),
    )
    ring = [[round(x, 7), round(y, 7)] for x, y in orient(lonlat, 1.0).exterior.coords]
    aoi_id = _aoi_id(spec.size)
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": aoi_id,
                "properties": {"id": aoi_id, "name": f"Benchmark scene {spec.size} px"},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        ],
    }


def _write_manifest(folder: Path, spec: SceneSpec) -> None:
    """Written last: the spec and every file's size mark a complete build."""
    files = {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "spec": dataclasses.asdict(spec),
        "files": files,
    }
    (folder / _MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def _read_complete_manifest(root: Path, spec: SceneSpec) -> Inputs | None:
    """The inputs at ``root`` if their manifest matches ``spec`` and every file its size."""
    try:
        manifest = json.loads((root / _MANIFEST).read_text())
        if (
            manifest["generator_version"] != GENERATOR_VERSION
            or manifest["spec"] != dataclasses.asdict(spec)
            or any((root / n).stat().st_size != s for n, s in manifest["files"].items())
        ):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Inputs(
        root=root,
        catalog=root / "catalog.json",
        aoi_registry=root / "aois.geojson",
        aoi_id=_aoi_id(spec.size),
        files=tuple(sorted(n for n in manifest["files"] if n.endswith(".TIF"))),
    )
