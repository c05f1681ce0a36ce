"""The Dagster layer: partitions, resources, IO manager, assets, sensors and schedules.

It only wires the plain modules of ``geocluster_dagster`` together; no science lives here.
"""
