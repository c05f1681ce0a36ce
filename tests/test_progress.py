"""Progress of the long passes: what the listeners get, and what reaches a run's log."""

from __future__ import annotations

import time

import dagster as dg

from geocluster_dagster import progress
from geocluster_dagster.progress import Throttled, Update, heartbeat, listening, tracked

from .helpers import KEY, run


def test_tracked_reports_every_item_and_the_end():
    seen: list[Update] = []
    with listening(seen.append):
        assert list(tracked(iter("abc"), "letters", total=3, unit="letters")) == ["a", "b", "c"]
    assert [(u.done, u.total, u.finished) for u in seen] == [
        (0, 3, False),
        (1, 3, False),
        (2, 3, False),
        (3, 3, False),
        (3, 3, True),
    ]
    assert seen[-1].describe().startswith("letters: done, 3/3 letters (100 %), ")
    # Nobody listens outside the block.
    list(tracked(iter("de"), "letters", total=2))
    assert len(seen) == 5


def test_heartbeat_beats_while_the_block_runs():
    seen: list[Update] = []
    with listening(seen.append), heartbeat("a GDAL call", every_s=0.05):
        time.sleep(0.3)
    beats = [u for u in seen if not u.finished]
    assert len(beats) >= 3  # the start, then one every 0.05 s
    assert seen[-1].finished and seen[-1].elapsed_s >= 0.3
    assert seen[-1].describe().startswith("a GDAL call: done, 0.3 s")


def test_throttled_passes_one_line_per_interval_and_long_tasks_ends():
    said: list[str] = []
    log = Throttled(lambda u: said.append(u.describe()), every_s=5.0, min_task_s=1.0)
    for second in range(13):
        log(Update("blocks", second, 12, "blocks", float(second)))
    log(Update("blocks", 12, 12, "blocks", 12.0, finished=True))
    log(Update("short", 0, 4, "blocks", 0.0))
    log(Update("short", 4, 4, "blocks", 0.4, finished=True))
    assert said == [
        "blocks: 5/12 blocks (42 %), 5.0 s, 1.0 blocks/s",
        "blocks: 10/12 blocks (83 %), 10.0 s, 1.0 blocks/s",
        "blocks: done, 12/12 blocks (100 %), 12.0 s, 1.0 blocks/s",
    ]


def test_a_run_logs_the_progress_of_its_passes(demo, dask_cluster, tmp_path, monkeypatch):
    """What the UI shows in the run's log: the passes of each step, blocks done of total."""
    monkeypatch.setattr(progress, "LOG_MIN_TASK_S", 0.0)
    instance = dg.DagsterInstance.ephemeral()
    result = run(
        tmp_path,
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        instance=instance,
        key=KEY,
    )
    assert result.success
    lines: dict[str, list[str]] = {}
    for entry in instance.all_logs(result.run_id):
        if entry.dagster_event is None and entry.step_key:
            lines.setdefault(entry.step_key, []).append(entry.user_message)
    expected = {
        "mosaic": "compositing the mosaic: done, ",
        "geotiff": "writing the geotiff's indices: done, ",
        "clusters": "labelling the cluster map: done, ",
    }
    for step, start in expected.items():
        assert any(line.startswith(start) for line in lines[step]), (step, lines[step])
    written = next(
        line for line in lines["geotiff"] if line.startswith("writing the geotiff's indices: done")
    )
    assert " blocks (100 %), " in written
    # the bands are the mosaic's file: nothing decodes or writes them again
    assert not any("geotiff's bands" in line for line in lines["geotiff"])
    assert any(
        "compositing the mosaic: compressing into the COG layout" in x for x in lines["mosaic"]
    )
    # the fit sample was drawn while the geotiff's indices were written: no pass of its own
    assert not any(line.startswith("sampling pixels") for line in lines["clusters"])
    # n_clusters: auto fits the elbow curve in clusters; diagnostics reuse it
    elbow = "fitting the elbow curve: done, 11/11 k (100 %)"
    assert any(line.startswith(elbow) for line in lines["clusters"]), lines["clusters"]
    assert not any(line.startswith("fitting the elbow curve") for line in lines["diagnostics"])
    assert any("compressing into the COG layout: done" in line for line in lines["geotiff"])
