"""The floor and baseline steps; each runs in a child process (``run_benchmark.py _step NAME``).

* ``floor``: read and decode every block of every input file (18 per size) with rasterio, a
  thread per core, one dataset handle per thread and file, nothing else;
* ``baseline``: the plain script of issue 4: every band of both dates opened with rioxarray,
  QA-masked, merged with ``rioxarray.merge.merge_arrays``, ``MiniBatchKMeans(batch_size=1024)
  .fit`` on every valid pixel, silhouette on a 10,000-pixel sample, cluster map written as a
  GeoTIFF.

A step's child prints what the step returns as its last line, a JSON object after RESULT_TAG.
Each step imports its libraries itself: a step's wall time includes its imports, and the floor
must not pay for the baseline's.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

STEPS = ("floor", "baseline", "project")
"""The measured steps, in the order they run and are reported (project: ``benchmarks.project``)."""

BANDS = ("coastal", "blue", "green", "red", "nir", "swir16", "swir22", "lwir")
"""The bands the baseline and the project read: all 8, so every step reads the same files."""

MASK_BITS = 0b111111  # QA_PIXEL fill, dilated cloud, cirrus, cloud, shadow, snow (as the project)
RESULT_TAG = "BENCH_RESULT "  # prefix of the JSON line a step prints last


def step_floor(inputs: Path, threads: int) -> dict[str, Any]:
    """Read and decode every block of every input COG, one thread per core."""
    import rasterio

    paths = sorted(str(p) for p in inputs.rglob("*.TIF"))
    tasks = []
    for path in paths:
        with rasterio.open(path) as ds:
            tasks += [(path, window) for _, window in ds.block_windows(1)]
    local = threading.local()
    opened: list[rasterio.io.DatasetReader] = []
    lock = threading.Lock()

    def read(task: tuple[str, rasterio.windows.Window]) -> int:
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


def step_baseline(inputs: Path, out_dir: Path, seed: int) -> dict[str, Any]:
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
        # the "stage" lines in the log say how far a step got when it is stopped
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
    for band in BANDS:
        per_date = []
        for item, ok in zip(items, clear, strict=True):
            asset = item.assets[find_asset_key(item, band)]
            scaling = asset.extra_fields["raster:bands"][0]
            da = rioxarray.open_rasterio(asset.href, masked=True).squeeze("band", drop=True)
            da = (da * scaling["scale"] + scaling["offset"]).where(ok)
            per_date.append(da.rio.write_nodata(np.nan, encoded=False))
        merged[band] = merge_arrays(per_date, nodata=np.nan)
    template = merged[BANDS[-1]]
    stage("read_merge")

    features = np.stack([merged[band].values.ravel() for band in BANDS], axis=1)
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
