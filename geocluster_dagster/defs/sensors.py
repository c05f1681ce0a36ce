"""Sensors: keep AOI partitions in step with the registry, and run partitions that get new imagery."""

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg
import pystac
from pydantic import Field

from ..errors import GeoclusterError, NoItemsFound
from ..search import DEFAULT_COLLECTION, acquired, search_items
from .jobs import pipeline_job
from .partitions import AOI_PARTITIONS, aoi_partitions, date_partitions, partition_key
from .resources import AOIRegistry, StacCatalog

ENV_WATCH_COLLECTION = "GEOCLUSTER_WATCH_COLLECTION"


def registry_changes(registry: AOIRegistry, known: set[str]) -> list[str]:
    """AOI ids in the registry that are not partitions yet, sorted."""
    return sorted(set(registry.load()) - known)


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds an AOI partition for every AOI that appears in the AOI registry.",
)
def aoi_registry_sensor(
    context: dg.SensorEvaluationContext, aoi_registry: AOIRegistry
) -> dg.SensorResult | dg.SkipReason:
    known = set(context.instance.get_dynamic_partitions(AOI_PARTITIONS))
    try:
        new = registry_changes(aoi_registry, known)
    except GeoclusterError as err:
        return dg.SkipReason(f"The AOI registry cannot be read: {err}")
    if not new:
        return dg.SkipReason(f"No new AOIs ({len(known)} registered).")
    context.log.info(f"Adding AOI partitions: {new}")
    return dg.SensorResult(dynamic_partitions_requests=[aoi_partitions.build_add_request(new)])


class ImageryWatch(dg.ConfigurableResource):  # type: ignore[type-arg]
    """What the new-imagery sensor searches for, and how far back it looks for late arrivals."""

    collection: str | None = Field(
        default=None,
        description="STAC collection to watch. Unset: env GEOCLUSTER_WATCH_COLLECTION, else "
        f"{DEFAULT_COLLECTION}.",
    )
    max_cloud_cover: float | None = Field(
        default=60.0, description="Only scenes at most this cloudy (percent) trigger runs."
    )
    lookback_days: int = Field(
        default=45,
        description="Scenes acquired up to this many days before the newest one seen still count as new when they "
        "appear late (Level-2 products are published days to weeks after acquisition).",
    )

    def watched_collection(self) -> str:
        return self.collection or os.environ.get(ENV_WATCH_COLLECTION) or DEFAULT_COLLECTION


@dataclass
class AoiCursor:
    """Per AOI: the newest acquisition seen, and the ids seen within the trailing lookback window.

    A high-water mark alone would miss scenes published late with an older acquisition time;
    keeping only the ids inside the window keeps the cursor bounded.
    """

    newest: datetime | None = None
    recent_ids: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {
            "newest": self.newest.isoformat() if self.newest else None,
            "recent_ids": sorted(self.recent_ids),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "AoiCursor":
        newest = datetime.fromisoformat(doc["newest"]) if doc.get("newest") else None
        return cls(newest=newest, recent_ids=set(doc.get("recent_ids", [])))


def new_items_by_partition(
    items: Sequence[pystac.Item], cursor: AoiCursor, lookback: timedelta
) -> tuple[dict[str, list[str]], AoiCursor]:
    """Month partition key -> ids of items not seen before, and the advanced cursor."""
    new: dict[str, list[str]] = {}
    for item in items:
        if item.id in cursor.recent_ids:
            continue
        month = date_partitions.get_partition_key_for_timestamp(acquired(item).timestamp())
        new.setdefault(month, []).append(item.id)
    times = [acquired(i) for i in items] + ([cursor.newest] if cursor.newest else [])
    newest = max(times) if times else None
    horizon = newest - lookback if newest else None
    # The next search starts at the horizon, so ids older than it can be forgotten.
    recent = {i.id for i in items if horizon is None or acquired(i) >= horizon}
    return new, AoiCursor(newest=newest, recent_ids=recent)


@dg.sensor(
    job=pipeline_job,
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Polls the STAC source for every registered AOI and runs the month partitions that received new scenes.",
)
def new_imagery_sensor(
    context: dg.SensorEvaluationContext,
    aoi_registry: AOIRegistry,
    stac: StacCatalog,
    imagery_watch: ImageryWatch,
) -> dg.SensorResult | dg.SkipReason:
    cursors = {
        aoi: AoiCursor.from_json(doc) for aoi, doc in json.loads(context.cursor or "{}").items()
    }
    known = set(context.instance.get_dynamic_partitions(AOI_PARTITIONS))
    try:
        aois = aoi_registry.load()
    except GeoclusterError as err:
        return dg.SkipReason(f"The AOI registry cannot be read: {err}")
    added = sorted(set(aois) - known)
    lookback = timedelta(days=imagery_watch.lookback_days)
    now = datetime.now(timezone.utc)
    run_requests = []
    starts = []
    for aoi_id, aoi in sorted(aois.items()):
        cursor = cursors.get(aoi_id, AoiCursor())
        start = (cursor.newest or now) - lookback
        starts.append(start)
        try:
            items = search_items(
                stac.source(),
                collection=imagery_watch.watched_collection(),
                geometry=aoi.geometry,
                start=start,
                end=now + timedelta(days=1),
                max_cloud_cover=imagery_watch.max_cloud_cover,
            ).items
        except NoItemsFound:
            items = []
        except GeoclusterError as err:
            context.log.warning(f"AOI {aoi_id}: STAC search failed, will retry next tick: {err}")
            continue
        new, cursors[aoi_id] = new_items_by_partition(items, cursor, lookback)
        for month, ids in sorted(new.items()):
            context.log.info(f"AOI {aoi_id}, month {month}: {len(ids)} new scene(s): {ids}")
            run_requests.append(
                dg.RunRequest(
                    run_key=f"{aoi_id}|{month}|{max(ids)}",
                    partition_key=partition_key(aoi_id, month),
                    run_config={
                        "ops": {
                            "stac_items": {
                                "config": {
                                    "collection": imagery_watch.watched_collection(),
                                    "max_cloud_cover": imagery_watch.max_cloud_cover,
                                }
                            }
                        }
                    },
                )
            )
    cloud = imagery_watch.max_cloud_cover
    searched = (
        f"No new scenes: searched {imagery_watch.watched_collection()!r} at "
        f"{stac.setting()} for {len(aois)} AOI(s), acquired {min(starts, default=now):%Y-%m-%d} "
        f"(the newest scene seen minus lookback_days={imagery_watch.lookback_days}) to "
        f"{now:%Y-%m-%d}"
        + (f", eo:cloud_cover <= {cloud:g}" if cloud is not None else "")
        + "; scenes already seen are not new."
    )
    return dg.SensorResult(
        run_requests=run_requests,
        skip_reason=None if run_requests else searched,
        dynamic_partitions_requests=[aoi_partitions.build_add_request(added)] if added else [],
        cursor=json.dumps({aoi: c.to_json() for aoi, c in sorted(cursors.items())}),
    )
