"""The STAC API behind the fault-injecting proxy: transient faults are retried, permanent ones named."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime

import pytest
import shapely

from geocluster_dagster.errors import AssetReadError
from geocluster_dagster.search import StacSource, search_items

from .servers.fault_proxy import Fault, FaultProxy
from .servers.fixtures import STAC_DIR

pytestmark = pytest.mark.servers

PAGE = STAC_DIR / "pc_landsat-c2-l2_items_page_LC09_path084.json"


def _search(url: str):
    items = json.loads(PAGE.read_text())["features"]
    rows_072_073 = [
        shapely.geometry.shape(f["geometry"])
        for f in items
        if f["id"][10:16] in ("084072", "084073")
    ]
    overlap = rows_072_073[0].intersection(rows_072_073[1])
    source = StacSource(url=url, page_size=2, max_retries=4, backoff_factor=0.1, timeout_s=5)
    found = search_items(
        source,
        collection="landsat-c2-l2",
        geometry=overlap,
        start=datetime(2025, 7, 1),
        end=datetime(2025, 8, 1),
    )
    return [i.id for i in found]


@pytest.fixture
def api_behind_proxy(stac_api, monkeypatch):
    """pystac-client (requests) sends every request through the proxy, as through a corporate one."""
    with FaultProxy(stac_api.url) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://{proxy.proxy_address}")
        monkeypatch.setenv("http_proxy", f"http://{proxy.proxy_address}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        yield stac_api.url, proxy


def test_transient_api_faults_are_retried_and_the_result_is_unchanged(api_behind_proxy):
    url, proxy = api_behind_proxy
    clean = _search(url)
    assert len(clean) == 2 and proxy.count(path="search") > 0  # the proxy really is in the path
    for code in (503, 429):
        proxy.clear()
        proxy.add(Fault.status(code, times=2, retry_after=1, path="search"))
        assert _search(url) == clean
        outcomes = proxy.outcomes(path="search")
        assert sum(n for outcome, n in outcomes.items() if str(code) in outcome) == 2, outcomes


def test_an_api_that_stays_down_fails_naming_the_url_and_the_retries(api_behind_proxy):
    url, proxy = api_behind_proxy
    proxy.upstream_down = True
    with pytest.raises(AssetReadError) as err:
        _search(url)
    message = str(err.value)
    assert url.rstrip("/") in message and "retr" in message.lower()
    assert proxy.count() >= 2  # it did retry, and stopped


# --- the new-imagery sensor against the STAC API server -----------------------------------------


def test_new_imagery_sensor_against_the_api_requests_the_new_partition_once(stac_api, tmp_path):
    """Load one more item into pgstac, tick the sensor: exactly the affected partition, once."""
    import dagster as dg

    from geocluster_dagster.defs.partitions import split_key
    from geocluster_dagster.defs.resources import AOIRegistry, StacCatalog
    from geocluster_dagster.defs.sensors import ImageryWatch, new_imagery_sensor
    from geocluster_dagster.demo import build_demo

    from .servers.fixtures import synthesized_collection

    demo = build_demo(tmp_path / "demo")
    # A collection of its own, so the session's shared API answers other tests as before.
    collection = "geocluster-sensor-test"
    templates = [i.to_dict() for i in _demo_items(demo)]

    def item(template: dict, day: str) -> dict:
        doc = json.loads(json.dumps(template))
        doc["id"] = f"{template['id']}-{day}"
        doc["collection"] = collection
        doc["properties"]["datetime"] = f"{day}T16:00:00Z"
        doc["links"] = []
        return doc

    march = [item(t, "2024-03-10") for t in templates[:2]]
    stac_api.load_collections([synthesized_collection(collection, march)])
    stac_api.load_items(march)
    resources = {
        "aoi_registry": AOIRegistry(path=str(demo.aoi_registry)),
        "stac": StacCatalog(url=stac_api.url),
        "imagery_watch": ImageryWatch(
            collection=collection, max_cloud_cover=None, lookback_days=20_000
        ),
    }
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            first = new_imagery_sensor(context)
        assert [split_key(r.partition_key) for r in first.run_requests] == [("demo", "2024-03-01")]
        with dg.build_sensor_context(
            instance=instance, resources=resources, cursor=first.cursor
        ) as context:
            assert new_imagery_sensor(context).run_requests == []

        stac_api.load_items([item(templates[2], "2024-04-02")])
        with dg.build_sensor_context(
            instance=instance, resources=resources, cursor=first.cursor
        ) as context:
            second = new_imagery_sensor(context)
        assert [split_key(r.partition_key) for r in second.run_requests] == [("demo", "2024-04-01")]
        with dg.build_sensor_context(
            instance=instance, resources=resources, cursor=second.cursor
        ) as context:
            assert new_imagery_sensor(context).run_requests == []


def _demo_items(demo):
    import pystac

    catalog = pystac.Catalog.from_file(str(demo.catalog))
    items = sorted(catalog.get_items(recursive=True), key=lambda i: i.id)
    for i in items:
        i.make_asset_hrefs_absolute()
    return items


# --- a static catalog over HTTP, and a source that never answers -------------------------------

DEMO_WINDOW = {"start": datetime(2023, 6, 1), "end": datetime(2023, 7, 1)}


def _demo_search(url: str, served_folder, **source):
    aoi = json.loads(served_folder.demo.aoi_registry.read_text())["features"][0]["geometry"]
    return search_items(
        StacSource(url=url, **source),
        collection="landsat-c2-l2",
        geometry=shapely.geometry.shape(aoi),
        **DEMO_WINDOW,
    )


def test_a_static_catalog_over_http_finds_what_the_local_one_finds(nginx_shared, served_folder):
    local = _demo_search(str(served_folder.demo.catalog), served_folder)
    url = nginx_shared.url(served_folder.relative(served_folder.demo.catalog))
    assert StacSource(url=url).kind == "static_catalog"
    served = _demo_search(url, served_folder)
    assert [i.id for i in served] == [i.id for i in local] and len(served) == 4
    href = next(iter(served[0].assets.values())).href
    assert href.startswith(nginx_shared.base_url + "/demo/")  # resolved against the served URL


def test_a_source_that_never_answers_fails_within_its_bound_and_logs_each_retry(
    nginx_shared, served_folder, caplog
):
    with FaultProxy(nginx_shared.base_url) as proxy:
        proxy.add(Fault.delay(60, times=None, path="catalog.json"))
        url = proxy.url(served_folder.relative(served_folder.demo.catalog))
        source = {"timeout_s": 1.0, "max_retries": 2, "backoff_factor": 0.1}
        bound = StacSource(url=url, **source).give_up_after_s
        assert bound == pytest.approx(3 * 1.0 + 0.2)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="geocluster_dagster"):
            with pytest.raises(AssetReadError) as err:
                _demo_search(url, served_folder, **source)
        elapsed = time.monotonic() - started
    assert elapsed < bound + 2.0, elapsed
    assert f"at most {bound:.0f} s" in str(err.value) and url in str(err.value)
    retries = [r.getMessage() for r in caplog.records if "STAC request GET" in r.getMessage()]
    assert len(retries) == 2, retries
    assert "retry 1 of 2" in retries[0] and "retry 2 of 2" in retries[1]
    assert "ReadTimeoutError" in retries[0]
