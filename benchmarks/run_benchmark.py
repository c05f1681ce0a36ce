"""Benchmark: the I/O floor, the plain-script baseline and this project on full-scene inputs.

    python benchmarks/run_benchmark.py --sizes 4000 8000 --out benchmarks/results

For each size N this

1. builds (or reuses, see ``--work``) a local static STAC catalog of two Planetary-Computer-shaped
   ``landsat-c2-l2`` items (Landsat 8 and 9, June 2023) of N x N 30 m pixels, each with SR_B1..B7,
   ST_B10 and QA_PIXEL as separate uint16 deflate COGs with 512 px tiles, plus an AOI registry
   with one AOI covering the scene but a 2 % margin. Pixel values come from the demo's landscape
   (real spyndex Landsat spectra): one landscape block is rendered once and tiled over the scene
   with seeded flips and offsets; clouds, shadows, dilated rims, the QA codes and the DN encoding
   are the demo's own functions applied window by window, so no scene-sized array is ever held
   (``benchmarks.render``, ``benchmarks.inputs``);
2. runs three steps, each in its own subprocess, sequentially, after warming the page cache with
   the input files (all steps read warm files):

   * ``floor``: read and decode every block of every input file (18 per size) with rasterio,
     a thread per core, one dataset handle per thread and file, nothing else;
   * ``baseline``: the plain script of issue 4: every band of both dates opened with rioxarray,
     QA-masked, merged with ``rioxarray.merge.merge_arrays``, ``MiniBatchKMeans(batch_size=1024)
     .fit`` on every valid pixel, silhouette on a 10,000-pixel sample, cluster map written as a
     GeoTIFF; killed at ``--timeout`` or when its memory passes ``--memory-guard-mb``
     (``benchmarks.steps``; both run as ``run_benchmark.py _step NAME``);
   * ``project``: ``geocluster materialize --aoi <id> --month 2023-06`` on that catalog, i.e. the
     whole asset graph (all 8 bands so it reads the same files as the other two steps), seconds
     per asset from its Dagster instance's step records; then, as a reference, GDAL's COG copy
     of the project's geotiff is timed on its own: a part of the graph that only a faster codec
     can shorten (``benchmarks.project``);

3. writes ``results.json`` and ``results.md`` under ``--out`` and prints the table
   (``benchmarks.report``).

Definitions (``benchmarks.measure``): *wall s* is from launching the subprocess to its exit
(Python start-up and imports included); *Mpx/s* is N^2 x 2 dates / wall s (one pixel = one
location on one date, all its bands); *peak MB* is the peak resident memory of the step's whole
process tree: the larger of the tree's summed RSS and the kernel's high-water mark of the
step's own process (``VmHWM``), both polled every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script, Python puts benchmarks/ on sys.path, not the repo root: add the root so
    # the sibling modules import as the package `benchmarks` (here and in spawned workers).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.steps import RESULT_TAG, STEPS, step_baseline, step_floor  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, as ``_step NAME ...``, one floor or baseline step)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_step"]:
        _run_step(argv[1:])
        return 0
    return _run_benchmark(argv)


def _run_step(argv: Sequence[str]) -> None:
    """The child process of a floor or baseline step: run it, print its result line last."""
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


def _run_benchmark(argv: list[str]) -> int:
    """Every size: build or reuse its inputs, measure the steps; then write the report."""
    # Imported here, not at the top: a step's child process runs this file too, its start-up is
    # part of the step's wall time, and it needs none of these (nor dagster, psutil, pystac).
    from benchmarks.inputs import build_inputs
    from benchmarks.measure import Limits
    from benchmarks.report import build_report, size_entry, write_report
    from benchmarks.runner import run_size

    args = _parser().parse_args(argv)
    work = args.work.resolve()
    limits = Limits(timeout_s=args.timeout, guard_mb=args.memory_guard_mb)
    entries = []
    scene_steps = [step for step in args.steps if step in STEPS]
    for size in args.sizes if scene_steps else []:
        print(f"== {size} x {size} px", flush=True)
        inputs = build_inputs(work, size, args.seed, args.jobs)
        measured = run_size(
            size,
            inputs,
            scene_steps,
            work,
            limits,
            threads=args.threads,
            keep_outputs=args.keep_outputs,
        )
        entries.append(size_entry(size, inputs, measured))
    backfill = None
    if "backfill" in args.steps:
        from benchmarks.backfill import run_backfill

        print(
            f"== backfill: {args.backfill_aois} AOIs of {args.backfill_aoi_px}² px in the "
            f"{args.backfill_size}² scene"
        )
        inputs = build_inputs(work, args.backfill_size, args.seed, args.jobs)
        backfill = run_backfill(
            inputs,
            args.backfill_size,
            work,
            count=args.backfill_aois,
            side_px=args.backfill_aoi_px,
            tags=args.backfill_tags,
            batches=args.backfill_batches,
        )
        print(f"  {backfill['s_per_partition']} s per partition", flush=True)
    report = build_report("python benchmarks/run_benchmark.py " + " ".join(argv), entries, backfill)
    print(write_report(args.out, report))
    return 0


def _parser() -> argparse.ArgumentParser:
    """The benchmark's command line (the ``_step`` subcommand has its own)."""
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
    parser.add_argument(
        "--steps",
        nargs="+",
        choices=(*STEPS, "backfill"),
        default=[*STEPS, "backfill"],
        help="floor, baseline and project run at every --sizes; backfill once (many small AOIs "
        "through the daemon on PostgreSQL: benchmarks/backfill.py).",
    )
    parser.add_argument(
        "--backfill-size", type=int, default=8000, help="Scene the backfill's AOIs lie in."
    )
    parser.add_argument("--backfill-aois", type=int, default=20, help="AOIs the backfill runs.")
    parser.add_argument(
        "--backfill-aoi-px", type=int, default=1000, help="Side of each backfill AOI, pixels."
    )
    parser.add_argument(
        "--backfill-tags",
        type=json.loads,
        default={},
        help='Tags of the backfill\'s runs, as JSON, e.g. \'{"geocluster/figures": "false"}\'.',
    )
    parser.add_argument(
        "--backfill-batches",
        type=int,
        default=2,
        help="geocluster_batch runs the backfill's AOIs are split between (default 2, the "
        "shipped dagster.yaml's concurrent runs); 0: `dagster job backfill`, a run each.",
    )
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
    return parser


if __name__ == "__main__":
    sys.exit(main())
