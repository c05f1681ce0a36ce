"""Partitions: every asset is partitioned by AOI (dynamic, from the registry) x month."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

import dagster as dg

#: AOI ids, added from the AOI registry by the `aoi_registry_sensor` or `geocluster sync-aois`.
AOI_PARTITIONS = "aoi"
aoi_partitions = dg.DynamicPartitionsDefinition(name=AOI_PARTITIONS)

#: Calendar months from Landsat 8's first full month; `end_offset=1` includes the running month,
#: so the schedule can refresh it as new scenes arrive.
date_partitions = dg.MonthlyPartitionsDefinition(
    start_date=os.environ.get("GEOCLUSTER_FIRST_MONTH", "2013-04-01"), end_offset=1
)

partitions = dg.MultiPartitionsDefinition({"aoi": aoi_partitions, "date": date_partitions})


@dataclass(frozen=True)
class PartitionWindow:
    """One partition: an AOI id and the time window [start, end)."""

    aoi_id: str
    date_key: str
    start: datetime
    end: datetime

    @property
    def key(self) -> str:
        """The partition key as the UI shows it: 'aoi|date'."""
        return f"{self.aoi_id}|{self.date_key}"

    @property
    def label(self) -> str:
        return f"AOI {self.aoi_id!r}, {self.start:%Y-%m-%d} to {self.end:%Y-%m-%d}"


def split_key(partition_key: str) -> tuple[str, str]:
    """(aoi, date) from a multi-partition key, which reads 'aoi|date' (dimensions sorted by name)."""
    if isinstance(partition_key, dg.MultiPartitionKey):
        keys = partition_key.keys_by_dimension
        return keys["aoi"], keys["date"]
    aoi, date = str(partition_key).split("|")
    return aoi, date


def window_of(key: str) -> PartitionWindow:
    """The AOI and time window of a partition key ('aoi|date' or a MultiPartitionKey)."""
    aoi_id, date_key = split_key(key)
    window = date_partitions.time_window_for_partition_key(date_key)
    return PartitionWindow(aoi_id, date_key, window.start, window.end)


def partition_window(context: dg.AssetExecutionContext) -> PartitionWindow:
    return window_of(context.partition_key)


def partition_key(aoi_id: str, date_key: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"aoi": aoi_id, "date": date_key})
