"""The Dagster code location: `dg dev -m geocluster_dagster.definitions` (or workspace.yaml)."""

from __future__ import annotations

import dagster as dg

from .defs.assets import ASSETS
from .defs.automation import automation_sensor
from .defs.batch import batch_job
from .defs.jobs import accuracy_job, pipeline_job, reference_job
from .defs.location import build_resources
from .defs.run_health import dead_run_sensor
from .defs.schedules import weekly_refresh_schedule
from .defs.sensors import aoi_registry_sensor, new_imagery_sensor

defs = dg.Definitions(
    assets=ASSETS,
    jobs=[pipeline_job, reference_job, accuracy_job, batch_job],
    schedules=[weekly_refresh_schedule],
    sensors=[aoi_registry_sensor, new_imagery_sensor, dead_run_sensor, automation_sensor],
    resources=build_resources(),
    executor=dg.in_process_executor,
)
