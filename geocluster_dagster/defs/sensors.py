"""Sensors: keep the AOI partitions in step with the AOI registry."""

import dagster as dg

from ..errors import GeoclusterError
from .partitions import aoi_partitions
from .resources import AOIRegistry


def registry_changes(registry: AOIRegistry, known: set[str]) -> list[str]:
    """AOI ids in the registry that are not partitions yet, sorted."""
    return sorted(set(registry.load()) - known)


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds an AOI partition for every AOI that appears in the AOI registry.",
)
def aoi_registry_sensor(context: dg.SensorEvaluationContext, aoi_registry: AOIRegistry):
    known = set(context.instance.get_dynamic_partitions(aoi_partitions.name))
    try:
        new = registry_changes(aoi_registry, known)
    except GeoclusterError as err:
        return dg.SkipReason(f"The AOI registry cannot be read: {err}")
    if not new:
        return dg.SkipReason(f"No new AOIs ({len(known)} registered).")
    context.log.info(f"Adding AOI partitions: {new}")
    return dg.SensorResult(dynamic_partitions_requests=[aoi_partitions.build_add_request(new)])
