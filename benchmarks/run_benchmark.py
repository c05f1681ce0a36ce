"""Benchmark: the I/O floor, the plain-script baseline and this project on full-scene inputs.

    python benchmarks/run_benchmark.py --sizes 4000 8000 --out benchmarks/results

For each size N this

1. builds (or reuses, see ``--work``) a local static STAC catalog of two Planetary-Computer-shaped
   ``landsat-c2-l2`` items (Landsat 8 and 9, June 2023) of N x N 30 m pixels, each with SR_B1..B7,
   ST_B10 and QA_PIXEL as separate uint16 deflate COGs with 512 px tiles, plus an AOI registry
   with one AOI covering the scene but a 2 % margin. Pixel values come from the demo's landscape
   (real spyndex Landsat spectra): one landscape block is rendered once and tiled over the scene
   with seeded flips and offsets; clouds, shadows, dilated rims, the QA codes and the DN encoding
   are the demo's own functions applied window by window (no scene-sized array is ever held);
2. runs three steps, each in its own subprocess, sequentially, after warming the page cache with
   the input files (all steps read warm files):

   * ``floor``: read and decode every block of every input file (18 per size) with rasterio,
     a thread per core, one dataset handle per thread and file, nothing else;
   * ``baseline``: the plain script of issue 4: every band of both dates opened with rioxarray,
     QA-masked, merged with ``rioxarray.merge.merge_arrays``, ``MiniBatchKMeans(batch_size=1024)
     .fit`` on every valid pixel, silhouette on a 10,000-pixel sample, cluster map written as a
     GeoTIFF; killed at ``--timeout`` or when its memory passes ``--memory-guard-mb``;
   * ``project``: ``geocluster materialize --aoi <id> --month 2023-06`` on that catalog, i.e. the
     whole asset graph (all 8 bands so it reads the same files as the other two steps); then,
     as a reference, GDAL's COG copy of the project's geotiff is timed on its own
     (:func:`time_cog_copy`): a part of the graph that only a faster codec can shorten;

3. writes ``results.json`` and ``results.md`` under ``--out`` and prints the table.

Definitions: *wall s* is from launching the subprocess to its exit (Python start-up and imports
included); *Mpx/s* is N^2 x 2 dates / wall s (one pixel = one location on one date, all its
bands); *peak MB* is the peak resident memory of the step's whole process tree: the larger of the
tree's summed RSS polled every 0.2 s and the kernel's ``ru_maxrss`` of the step's process
(``os.wait4``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path

import numpy as np

GENERATOR_VERSION = "1"
"""Bump when the generated inputs change, so cached inputs are rebuilt."""

MONTH = "2023-06"
WINDOW = 512  # COG tile size, and the generator's window
MARGIN = 0.02  # AOI inset from the scene edge, as a fraction of the scene width
MASK_BITS = 0b111111  # QA_PIXEL fill, dilated cloud, cirrus, cloud, shadow, snow (as the project)
PROJECT_BANDS = ("coastal", "blue", "green", "red", "nir", "swir16", "swir22", "lwir")
RESULT_TAG = "BENCH_RESULT "  # prefix of the JSON line a step prints last
STEPS = ("floor", "baseline", "project")
_MANIFEST = "bench_manifest.json"


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class SceneSpec:
    """What the generated inputs depend on (recorded in the manifest)."""

    size: int
    """Scene width and height in pixels."""
    seed: int
    """Seed of the tiling of the landscape block (flips and offsets per block)."""
    block: int
    """Side of the rendered landscape block in pixels (a multiple of WINDOW)."""


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


def _spec_for(size: int, seed: int) -> SceneSpec:
    # a 1024 px block (30 km) shows the demo's river, lake, pond and town; small scenes need less
    return SceneSpec(size=size, seed=seed, block=WINDOW if size <= 2 * WINDOW else 2 * WINDOW)


def build_inputs(work: Path, size: int, seed: int, jobs: int) -> Inputs:
    """Build the catalog for ``size`` under ``work`` (or reuse a complete one with the same spec)."""
    spec = _spec_for(size, seed)
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
        block = _landscape_block(work, spec.block)
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


def _landscape_block(work: Path, side: int) -> Path:
    """Render (once) the demo landscape on a side x side grid centred on the demo's origin."""
    from geocluster_dagster.demo.landscape import _landscape

    path = work / "inputs" / f"landscape_block_{side}_v{GENERATOR_VERSION}.npz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    classes = np.empty((side, side), dtype=np.uint8)
    ground = np.empty((8, side, side), dtype=np.float32)
    centres = (np.arange(side) - side / 2 + 0.5) * 30.0
    for row0 in range(0, side, 256):  # strips: _landscape makes many full-size temporaries
        rows = slice(row0, min(row0 + 256, side))
        x, y = np.meshgrid(centres, -centres[rows])
        classes[rows], ground[:, rows] = _landscape(x, y)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, classes=classes, ground=ground)
    os.replace(tmp, path)
    return path


def _scene_tile(size: int):
    """The demo's tile A (EPSG:32616, WRS 19/36), grown to size x size."""
    from geocluster_dagster.demo.scene import _TILES

    return dataclasses.replace(_TILES[0], key="bench", shape=(size, size))


def _acquisitions() -> tuple:
    """The demo's two dates; a fill collar on the second. A non-None fill_tile on both dates
    keeps the demo's cloud-free strip (meant for its small tile) out of the big scene."""
    from geocluster_dagster.demo.scene import _ACQUISITIONS

    first, second = _ACQUISITIONS
    return (
        dataclasses.replace(first, fill_tile="none"),
        dataclasses.replace(second, fill_tile="bench"),
    )


def _asset_files(tile, acq) -> dict[str, str]:
    """Asset key -> file path relative to the catalog root, named as the demo names them."""
    from geocluster_dagster.demo.catalog import (
        _SR_BANDS,
        DEMO_COLLECTION,
        _item_id,
        _product_id,
    )

    folder = f"{DEMO_COLLECTION}/{_item_id(tile, acq)}/{_product_id(tile, acq)}"
    files = {key: f"{folder}_{suffix}.TIF" for key, suffix, *_ in _SR_BANDS}
    files["lwir11"] = f"{folder}_ST_B10.TIF"
    files["qa_pixel"] = f"{folder}_QA_PIXEL.TIF"
    return files


def _windows(size: int) -> Iterator[tuple[int, int, int, int]]:
    for row0 in range(0, size, WINDOW):
        for col0 in range(0, size, WINDOW):
            yield row0, col0, min(WINDOW, size - row0), min(WINDOW, size - col0)


_BLOCK: dict[str, np.ndarray] = {}


def _load_block(path: str) -> None:
    with np.load(path) as data:
        _BLOCK["classes"], _BLOCK["ground"] = data["classes"], data["ground"]


def _render_window(args: tuple[SceneSpec, tuple[int, int, int, int]]) -> list[tuple]:
    """Both dates of one window: per date (SR DN (7,h,w), ST DN, QA, cloud px, valid px, land px)."""
    from geocluster_dagster.demo.landscape import WATER
    from geocluster_dagster.demo.scene import (
        DEMO_QA_CODES,
        _observe,
        _tile_transform,
        _to_local,
    )

    spec, (row0, col0, h, w) = args
    side = spec.block
    # which copy of the landscape block this window shows: seeded flips and offsets per cell
    cell_row, cell_col = row0 // side, col0 // side
    rng = np.random.default_rng([spec.seed, cell_row, cell_col])
    flip_rows, flip_cols = rng.integers(0, 2, size=2)
    shift_rows, shift_cols = rng.integers(0, side, size=2)
    rows = (np.arange(row0, row0 + h) - cell_row * side + shift_rows) % side
    cols = (np.arange(col0, col0 + w) - cell_col * side + shift_cols) % side
    rows = side - 1 - rows if flip_rows else rows
    cols = side - 1 - cols if flip_cols else cols
    classes = _BLOCK["classes"][np.ix_(rows, cols)]
    ground = _BLOCK["ground"][:, rows[:, None], cols[None, :]]

    # the sky is a function of position on the scene's own UTM grid, as in the demo
    tile = _scene_tile(spec.size)
    transform = _tile_transform(tile)
    grid_rows, grid_cols = np.mgrid[row0 : row0 + h, col0 : col0 + w]
    utm_x = transform.c + (grid_cols + 0.5) * transform.a
    utm_y = transform.f + (grid_rows + 0.5) * transform.e
    x, y = _to_local(utm_x, utm_y, f"EPSG:{tile.epsg}")
    window_tile = dataclasses.replace(tile, key="window", shape=(h, w))  # no demo fill collar

    out = []
    for acq in _acquisitions():
        obs = _observe(classes, ground, x, y, window_tile, acq)
        sr, st, qa = obs.sr, obs.st, obs.qa
        if acq.fill_tile == tile.key:
            # the demo's slanted west-edge collar, scaled to the scene
            fill = grid_cols < 0.06 * spec.size + 0.09 * grid_rows
            sr[:, fill], st[fill], qa[fill] = 0, 0, DEMO_QA_CODES["fill"]
        valid = qa != DEMO_QA_CODES["fill"]
        cloud = int((qa == DEMO_QA_CODES["cloud"]).sum())
        land_cloud = int(((qa == DEMO_QA_CODES["cloud"]) & (classes != WATER)).sum())
        out.append(
            (
                sr,
                st,
                qa,
                cloud,
                int(valid.sum()),
                land_cloud,
                int((valid & (classes != WATER)).sum()),
            )
        )
    return out


def _write_catalog(staging: Path, spec: SceneSpec, block: Path, jobs: int) -> None:
    """Render the scene window by window into tiled GeoTIFFs, convert them to COGs, add STAC."""
    import rasterio

    from geocluster_dagster.demo.catalog import _SR_BANDS
    from geocluster_dagster.demo.scene import _tile_transform

    started = time.perf_counter()
    tile = _scene_tile(spec.size)
    transform = _tile_transform(tile)
    acquisitions = _acquisitions()
    files = [_asset_files(tile, acq) for acq in acquisitions]
    sr_keys = [key for key, *_ in _SR_BANDS]
    raw = staging / ".raw"
    raw.mkdir()
    profile = dict(
        driver="GTiff",
        width=spec.size,
        height=spec.size,
        count=1,
        dtype="uint16",
        crs=f"EPSG:{tile.epsg}",
        transform=transform,
        tiled=True,
        blockxsize=WINDOW,
        blockysize=WINDOW,
    )
    sinks = [
        {
            key: rasterio.open(
                raw / f"{d}_{key}.tif", "w", nodata=1 if key == "qa_pixel" else 0, **profile
            )
            for key in files[d]
        }
        for d in range(len(acquisitions))
    ]
    counts = np.zeros((len(acquisitions), 4), dtype=np.int64)
    windows = list(_windows(spec.size))
    try:
        with ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=get_context("spawn"),
            initializer=_load_block,
            initargs=(str(block),),
        ) as pool:
            tasks = ((spec, window) for window in windows)
            for done, (window, dates) in enumerate(
                zip(windows, pool.map(_render_window, tasks), strict=True), start=1
            ):
                row0, col0, h, w = window
                where = rasterio.windows.Window(col0, row0, w, h)
                for d, (sr, st, qa, *stats) in enumerate(dates):
                    for i, key in enumerate(sr_keys):
                        sinks[d][key].write(sr[i], 1, window=where)
                    sinks[d]["lwir11"].write(st, 1, window=where)
                    sinks[d]["qa_pixel"].write(qa, 1, window=where)
                    counts[d] += stats
                if done % 50 == 0 or done == len(windows):
                    print(
                        f"[inputs {spec.size}] window {done}/{len(windows)} "
                        f"({time.perf_counter() - started:.0f} s)",
                        flush=True,
                    )
    finally:
        for date_sinks in sinks:
            for sink in date_sinks.values():
                sink.close()

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


def _to_cog(source: Path, target: Path, resampling: str) -> None:
    """The USGS layout: deflate with horizontal predictor, internal overviews (512 px tiles here)."""
    import rasterio.shutil

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

    from geocluster_dagster.demo.catalog import _catalog_and_collection, _make_item, save_catalog
    from geocluster_dagster.demo.scene import _Observation, _tile_transform

    tile = _scene_tile(spec.size)
    transform = _tile_transform(tile)
    catalog, collection = _catalog_and_collection()
    catalog.title = f"geocluster_dagster benchmark, {spec.size} px (SYNTHETIC)"
    for acq, date_counts in zip(_acquisitions(), counts, strict=True):
        cloud, valid, land_cloud, land = (int(n) for n in date_counts)
        empty = np.zeros((0,), dtype=np.uint16)
        cover = _Observation(
            sr=empty,
            st=empty,
            qa=empty,
            cloud_cover=round(100 * cloud / max(valid, 1), 2),
            cloud_cover_land=round(100 * land_cloud / max(land, 1), 2),
        )
        # hrefs are absolute here; the catalog makes them relative on saving
        folder = staging / _asset_files(tile, acq)["qa_pixel"].rsplit("/", 1)[0]
        item = _make_item(tile, acq, transform, cover, folder)
        item.properties["geocluster:benchmark"] = True
        collection.add_item(item)
    save_catalog(catalog, collection, staging)


def _aoi_id(size: int) -> str:
    return f"bench-{size}"


def _aoi_registry(spec: SceneSpec) -> dict:
    """One AOI: the scene inset by MARGIN, in lon/lat, exterior counter-clockwise."""
    import shapely
    from pyproj import CRS
    from shapely.geometry.polygon import orient

    from geocluster_dagster.demo.landscape import _transformer
    from geocluster_dagster.demo.scene import _tile_transform

    tile = _scene_tile(spec.size)
    transform = _tile_transform(tile)
    inset = MARGIN * spec.size * transform.a
    left, top = transform.c, transform.f
    right, bottom = left + spec.size * transform.a, top + spec.size * transform.e
    outline = shapely.box(left + inset, bottom + inset, right - inset, top - inset)
    to_lonlat = _transformer(CRS.from_epsg(tile.epsg).to_wkt(), CRS.from_epsg(4326).to_wkt())
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


# --------------------------------------------------------------------------------------------
# The measured steps: each runs in a child process (`run_benchmark.py _step NAME ...`).


def step_floor(inputs: Path, threads: int) -> dict:
    """Read and decode every block of every input COG, one thread per core."""
    import rasterio

    paths = sorted(str(p) for p in inputs.rglob("*.TIF"))
    tasks = []
    for path in paths:
        with rasterio.open(path) as ds:
            tasks += [(path, window) for _, window in ds.block_windows(1)]
    local = threading.local()
    opened: list = []
    lock = threading.Lock()

    def read(task: tuple) -> int:
        path, window = task
        handles = getattr(local, "handles", None)
        if handles is None:
            handles = local.handles = {}
        if path not in handles:
            handles[path] = rasterio.open(path)
            with lock:
                opened.append(handles[path])
        return handles[path].read(1, window=window).nbytes

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        decoded = sum(pool.map(read, tasks))
    read_s = time.perf_counter() - started
    for ds in opened:
        ds.close()
    return {
        "files": len(paths),
        "blocks": len(tasks),
        "threads": threads,
        "decoded_mb": round(decoded / 2**20, 1),
        "read_s": round(read_s, 3),
    }


def step_baseline(inputs: Path, out_dir: Path, seed: int) -> dict:
    """The plain script: rioxarray + merge_arrays + MiniBatchKMeans on every pixel, all in RAM."""
    import pystac
    import rioxarray
    from rioxarray.merge import merge_arrays
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import silhouette_score

    from geocluster_dagster.bands import find_asset_key

    stages: dict[str, float] = {}
    clock = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[name] = round(now - clock, 3)
        clock = now
        print(f"stage {name} done after {stages[name]} s", flush=True)

    catalog = pystac.Catalog.from_file(str(inputs / "catalog.json"))
    items = sorted(catalog.get_items(recursive=True), key=lambda item: item.datetime)
    for item in items:
        item.make_asset_hrefs_absolute()
    clear = []
    for item in items:
        qa = rioxarray.open_rasterio(item.assets["qa_pixel"].href).squeeze("band", drop=True)
        clear.append((qa.values & MASK_BITS) == 0)
        del qa
    merged = {}
    template = None
    for band in PROJECT_BANDS:
        per_date = []
        for item, ok in zip(items, clear, strict=True):
            asset = item.assets[find_asset_key(item, band)]
            scaling = asset.extra_fields["raster:bands"][0]
            da = rioxarray.open_rasterio(asset.href, masked=True).squeeze("band", drop=True)
            da = (da * scaling["scale"] + scaling["offset"]).where(ok)
            per_date.append(da.rio.write_nodata(np.nan, encoded=False))
        merged[band] = merge_arrays(per_date, nodata=np.nan)
        template = merged[band]
    stage("read_merge")

    features = np.stack([merged[band].values.ravel() for band in PROJECT_BANDS], axis=1)
    valid = ~np.isnan(features).any(axis=1)
    samples = features[valid]
    stage("stack")
    model = MiniBatchKMeans(n_clusters=6, batch_size=1024, random_state=seed).fit(samples)
    stage("fit")
    labels = model.labels_
    pick = np.random.default_rng(seed).choice(len(samples), min(10_000, len(samples)), False)
    silhouette = float(silhouette_score(samples[pick], labels[pick]))
    stage("silhouette")

    cluster_map = np.zeros(valid.shape, dtype=np.uint8)
    cluster_map[valid] = labels + 1
    out_dir.mkdir(parents=True, exist_ok=True)
    template.copy(data=cluster_map.reshape(template.shape)).rio.write_nodata(0).rio.to_raster(
        out_dir / "cluster_map.tif", compress="deflate", tiled=True
    )
    stage("write")
    return {
        "valid_pixels": int(valid.sum()),
        "silhouette_10k": round(silhouette, 4),
        "fit_steps": int(model.n_steps_),
        "stages_s": stages,
        "rioxarray": rioxarray.__version__,
    }


def _run_step(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="run_benchmark.py _step")
    parser.add_argument("name", choices=("floor", "baseline"))
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.name == "floor":
        detail = step_floor(args.inputs, args.threads)
    else:
        detail = step_baseline(args.inputs, args.out, args.seed)
    print(RESULT_TAG + json.dumps(detail), flush=True)


# --------------------------------------------------------------------------------------------
# Measuring a subprocess: wall time, peak memory of its tree, time limit and memory guard.


@dataclass(frozen=True)
class Measurement:
    """One step at one size."""

    step: str
    """floor, baseline or project."""
    status: str
    """ok, timeout, oom (memory guard, MemoryError or SIGKILL) or failed."""
    wall_s: float
    """Launch to exit (or to the kill), seconds."""
    peak_mb: float
    """Peak resident memory of the step's process tree, MiB."""
    mpx_s: float | None
    """size^2 x dates / wall_s / 1e6, when the step finished."""
    detail: dict
    """What the step reported (JSON line) or why it stopped; log file path."""


def _tree(process) -> list:
    import psutil

    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return [process]


def _tree_rss(process) -> int:
    import psutil

    total = 0
    for p in _tree(process):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(
    step: str,
    cmd: Sequence[str],
    env: dict[str, str],
    log: Path,
    megapixels: float,
    timeout_s: float,
    guard_mb: float,
) -> Measurement:
    """Run ``cmd``, polling its process tree's RSS every 0.2 s; kill it at the limits."""
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  {step}: {' '.join(cmd)}", flush=True)
    with log.open("w") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
        handle = psutil.Process(proc.pid)
        peak_tree, stopped = 0, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_tree = max(peak_tree, _tree_rss(handle))
            elapsed = time.perf_counter() - started
            if stopped is None and elapsed > timeout_s:
                stopped = "timeout"
            elif stopped is None and peak_tree > guard_mb * 2**20:
                stopped = "oom"
            if stopped:
                for p in reversed(_tree(handle)):  # children first, each by its own pid
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        wall = round(time.perf_counter() - started, 2)
        proc.returncode = os.waitstatus_to_exitcode(status)
    peak_mb = max(peak_tree / 2**20, usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux
    text = log.read_text(errors="replace")
    detail: dict = {"log": str(log), "returncode": proc.returncode}
    result_lines = [ln for ln in text.splitlines() if ln.startswith(RESULT_TAG)]
    if result_lines:
        detail.update(json.loads(result_lines[-1][len(RESULT_TAG) :]))
    if stopped == "timeout":
        detail["stopped_by"] = f"time limit {timeout_s:.0f} s"
    elif stopped == "oom":
        detail["stopped_by"] = f"memory guard {guard_mb:.0f} MB"
    elif proc.returncode == 0:
        stopped = "ok"
    elif "MemoryError" in text:
        stopped, detail["stopped_by"] = "oom", "MemoryError"
    elif proc.returncode == -9:
        stopped, detail["stopped_by"] = "oom", "SIGKILL (the kernel's OOM killer?)"
    else:
        stopped, detail["stopped_by"] = "failed", f"exit code {proc.returncode}"
    if stopped != "ok":
        reached = [ln for ln in text.splitlines() if ln.startswith("stage ")]
        detail["last_stage"] = reached[-1] if reached else None
        detail["log_tail"] = text.splitlines()[-15:]
    return Measurement(
        step=step,
        status=stopped,
        wall_s=wall,
        peak_mb=round(peak_mb, 1),
        mpx_s=round(megapixels / wall, 3) if stopped == "ok" else None,
        detail=detail,
    )


_DAGSTER_STEP = re.compile(r'Finished execution of step "(\w+)" in ([\w.]+)\.')
_DAGSTER_RUN = re.compile(r"Finished steps in process \(pid: \d+\) in ([\w.]+)")


def _seconds(duration: str) -> float:
    """Dagster's format_duration back to seconds: '533ms', '2.1s', '4m52s', '1h4m'."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", duration))


def dagster_timings(log_text: str) -> dict:
    """Seconds per asset step and for all steps together, from the run's event log lines."""
    timings: dict = {
        "asset_s": {m[1]: round(_seconds(m[2]), 2) for m in _DAGSTER_STEP.finditer(log_text)}
    }
    run = _DAGSTER_RUN.search(log_text)
    if run:
        timings["all_steps_s"] = round(_seconds(run[1]), 2)
    return timings


def time_cog_copy(geotiff: Path, scratch: Path) -> dict:
    """GDAL's COG copy of the project's geotiff, alone: the share of the graph no tuning removes.

    The project writes its COG as GDAL requires: an uncompressed band-sequential raster with
    overviews, then the COG driver's copy, which compresses every tile. Here that copy is timed
    on its own, with the project's default codec and level, from an intermediate made (untimed)
    of the project's own output and still in the page cache.
    """
    import rasterio

    from geocluster_dagster.defs.config import GeoTiffConfig
    from geocluster_dagster.export import build_overviews, copy_to_cog

    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    source, target = scratch / "uncompressed.tif", scratch / "cog.tif"
    try:
        with rasterio.open(geotiff) as src:
            profile = {k: v for k, v in src.profile.items() if k not in ("compress", "predictor")}
            profile["interleave"] = "band"
            with rasterio.open(source, "w", **profile) as dst:
                for _, window in src.block_windows(1):
                    dst.write(src.read(window=window), window=window)
        build_overviews(source, WINDOW, "average")
        config = GeoTiffConfig()
        started = time.perf_counter()
        copy_to_cog(source, target, config.compress, config.compress_level, WINDOW)
        seconds = time.perf_counter() - started
        return {
            "cog_copy_s": round(seconds, 2),
            "cog_copy_settings": f"{config.compress} level {config.compress_level}",
            "cog_copy_mb": round(target.stat().st_size / 2**20, 1),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _warm_page_cache(inputs: Inputs) -> None:
    """Read every input file once, so no step pays for (or profits from) a cold disk."""
    for rel in inputs.files:
        with (inputs.root / rel).open("rb") as f:
            while f.read(1 << 24):
                pass


def run_size(
    size: int, args: argparse.Namespace, inputs: Inputs, script: Path
) -> list[Measurement]:
    work = args.work.resolve()
    logs = work / "logs"
    megapixels = size * size * len(_acquisitions()) / 1e6
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results = []
    for step in args.steps:
        _warm_page_cache(inputs)
        if step == "project":
            output = work / "project_output" / f"{size}"
            shutil.rmtree(output, ignore_errors=True)
            output.mkdir(parents=True)
            config = output.parent / f"run_config_{size}.yaml"
            config.write_text(
                json.dumps({"ops": {"band_stack": {"config": {"bands": list(PROJECT_BANDS)}}}})
            )
            step_env = {
                **env,
                "GEOCLUSTER_OUTPUT": str(output),
                "GEOCLUSTER_STAC_URL": str(inputs.catalog),
                "GEOCLUSTER_AOI_REGISTRY": str(inputs.aoi_registry),
                "GEOCLUSTER_STAC_SIGN": "none",
                "DAGSTER_HOME": str(output / ".dagster_home"),
            }
            step_env.pop("GEOCLUSTER_DASK_SCHEDULER", None)
            (output / ".dagster_home").mkdir()
            cmd = [sys.executable, "-m", "geocluster_dagster", "materialize"]
            cmd += ["--aoi", inputs.aoi_id, "--month", MONTH, "--config", str(config)]
        else:
            output = work / f"{step}_output" / f"{size}"
            shutil.rmtree(output, ignore_errors=True)
            step_env = env
            cmd = [sys.executable, str(script), "_step", step, "--inputs", str(inputs.root)]
            cmd += ["--out", str(output), "--threads", str(args.threads), "--seed", "0"]
        result = measure(
            step,
            cmd,
            step_env,
            logs / f"{size}_{step}.log",
            megapixels,
            args.timeout,
            args.memory_guard_mb,
        )
        if step == "project":
            result.detail.update(dagster_timings(Path(result.detail["log"]).read_text()))
        if step == "project" and result.status == "ok":
            result.detail["output_mb"] = round(
                sum(p.stat().st_size for p in output.rglob("*") if p.is_file()) / 2**20, 1
            )
            (geotiff,) = (output / "geotiff").rglob("*.tif")
            result.detail.update(time_cog_copy(geotiff, work / "cog_copy"))
        if not args.keep_outputs:
            shutil.rmtree(output, ignore_errors=True)
        print(f"  {step}: {result.status}, {result.wall_s} s, peak {result.peak_mb} MB", flush=True)
        results.append(result)
    return results


# --------------------------------------------------------------------------------------------
# Report


def machine_info() -> dict:
    import psutil

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in (
        "geocluster_dagster",
        "numpy",
        "rasterio",
        "rioxarray",
        "xarray",
        "dask",
        "distributed",
        "odc-stac",
        "scikit-learn",
        "dagster",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        import rasterio

        versions["GDAL"] = rasterio.__gdal_version__
    except ImportError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_mb": round(psutil.virtual_memory().total / 2**20),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "versions": versions,
    }


def _ratios(steps: dict[str, dict]) -> dict:
    """3/1 = project / floor wall; 2/3 = baseline / project wall (a lower bound if cut short)."""
    floor, baseline, project = (steps.get(name) for name in STEPS)
    ratios: dict = {}
    if floor and project and floor["status"] == project["status"] == "ok":
        ratios["project_over_floor"] = round(project["wall_s"] / floor["wall_s"], 2)
        if "cog_copy_s" in project["detail"]:
            ratios["cog_copy_over_floor"] = round(
                project["detail"]["cog_copy_s"] / floor["wall_s"], 2
            )
    if baseline and project and project["status"] == "ok":
        value = round(baseline["wall_s"] / project["wall_s"], 2)
        if baseline["status"] == "ok":
            ratios["baseline_over_project"] = value
        elif baseline["status"] in ("timeout", "oom"):
            ratios["baseline_over_project_at_least"] = value
    return ratios


def _cell(step: dict) -> list[str]:
    if step["status"] == "ok":
        return [f"{step['wall_s']:.1f}", f"{step['mpx_s']:.2f}", f"{step['peak_mb']:.0f}", "ok"]
    what = {"timeout": "timeout", "oom": "OOM", "failed": "failed"}[step["status"]]
    what += f" ({step['detail'].get('stopped_by')})"
    note = f"did not finish: {what} after {step['wall_s']:.0f} s, peak {step['peak_mb']:.0f} MB"
    return [f"≥ {step['wall_s']:.1f}", "-", f"{step['peak_mb']:.0f}", note]


def render_markdown(report: dict) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Run {report['finished']} with `{report['command']}`.",
        "",
        "| size (px) | step | wall s | Mpx/s | peak MB | status |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for entry in report["sizes"]:
        for name in STEPS:
            if name in entry["steps"]:
                cells = _cell(entry["steps"][name])
                lines.append(f"| {entry['size']}² | {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| size (px) | 3/1 project ÷ floor | 2/3 baseline ÷ project |",
        "|---:|---:|---:|",
    ]
    for entry in report["sizes"]:
        r = entry["ratios"]
        over_floor = r.get("project_over_floor")
        over_project = r.get("baseline_over_project")
        if over_project is None and "baseline_over_project_at_least" in r:
            over_project = f"≥ {r['baseline_over_project_at_least']}"
        lines.append(f"| {entry['size']}² | {over_floor or '-'} | {over_project or '-'} |")
    lines += [
        "",
        "Project, seconds per asset (Dagster step durations; the rest of its wall time is "
        "start-up: imports, instance, AOI sync, Dask cluster):",
        "",
    ]
    for entry in report["sizes"]:
        project = entry["steps"].get("project")
        if project and project["detail"].get("asset_s"):
            assets = ", ".join(f"{k} {v}" for k, v in project["detail"]["asset_s"].items())
            lines.append(f"* {entry['size']}²: {assets}")
    copies = [
        (entry["size"], entry["steps"]["project"]["detail"], entry["ratios"])
        for entry in report["sizes"]
        if "cog_copy_over_floor" in entry["ratios"]
    ]
    if copies:
        lines += [
            "",
            "GDAL's COG copy of the project's geotiff alone (the last stage of writing it: the "
            "COG driver compresses every tile of an uncompressed raster with overviews, here in "
            "the page cache), with the project's default codec:",
            "",
        ]
        for size, detail, ratios in copies:
            lines.append(
                f"* {size}²: {detail['cog_copy_s']} s ({detail['cog_copy_settings']}, "
                f"{detail['cog_copy_mb']:.0f} MB) = {ratios['cog_copy_over_floor']} x the floor"
            )
    machine = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines += [
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cores']} logical cores "
        f"({machine['physical_cores']} physical), {machine['ram_mb']} MB RAM, "
        f"Python {machine['python']}, {machine['platform']}, commit {machine['git_commit']}.",
        "",
        f"Versions: {versions}.",
        "",
        "Inputs per size: two dates x (SR_B1..B7, ST_B10, QA_PIXEL) uint16 deflate COGs, 512 px "
        "tiles, synthetic landscape from real spyndex Landsat spectra with the demo's clouds. "
        "*wall s*: subprocess launch to exit, start-up and imports included; *Mpx/s*: "
        "size² x 2 dates / wall s; *peak MB*: peak RSS of the step's process tree. "
        "Page cache warm for every step.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_step"]:
        _run_step(argv[1:])
        return 0
    import psutil

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 8000])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "geocluster_benchmark",
        help="Generated inputs (cached across runs), step outputs and logs; GBs at full size.",
    )
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--timeout", type=float, default=1800.0, help="Per step, seconds.")
    parser.add_argument(
        "--memory-guard-mb",
        type=float,
        default=round(0.8 * psutil.virtual_memory().total / 2**20),
        help="Kill a step whose process tree holds more than this (default 80%% of RAM).",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="Floor threads.")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="Input builders.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the input generator.")
    parser.add_argument("--keep-outputs", action="store_true", help="Keep the steps' outputs.")
    args = parser.parse_args(argv)
    script = Path(__file__).resolve()

    entries = []
    for size in args.sizes:
        print(f"== {size} x {size} px", flush=True)
        inputs = build_inputs(args.work.resolve(), size, args.seed, args.jobs)
        steps = run_size(size, args, inputs, script)
        by_name = {m.step: dataclasses.asdict(m) for m in steps}
        entries.append(
            {
                "size": size,
                "dates": len(_acquisitions()),
                "megapixels": size * size * len(_acquisitions()) / 1e6,
                "inputs": str(inputs.root),
                "input_mb": round(
                    sum((inputs.root / f).stat().st_size for f in inputs.files) / 2**20, 1
                ),
                "steps": by_name,
                "ratios": _ratios(by_name),
            }
        )
    report = {
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/run_benchmark.py " + " ".join(argv),
        "definitions": {
            "wall_s": "subprocess launch to exit, Python start-up and imports included",
            "mpx_s": "size^2 x dates / wall_s / 1e6 (a pixel = one location on one date)",
            "peak_mb": "max of the process tree's summed RSS (polled every 0.2 s) and ru_maxrss",
            "project_over_floor": "project wall_s / floor wall_s (ratio 3/1)",
            "baseline_over_project": "baseline wall_s / project wall_s (ratio 2/3)",
            "cog_copy_over_floor": "GDAL's COG copy of the project's geotiff, timed alone, "
            "/ floor wall_s",
        },
        "machine": machine_info(),
        "sizes": entries,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    markdown = render_markdown(report)
    (args.out / "results.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
