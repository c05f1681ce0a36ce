"""What every job of the code location runs with: its resources, and its partitioned jobs
resolved with them (for a batch run, which runs them itself)."""

import functools

import dagster as dg

from ..errors import ConfigError
from .assets import ASSETS
from .jobs import accuracy_job, pipeline_job
from .outputs import OutputStore
from .resources import AOIRegistry, DaskCluster, StacCatalog
from .sensors import ImageryWatch


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


#: The jobs partitioned by AOI x date window, which a batch run can run partition by partition.
PARTITIONED_JOBS = (pipeline_job, accuracy_job)


def check_partitioned(name: str) -> None:
    """Refuse (ConfigError) a job name that is none of :data:`PARTITIONED_JOBS`."""
    if name not in {job.name for job in PARTITIONED_JOBS}:
        raise ConfigError(
            f"ops.run_partitions.config.job: {name!r} is not a job partitioned by AOI x date "
            f"window: use one of {[job.name for job in PARTITIONED_JOBS]}."
        )


@functools.cache
def _partitioned_jobs() -> dg.Definitions:
    """The partitioned jobs with the code location's resources and executor, built once."""
    return dg.Definitions(
        assets=ASSETS,
        jobs=[*PARTITIONED_JOBS],
        resources=build_resources(),
        executor=dg.in_process_executor,
    )


def partitioned_job(name: str) -> dg.JobDefinition:
    """The code location's AOI x date job ``name`` with its resources and executor, as a run of
    it executes (ConfigError when ``name`` is none of :data:`PARTITIONED_JOBS`)."""
    check_partitioned(name)
    return _partitioned_jobs().resolve_job_def(name)
