"""The job that materializes the whole graph for one partition, in one process."""

from __future__ import annotations

import dagster as dg

from .partitions import partitions

# In-process: the Dask cluster is started once per run and shared by all six steps, instead of
# once per step in a subprocess (seconds each). Parallelism comes from Dask, not from steps.
pipeline_job = dg.define_asset_job(
    name="geocluster_pipeline",
    # cluster_model is partitioned by AOI alone, so it runs on its own (see its asset).
    selection=dg.AssetSelection.groups("geocluster") - dg.AssetSelection.assets("cluster_model"),
    partitions_def=partitions,
    executor_def=dg.in_process_executor,
    description="stac_items -> band_stack -> mosaic -> geotiff -> clusters -> diagnostics for one AOI x date window.",
)

reference_job = dg.define_asset_job(
    name="geocluster_reference",
    selection=dg.AssetSelection.assets("cluster_model"),
    executor_def=dg.in_process_executor,
    description="cluster_model for one AOI: its reference model, fitted on the geotiffs of its "
    "materialized date partitions.",
)
