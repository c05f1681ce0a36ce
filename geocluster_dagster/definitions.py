"""The Dagster code location: `dagster dev -m geocluster_dagster.definitions` (or workspace.yaml)."""

from __future__ import annotations

import dagster as dg

from .defs.assets import ASSETS
from .defs.automation import automation_sensor
from .defs.jobs import accuracy_job, pipeline_job, reference_job
from .defs.outputs import OutputStore
from .defs.resources import AOIRegistry, DaskCluster, StacCatalog
from .defs.run_health import dead_run_sensor
from .defs.schedules import weekly_refresh_schedule
from .defs.sensors import ImageryWatch, aoi_registry_sensor, new_imagery_sensor


def build_resources() -> dict[str, object]:
    """The resources, with nothing bound here: every field left unset reads its environment
    variable (GEOCLUSTER_STAC_URL, ...) when a run uses it, so one code location serves any
    deployment and run config that sets one field keeps the others (see `defs.resources`)."""
    return {
        "aoi_registry": AOIRegistry(),
        "stac": StacCatalog(),
        "dask": DaskCluster(),
        "outputs": OutputStore(),
        "imagery_watch": ImageryWatch(),
    }


defs = dg.Definitions(
    assets=ASSETS,
    jobs=[pipeline_job, reference_job, accuracy_job],
    schedules=[weekly_refresh_schedule],
    sensors=[aoi_registry_sensor, new_imagery_sensor, dead_run_sensor, automation_sensor],
    resources=build_resources(),
    executor=dg.in_process_executor,
)
