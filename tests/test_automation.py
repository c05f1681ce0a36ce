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
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as context:
            requests = list(weekly_refresh_schedule(context))
        keys = sorted(split_key(r.partition_key) for r in requests)
        assert keys == [("alps", "2024-07-01"), ("po_delta", "2024-07-01")]
        assert len({r.run_key for r in requests}) == 2


def test_schedule_skips_without_aois():
    with dg.instance_for_test() as instance:
        when = datetime(2024, 7, 15, tzinfo=timezone.utc)
        # Close evaluation contexts: an open one keeps the disposed test instance as the current one.
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as context:
            assert isinstance(weekly_refresh_schedule(context), dg.SkipReason)


# --- the new-imagery sensor, on a local ItemCollection that gains an item -----------------------

from geocluster_dagster.defs.resources import StacCatalog  # noqa: E402
from geocluster_dagster.defs.sensors import ImageryWatch, new_imagery_sensor  # noqa: E402
from geocluster_dagster.demo import build_demo  # noqa: E402
from geocluster_dagster.search import StacSource, search_items  # noqa: E402


def test_new_imagery_sensor_requests_exactly_the_partition_that_got_a_new_scene(tmp_path):
    import pystac
    import shapely

    demo = build_demo(tmp_path / "demo")
    aoi_doc = json.loads(demo.aoi_registry.read_text())
    polygon = shapely.geometry.shape(aoi_doc["features"][0]["geometry"])
    items = list(
        search_items(
            StacSource(str(demo.catalog)),
            collection="landsat-c2-l2",
            geometry=polygon,
            start=demo.start,
            end=demo.end,
        )
    )
    first_date = min(i.datetime for i in items)
    early = [i for i in items if i.datetime == first_date]
    late = [i for i in items if i.datetime != first_date]
    collection_file = tmp_path / "items.json"
    collection_file.write_text(json.dumps(pystac.ItemCollection(early).to_dict()))

    resources = {
        "aoi_registry": AOIRegistry(path=str(demo.aoi_registry)),
        "stac": StacCatalog(url=str(collection_file)),
        "imagery_watch": ImageryWatch(lookback_days=20_000, max_cloud_cover=None),
    }
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        result = new_imagery_sensor(context)
        assert [split_key(r.partition_key) for r in result.run_requests] == [("demo", "2023-06-01")]
        assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [["demo"]]
        cursor = result.cursor

        # Nothing new: no run, and the reason says what was searched.
        context = dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor)
        idle = new_imagery_sensor(context)
        assert idle.run_requests == []
        reason = idle.skip_reason.skip_message
        assert reason.startswith("No new scenes: searched 'landsat-c2-l2' at ")
        assert str(collection_file) in reason and "for 1 AOI(s)" in reason
        assert "lookback_days=20000" in reason

        # A later scene appears (and one for another month): exactly those partitions, once.
        july = late[0].clone()
        july.id = "LC09_L2SP_019036_20230704_02_T1"
        july.datetime = july.datetime.replace(month=7, day=4)
        collection_file.write_text(
            json.dumps(pystac.ItemCollection(early + late + [july]).to_dict())
        )
        context = dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor)
        result = new_imagery_sensor(context)
        keys = sorted(split_key(r.partition_key) for r in result.run_requests)
        assert keys == [("demo", "2023-06-01"), ("demo", "2023-07-01")]
        june = next(r for r in result.run_requests if "2023-06-01" in r.partition_key)
        assert june.run_key.endswith(max(i.id for i in late))

        context = dg.build_sensor_context(
            instance=instance, resources=resources, cursor=result.cursor
        )
        assert new_imagery_sensor(context).run_requests == []
        assert len(json.loads(result.cursor)["demo"]["recent_ids"]) == len(early) + len(late) + 1


def test_a_new_demo_scene_makes_the_sensor_run_its_partition(tmp_path):
    """`geocluster demo-scene` adds a scene acquired today: the sensor's first tick finds it."""
    from datetime import date

    from click.testing import CliRunner

    from geocluster_dagster.cli import main

    demo = build_demo(tmp_path / "demo_catalog")
    out = tmp_path / "out"
    shown = CliRunner().invoke(main, ["--output", str(out), "demo-scene"])
    assert shown.exit_code == 0, shown.output
    collection_file = out / "demo_live" / "items.json"
    assert f"GEOCLUSTER_STAC_URL={collection_file}" in shown.output
    resources = {
        "aoi_registry": AOIRegistry(path=str(demo.aoi_registry)),
        "stac": StacCatalog(url=str(collection_file)),
        "imagery_watch": ImageryWatch(),  # the defaults: 45 days back, at most 60 % cloud
    }
    with dg.instance_for_test() as instance:
        result = new_imagery_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    month = f"{date.today():%Y-%m}-01"
    assert [split_key(r.partition_key) for r in result.run_requests] == [("demo", month)]
    again = CliRunner().invoke(main, ["--output", str(out), "demo-scene"])
    assert "already holds the scene of" in again.output
