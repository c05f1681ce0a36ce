"""The jobs: the whole graph for one AOI x date partition, and an AOI's reference model."""

from __future__ import annotations

import dagster as dg

# In-process: the Dask cluster is started once per run and shared by all the steps, instead of
# once per step in a subprocess (seconds each). Parallelism comes from Dask, not from steps.
pipeline_job = dg.define_asset_job(
    name="geocluster_pipeline",
    # cluster_model is partitioned by AOI alone, so it runs on its own (see its asset).
    # Its partitions are those of the assets it selects (AOI x date window).
    # accuracy runs only where reference data exists, in its own job (geocluster_accuracy).
    selection=dg.AssetSelection.groups("geocluster")
    - dg.AssetSelection.assets("cluster_model", "accuracy"),
    executor_def=dg.in_process_executor,
    description="stac_items -> band_stack -> mosaic -> geotiff -> clusters -> diagnostics, "
    "cluster_change and stac_item, for one AOI x date window.",
)

reference_job = dg.define_asset_job(
    name="geocluster_reference",
    selection=dg.AssetSelection.assets("cluster_model"),
    executor_def=dg.in_process_executor,
    description="cluster_model for one AOI: its reference model, fitted on the geotiffs of its "
    "materialized date partitions.",
)

accuracy_job = dg.define_asset_job(
    name="geocluster_accuracy",
    selection=dg.AssetSelection.assets("accuracy", "stac_item"),
    executor_def=dg.in_process_executor,
    description="accuracy for one AOI x date window: its cluster map against the AOI's "
    "reference data (the registry's reference_data), then its STAC Item and report again, "
    "with the accuracy in them.",
)
