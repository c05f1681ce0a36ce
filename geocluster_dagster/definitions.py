"""The Dagster code location: `dagster dev -m geocluster_dagster.definitions` (or workspace.yaml)."""

from __future__ import annotations

import os

import dagster as dg

from .defs.assets import ASSETS
from .defs.jobs import pipeline_job
from .defs.outputs import OutputStore
from .defs.resources import AOIRegistry, DaskCluster, StacCatalog
from .defs.schedules import weekly_refresh_schedule
from .defs.sensors import ImageryWatch, aoi_registry_sensor, new_imagery_sensor
from .search import DEFAULT_COLLECTION


def aoi_registry_from_env() -> AOIRegistry:
    """The AOI registry env GEOCLUSTER_AOI_REGISTRY names (default: the demo's)."""
    return AOIRegistry(path=os.environ.get("GEOCLUSTER_AOI_REGISTRY", "demo"))


def build_resources() -> dict[str, object]:
    """Resources from environment variables, so one code location serves any deployment."""
    return {
        "aoi_registry": aoi_registry_from_env(),
        "stac": StacCatalog(
            url=os.environ.get("GEOCLUSTER_STAC_URL", "demo"),
            sign=os.environ.get("GEOCLUSTER_STAC_SIGN", "auto"),
        ),
        "dask": DaskCluster(scheduler_address=os.environ.get("GEOCLUSTER_DASK_SCHEDULER") or None),
        "outputs": OutputStore(),
        "imagery_watch": ImageryWatch(
            collection=os.environ.get("GEOCLUSTER_WATCH_COLLECTION", DEFAULT_COLLECTION)
        ),
    }


defs = dg.Definitions(
    assets=ASSETS,
    jobs=[pipeline_job],
    schedules=[weekly_refresh_schedule],
    sensors=[aoi_registry_sensor, new_imagery_sensor],
    resources=build_resources(),
    executor=dg.in_process_executor,
)
