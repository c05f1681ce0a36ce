"""The job that materializes the whole graph for one partition, in one process."""

from __future__ import annotations

import dagster as dg

from .partitions import partitions

# In-process: the Dask cluster is started once per run and shared by all six steps, instead of
# once per step in a subprocess (seconds each). Parallelism comes from Dask, not from steps.
pipeline_job = dg.define_asset_job(
    name="geocluster_pipeline",
    selection=dg.AssetSelection.groups("geocluster"),
    partitions_def=partitions,
    executor_def=dg.in_process_executor,
    description="stac_items -> band_stack -> mosaic -> geotiff -> clusters -> diagnostics for one AOI x date window.",
)
