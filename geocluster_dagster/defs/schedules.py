"""Schedules: refresh the running month for every registered AOI."""

import dagster as dg

from .jobs import pipeline_job
from .partitions import AOI_PARTITIONS, date_partitions, partition_key


@dg.schedule(
    job=pipeline_job,
    cron_schedule="0 6 * * 1",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every Monday, rematerialize the current month for every AOI (new scenes arrive every 8 days).",
)
def weekly_refresh_schedule(
    context: dg.ScheduleEvaluationContext,
) -> list[dg.RunRequest] | dg.SkipReason:
    # The month that contains the tick: still filling up with scenes, hence the weekly refresh.
    month = date_partitions.get_partition_key_for_timestamp(
        context.scheduled_execution_time.timestamp()
    )
    aois = sorted(context.instance.get_dynamic_partitions(AOI_PARTITIONS))
    if not aois:
        return dg.SkipReason("No AOI partitions registered yet.")
    return [
        dg.RunRequest(
            run_key=f"{aoi}|{month}|{context.scheduled_execution_time:%Y%m%d}",
            partition_key=partition_key(aoi, month),
        )
        for aoi in aois
    ]
