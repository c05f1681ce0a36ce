"""The Dagster layer: partitions, resources, output paths, run config, assets, sensors, schedules.

It only wires the plain modules of ``geocluster_dagster`` together; no science lives here.
"""
