"""Runs whose process was killed are marked failed, not left STARTED for ever.

Dagster's default run launcher (the one `dg dev` and the CLI's in-process runs use) cannot
check whether a run's worker is alive, so run monitoring never notices a run whose process was
killed (out of memory, SIGKILL, a reboot): the run stays STARTED in the UI, and a backfill
waits on it. So every run of this code location tags itself with its host and process id when
it starts (the `outputs` resource does it); the CLI, before each command, and the
`dead_run_sensor`, every minute in the daemon, mark failed the STARTED runs of this host whose
process is gone.
"""

from __future__ import annotations

import os
import socket

import dagster as dg

from ..storage import pid_alive

RUN_HOST_TAG = "geocluster/host"
RUN_PID_TAG = "geocluster/pid"


def tag_this_process(instance: dg.DagsterInstance, run_id: str) -> None:
    """Record on the run which process on which host executes it."""
    instance.add_run_tags(
        run_id, {RUN_HOST_TAG: socket.gethostname(), RUN_PID_TAG: str(os.getpid())}
    )


def dead_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """STARTED runs of this host whose tagged process no longer exists."""
    runs = instance.get_runs(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED],
            tags={RUN_HOST_TAG: socket.gethostname()},
        )
    )
    return [
        run
        for run in runs
        if run.tags.get(RUN_PID_TAG, "").isdigit() and not pid_alive(int(run.tags[RUN_PID_TAG]))
    ]


def mark_dead_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Mark failed every run :func:`dead_runs` finds; returns them."""
    found = dead_runs(instance)
    for run in found:
        instance.report_run_failed(
            run,
            message=(
                f"The process of this run (pid {run.tags[RUN_PID_TAG]} on "
                f"{run.tags[RUN_HOST_TAG]}) is gone: it was killed or crashed while the run was "
                "STARTED. Its partition's earlier products are intact (every product is written "
                "to a temporary path and renamed): launch the partition again."
            ),
        )
    return found


@dg.sensor(
    name="dead_run_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks failed the STARTED runs of this host whose process was killed, so that "
    "the UI shows them failed and backfills stop waiting on them.",
)
def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    found = mark_dead_runs(context.instance)
    if found:
        return dg.SkipReason(
            f"Marked {len(found)} run(s) failed, their process gone: "
            + ", ".join(run.run_id[:8] for run in found)
        )
    return dg.SkipReason("No run of this host has lost its process.")
