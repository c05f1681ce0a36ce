"""Ten SIGKILLs at seeded random moments of a partition's run, folder swaps included.

After each kill every product of the partition is whole (the earlier version or the new one,
never a missing or torn one); the run after them writes what an unkilled run wrote, leaves no
temporaries, and the killed runs are marked failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window

from geocluster_dagster.demo import DEMO_MONTH

from .helpers import item_file

pytestmark = pytest.mark.slow

KILLS = 10
PART = f"demo/{DEMO_MONTH}"


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "geocluster_dagster", "--output", str(out), "demo"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "DAGSTER_"))}


def _raster_whole(path: Path) -> str:
    """Opens, its last block reads; returns a digest of its pixels."""
    with rasterio.open(path) as src:
        last = Window(src.width - 1, src.height - 1, 1, 1)
        src.read(window=last)
        return hashlib.sha256(src.read().tobytes()).hexdigest()


def _whole(out: Path) -> dict[str, str]:
    """Every product of the partition, checked whole; a digest of what each holds."""
    digests = {}
    for name in ("stac_items", "band_stack"):
        json.loads((out / name / f"{PART}.json").read_text())
    digests["mosaic"] = _raster_whole(out / "mosaic" / f"{PART}.tif")
    for name in ("bands", "indices"):
        digests[name] = _raster_whole(out / "geotiff" / PART / f"{name}.tif")
    clusters = out / "clusters" / PART
    digests["cluster_map"] = _raster_whole(clusters / "cluster_map.tif")
    digests["model"] = hashlib.sha256((clusters / "model.json").read_bytes()).hexdigest()
    json.loads((clusters / "summary.json").read_text())
    digests["signatures"] = hashlib.sha256((clusters / "signatures.csv").read_bytes()).hexdigest()
    diagnostics = out / "diagnostics" / PART
    pngs = sorted(diagnostics.glob("*.png"))
    assert len(pngs) == 9, pngs
    for png in pngs:
        with Image.open(png) as image:
            image.verify()
    digests["scores"] = json.dumps(json.loads((diagnostics / "scores.json").read_text()))
    _published_truly(out)
    return digests


def _published_truly(out: Path) -> bool:
    """The partition's STAC Item, if the catalog has it, lists every file with the checksum the
    file has now, and its report; withdrawn (a kill while a run rewrote the products), neither
    the Item nor its link in the collection is left. True if it is published."""
    aoi_id, date = PART.split("/")
    item_path = item_file(out, aoi_id, date)
    year = item_path.parent / "catalog.json"
    catalog = json.loads(year.read_text()) if year.exists() else {"links": []}
    linked = [link["href"] for link in catalog["links"] if link["rel"] == "item"]
    if not item_path.exists():
        assert f"./{date}.json" not in linked, linked
        return False
    assert f"./{date}.json" in linked, linked
    item = json.loads(item_path.read_text())
    for key, asset in item["assets"].items():
        target = (item_path.parent / asset["href"]).resolve()
        assert target.exists(), (key, target)
        if "file:checksum" in asset:
            digest = "1220" + hashlib.sha256(target.read_bytes()).hexdigest()
            assert asset["file:checksum"] == digest, (key, target)
    assert (out / "report" / f"{PART}.html").read_text().rstrip().endswith("</html>")
    return True


def _runs(out: Path) -> list[dg.DagsterRun]:
    home = out / ".dagster_home"
    if not (home / "dagster.yaml").exists():
        return []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return list(instance.get_runs())


def _wait_for_run(out: Path, known: int, process: subprocess.Popen, limit_s: float) -> bool:
    """Polls the instance until the process has created its run (False if it never did)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and process.poll() is None:
        if len(_runs(out)) > known:
            return True
        time.sleep(0.1)
    return False


def test_ten_kills_at_random_moments_leave_every_product_whole(tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    first = subprocess.run(_command(out), env=_env(), capture_output=True, text=True)
    wall = time.monotonic() - started
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    expected = _whole(out)
    assert _published_truly(out)
    (run,) = _runs(out)
    with dg.DagsterInstance.from_config(str(out / ".dagster_home")) as instance:
        stats = instance.get_run_stats(run.run_id)
    assert stats.start_time and stats.end_time
    run_s = stats.end_time - stats.start_time

    # Moments are drawn relative to the run, not to the process: how long imports take before
    # the run exists differs from machine to machine, and a kill then proves little. Two kills
    # land in the start-up (before or while the run is created), eight inside the run itself.
    rng = random.Random(20261201)
    moments = []
    in_run = 0
    for kill in range(KILLS):
        known = len(_runs(out))
        process = subprocess.Popen(
            _command(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if kill < 2:
            moment = rng.uniform(0.5, max(1.0, wall - run_s))
            time.sleep(moment)
        else:
            assert _wait_for_run(out, known, process, limit_s=wall * 3), "the run never started"
            moment = rng.uniform(0.0, 0.9 * run_s)
            time.sleep(moment)
        process.send_signal(signal.SIGKILL)
        process.wait()
        moments.append(("startup" if kill < 2 else "run", round(moment, 2)))
        runs = _runs(out)
        if len(runs) > known and runs[0].status != dg.DagsterRunStatus.SUCCESS:
            in_run += 1
        # Whatever the moment, every product is whole and holds what a full run writes (the
        # same inputs and settings: the earlier version and the new one are the same).
        assert _whole(out) == expected, moments

    last = subprocess.run(_command(out), env=_env(), capture_output=True, text=True)
    assert last.returncode == 0, last.stdout[-2000:] + last.stderr[-2000:]
    assert _whole(out) == expected
    assert _published_truly(out)  # a run that ends publishes the Item again
    leftovers = [
        p
        for p in out.rglob(".*")
        if p.name.endswith((".tmp", ".old", ".link", ".tiled.tif"))
        and ".dagster_home" not in p.parts
    ]
    assert leftovers == []
    for folder in ("clusters", "diagnostics"):
        versions = [p for p in (out / folder / "demo").iterdir() if p.name.startswith(".")]
        assert len(versions) == 1, versions  # the one the product's link points to
    statuses = [run.status for run in _runs(out)]
    # Every kill that left a STARTED run has it marked failed by the next command.
    assert dg.DagsterRunStatus.STARTED not in statuses
    assert statuses.count(dg.DagsterRunStatus.FAILURE) == in_run, (moments, statuses)
    # The sampling means something only if most kills landed inside a run.
    assert in_run >= KILLS // 2, moments
