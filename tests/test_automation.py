"""The AOI registry sensor and the weekly refresh schedule, against a real (ephemeral) instance."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import dagster as dg

from geocluster_dagster.defs.partitions import aoi_partitions, split_key
from geocluster_dagster.defs.resources import AOIRegistry
from geocluster_dagster.defs.schedules import weekly_refresh_schedule
from geocluster_dagster.defs.sensors import aoi_registry_sensor


def _square(lon: float, lat: float) -> dict:
    d = 0.01
    return {
        "type": "Polygon",
        "coordinates": [
            [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
        ],
    }


def _write_registry(folder, ids):
    folder.mkdir(exist_ok=True)
    for i, aoi_id in enumerate(ids):
        (folder / f"{aoi_id}.geojson").write_text(
            json.dumps(
                {"type": "Feature", "id": aoi_id, "properties": {}, "geometry": _square(10 + i, 45)}
            )
        )


def test_sensor_adds_exactly_the_new_aois(tmp_path):
    registry = tmp_path / "aois"
    _write_registry(registry, ["alps", "po_delta"])
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, resources={"aoi_registry": AOIRegistry(path=str(registry))}
        )
        result = aoi_registry_sensor(context)
        assert isinstance(result, dg.SensorResult)
        (request,) = result.dynamic_partitions_requests
        assert request.partitions_def_name == "aoi" and sorted(request.partition_keys) == [
            "alps",
            "po_delta",
        ]
        instance.add_dynamic_partitions("aoi", list(request.partition_keys))

        assert isinstance(aoi_registry_sensor(context), dg.SkipReason)  # nothing new: no request

        _write_registry(registry, ["alps", "po_delta", "lake_garda"])
        (request,) = aoi_registry_sensor(context).dynamic_partitions_requests
        assert list(request.partition_keys) == ["lake_garda"]


def test_sensor_skips_with_the_reason_when_the_registry_is_broken(tmp_path):
    registry = tmp_path / "aois"
    registry.mkdir()
    (registry / "bad.geojson").write_text('{"type": "Feature", "id": "Bad Id", "geometry": null}')
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, resources={"aoi_registry": AOIRegistry(path=str(registry))}
        )
        result = aoi_registry_sensor(context)
        assert isinstance(result, dg.SkipReason) and "bad.geojson" in result.skip_message


def test_schedule_requests_the_current_month_for_every_aoi():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(aoi_partitions.name, ["alps", "po_delta"])
        when = datetime(2024, 7, 15, 6, tzinfo=timezone.utc)
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
        requests = list(weekly_refresh_schedule(context))
        keys = sorted(split_key(r.partition_key) for r in requests)
        assert keys == [("alps", "2024-07-01"), ("po_delta", "2024-07-01")]
        assert len({r.run_key for r in requests}) == 2


def test_schedule_skips_without_aois():
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2024, 7, 15, tzinfo=timezone.utc)
        )
        assert isinstance(weekly_refresh_schedule(context), dg.SkipReason)
