"""Block-wise passes over lazy rasters: a few blocks computed at a time, handed over as numpy.

Every full-resolution pass of the pipeline (writing a GeoTIFF, drawing the pixel sample,
applying the cluster model) walks its array with :func:`iter_blocks`, so memory holds a few
blocks whatever the raster size. The array's graph is optimized once per pass and every batch
is a piece of that one graph: a distributed scheduler then never receives one key with two
different tasks, which it warns "can cause failures and deadlocks" (dask/dask#9888) and which
computing ``array.blocks[i, j]`` batch by batch does cause, each batch being fused its own way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask.array as da
import numpy as np
from dask.base import compute
from dask.delayed import delayed as delayed_call

#: Chunk edge in pixels of every lazily read raster (the band stack and the stored GeoTIFFs):
#: two source COG tiles of 512 px, and a block of 10 float32 bands stays at 40 MB.
CHUNK_SIZE = 1024


def iter_blocks(
    array: da.Array,
    *,
    in_flight: int = 4,
    apply: Callable[..., Any] | None = None,
    with_index: bool = False,
) -> Iterator[tuple[tuple[slice, ...], Any]]:
    """(index, block) for every block of ``array`` in C order, ``in_flight`` computed at once.

    ``index`` is the tuple of slices the block occupies in ``array``. Arrays chunked along
    their leading axis (e.g. bands) should be rechunked to one chunk there first, so that a
    block holds every band of its pixels.

    With ``apply``, each block is handed to ``apply`` inside its own task (on a worker, under a
    distributed scheduler) and ``(index, apply(block))`` is yielded instead: several results
    (e.g. a label block and its per-label sums) then come from one read of the block. With
    ``with_index``, ``apply(block, index)`` also gets where the block lies.

    The next batch is computed while the caller handles the current one (writes it, say), so
    the workers do not wait for the writer: at most ``2 * in_flight`` blocks are held.
    """
    edges = [np.cumsum((0, *chunks)) for chunks in array.chunks]
    delayed = array.to_delayed(optimize_graph=True)
    task = delayed_call(apply, pure=True) if apply is not None else None
    positions = list(np.ndindex(*delayed.shape))
    step = max(1, in_flight)
    batches = [positions[start : start + step] for start in range(0, len(positions), step)]

    def index_of(position: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(int(e[i]), int(e[i + 1])) for e, i in zip(edges, position, strict=True))

    def compute_batch(batch: list[tuple[int, ...]]) -> tuple[Any, ...]:
        results: tuple[Any, ...] = compute(
            *(
                delayed[p]
                if task is None
                else task(delayed[p], index_of(p))
                if with_index
                else task(delayed[p])
                for p in batch
            )
        )
        return results

    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="iter_blocks") as prefetch:
        pending = prefetch.submit(compute_batch, batches[0])
        for number, batch in enumerate(batches):
            results = pending.result()
            if number + 1 < len(batches):
                pending = prefetch.submit(compute_batch, batches[number + 1])
            for position, result in zip(batch, results, strict=True):
                yield index_of(position), np.asarray(result) if task is None else result
