"""Partitions: every asset is partitioned by AOI (dynamic, from the registry) x date window.

The date window is a deployment setting, env GEOCLUSTER_DATE_WINDOWS: ``month`` (default),
``half_month`` (1st-15th and 16th-end: two Landsat passes 16 days apart land in different
partitions), ``quarter`` or ``year``. Each partition key is the window's first day
(``2023-06-01``; ``2023-06-16`` for a second half-month). Changing the setting changes the keys:
partitions materialized under another setting are no longer part of the graph.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal, get_args

import dagster as dg

from ..errors import ConfigError

#: AOI ids, added from the AOI registry by the `aoi_registry_sensor` or `geocluster sync-aois`.
AOI_PARTITIONS = "aoi"
aoi_partitions = dg.DynamicPartitionsDefinition(name=AOI_PARTITIONS)

DateWindows = Literal["month", "half_month", "quarter", "year"]

#: When each kind of window starts (cron); every key is the first day of its window.
WINDOW_STARTS: dict[str, str] = {
    "month": "0 0 1 * *",
    "half_month": "0 0 1,16 * *",
    "quarter": "0 0 1 1,4,7,10 *",
    "year": "0 0 1 1 *",
}

#: Landsat 8's first full month; windows start on the first window start at or before it.
FIRST_DATE = "2013-04-01"


def date_partitions_for(windows: str, first: str = FIRST_DATE) -> dg.TimeWindowPartitionsDefinition:
    """Date windows of the given kind from the window holding ``first`` on. ``end_offset=1``
    includes the running window, so the schedule can refresh it as new scenes arrive."""
    if windows not in get_args(DateWindows):
        raise ConfigError(
            f"GEOCLUSTER_DATE_WINDOWS={windows!r} is not a kind of date window: use one of "
            f"{', '.join(get_args(DateWindows))} (default month)."
        )
    try:
        start = datetime.strptime(first, "%Y-%m-%d")
    except ValueError:
        raise ConfigError(
            f"GEOCLUSTER_FIRST_MONTH={first!r} is not a date: write the first month of the "
            f"partitions as YYYY-MM-DD, e.g. 2023-01-01 (default {FIRST_DATE}, Landsat 8's "
            "first full month)."
        ) from None
    if windows == "month":
        return dg.MonthlyPartitionsDefinition(start_date=start.replace(day=1), end_offset=1)
    if windows == "year":
        start = start.replace(month=1, day=1)
    elif windows == "quarter":
        start = start.replace(month=(start.month - 1) // 3 * 3 + 1, day=1)
    else:
        start = start.replace(day=1 if start.day < 16 else 16)
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=WINDOW_STARTS[windows],
        start=start.strftime("%Y-%m-%d"),
        fmt="%Y-%m-%d",
        end_offset=1,
    )


#: The deployment's kind of date window (env GEOCLUSTER_DATE_WINDOWS).
DATE_WINDOWS = os.environ.get("GEOCLUSTER_DATE_WINDOWS", "month")
#: The deployment's date windows (env GEOCLUSTER_DATE_WINDOWS, GEOCLUSTER_FIRST_MONTH).
date_partitions = date_partitions_for(
    DATE_WINDOWS, os.environ.get("GEOCLUSTER_FIRST_MONTH", FIRST_DATE)
)

partitions = dg.MultiPartitionsDefinition({"aoi": aoi_partitions, "date": date_partitions})

#: How far back cluster_change looks for the earlier map it compares with, in windows of each
#: kind: one year, so that a cloudy season (months of windows without a clear map) is bridged,
#: and a change is never reported between maps years apart without the user asking
#: (``compare_with``).
LOOKBACK_WINDOWS: dict[str, int] = {"month": 12, "half_month": 24, "quarter": 4, "year": 1}


def same_aoi_mapping() -> dg.MultiToSingleDimensionPartitionMapping:
    """cluster_model (per AOI) <-> the AOI x date partitions of that AOI."""
    with warnings.catch_warnings():  # beta in Dagster 1.x, and the one mapping that says this
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=AOI_PARTITIONS)


def lookback_mapping(windows: str = DATE_WINDOWS) -> dg.MultiPartitionMapping:
    """A partition's own AOI at its own date window and the :data:`LOOKBACK_WINDOWS` before
    it: what cluster_change reads of clusters, as Dagster's lineage, staleness and backfill
    planning see it."""
    with warnings.catch_warnings():  # beta in Dagster 1.x; the one mapping that says this
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _lookback(LOOKBACK_WINDOWS[windows])


def _lookback(windows: int) -> dg.MultiPartitionMapping:
    return dg.MultiPartitionMapping(
        {
            AOI_PARTITIONS: dg.DimensionPartitionMapping(
                AOI_PARTITIONS, dg.IdentityPartitionMapping()
            ),
            "date": dg.DimensionPartitionMapping(
                "date",
                dg.TimeWindowPartitionMapping(start_offset=-windows, end_offset=0),
            ),
        }
    )


def lookback_dates(date_key: str) -> list[str]:
    """The deployment's date keys of the windows before ``date_key`` that
    :func:`lookback_mapping` covers, oldest first (fewer near the first partition)."""
    keys = list(date_partitions.get_partition_keys())
    where = keys.index(date_key)
    return keys[max(0, where - LOOKBACK_WINDOWS[DATE_WINDOWS]) : where]


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
    def last_day(self) -> datetime:
        """The window's last day (``end`` is the next window's first, excluded)."""
        return self.end - timedelta(days=1)

    @property
    def label(self) -> str:
        return f"AOI {self.aoi_id!r}, {self.start:%Y-%m-%d} to {self.last_day:%Y-%m-%d}"


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


def date_key_of(
    when: str, setting: str, windows: dg.TimeWindowPartitionsDefinition | None = None
) -> str:
    """The key of the date window (GEOCLUSTER_DATE_WINDOWS) that holds day or month ``when``;
    ``setting`` names where the user wrote it (``--date``, ``ops.x.config.dates``)."""
    windows = date_partitions if windows is None else windows
    try:
        day = datetime.strptime(when, "%Y-%m" if len(when) == 7 else "%Y-%m-%d")
    except ValueError:
        raise ConfigError(
            f"{setting} {when!r} is not a month (YYYY-MM) or a day (YYYY-MM-DD)."
        ) from None
    key = windows.get_partition_key_for_timestamp(day.replace(tzinfo=timezone.utc).timestamp())
    if key not in windows.get_partition_keys():
        first, last = windows.get_first_partition_key(), windows.get_last_partition_key()
        raise ConfigError(
            f"{setting} {when!r} is outside the date windows of this deployment ({first} to "
            f"{last}: they start at GEOCLUSTER_FIRST_MONTH="
            f"{os.environ.get('GEOCLUSTER_FIRST_MONTH', FIRST_DATE)} and end with the current "
            "window). Set GEOCLUSTER_FIRST_MONTH to a month at or before it, e.g. "
            f"GEOCLUSTER_FIRST_MONTH={day:%Y-%m}-01."
        )
    return key
