"""search_items against a real STAC API (stac-fastapi-pgstac on PostgreSQL/PostGIS, loopback),
and the demo partition materialized through that API with pixels read over HTTP from nginx.

Expected results come from the loaded documents themselves (footprints, datetimes, cloud cover),
never from the API.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import numpy as np
import pystac
import pytest
import xarray as xr
from shapely.geometry import Point, box, shape

from geocluster_dagster.defs.assets import PIPELINE_ASSETS
from geocluster_dagster.defs.outputs import OutputStore
from geocluster_dagster.defs.partitions import partition_key
from geocluster_dagster.defs.resources import AOIRegistry, DaskCluster, StacCatalog
from geocluster_dagster.demo import DEMO_MONTH
from geocluster_dagster.errors import NoItemsFound
from geocluster_dagster.products.band_stack import open_band_stack
from geocluster_dagster.search import StacSource, search_items

from .conftest import L8_008059, L8_008059_PREFIX, S2_29RKH, STAC_DIR
from .servers.fixtures import synthesized_collection

pytestmark = pytest.mark.servers

PC_LANDSAT_PAGE = STAC_DIR / "pc_landsat-c2-l2_items_page_LC09_path084.json"
PC_S2_SEARCH = STAC_DIR / "pc_search_sentinel-2-l2a_20190101_33items.json"
PC_S2_ITEM = STAC_DIR / "pc_sentinel-2-l2a_item_S2B_MSIL2A_20190629T212529_R043_T06VVN.json"
USGS_ITEM = STAC_DIR / "usgs_landsat-c2l2-sr_item_LC08_L2SP_028030_20200114.json"
EARTH_SEARCH_ITEM = S2_29RKH / "S2A_29RKH_20200219_0_L2A.json"
L8_008059_SR = L8_008059 / f"{L8_008059_PREFIX}_SR_stac.json"

ROW_072 = "LC09_L2SR_084072_20250722_02_T2"
ROW_073 = "LC09_L2SR_084073_20250722_02_T1"
OVERLAP_072_073 = Point(163.24, -18.07).buffer(0.05)  # inside rows 072 and 073, outside 074
PATH_084 = box(158.0, -33.0, 170.0, 7.0)
WORLD = box(-180, -90, 180, 90)
PAGE_SIZE = 2


def documents(path: Path) -> list[dict]:
    document = json.loads(path.read_text(encoding="utf-8"))
    return document["features"] if document["type"] == "FeatureCollection" else [document]


def item_time(document: dict) -> datetime:
    value = document["properties"]["datetime"]
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def expected_ids(
    docs: list[dict],
    *,
    collection: str,
    aoi,
    start: datetime,
    end: datetime,
    max_cloud_cover: float | None = None,
) -> set[str]:
    """What a correct search returns, decided from the documents alone."""
    return {
        d["id"]
        for d in docs
        if d["collection"] == collection
        and shape(d["geometry"]).intersects(aoi)
        and start <= item_time(d) < end
        and (max_cloud_cover is None or d["properties"]["eo:cloud_cover"] <= max_cloud_cover)
    }


def search_requests(api) -> int:
    return sum(1 for method, path, _ in api.requests() if (method, path) == ("POST", "/search"))


@pytest.fixture(scope="module")
def source(stac_api) -> StacSource:
    return StacSource(url=stac_api.url, page_size=PAGE_SIZE)


# --- AOI, datetime, cloud cover and collection filters -----------------------------------------


def test_intersects_returns_exactly_the_overlapping_landsat_rows(source) -> None:
    page = {d["id"]: d for d in documents(PC_LANDSAT_PAGE)}
    day = datetime(2025, 7, 22, tzinfo=timezone.utc)
    window = {"start": day, "end": day + timedelta(days=1)}
    assert expected_ids(
        list(page.values()), collection="landsat-c2-l2", aoi=OVERLAP_072_073, **window
    ) == {ROW_072, ROW_073}

    items = search_items(source, collection="landsat-c2-l2", geometry=OVERLAP_072_073, **window)

    assert [item.id for item in items] == [ROW_072, ROW_073]  # sorted by datetime
    for item in items:  # the API hands back the real documents' assets untouched
        hrefs = {key: asset["href"] for key, asset in page[item.id]["assets"].items()}
        assert {key: asset.href for key, asset in item.assets.items()} == hrefs


@pytest.mark.parametrize(
    "aoi",
    [
        Point(168.1, 56.3).buffer(0.02),  # UTM zone 58/59 overlap
        box(173.5, 57.8, 173.9, 58.2),  # zone 59/60 overlap
        Point(168.45, 56.1).buffer(0.02),  # inside T58VFH's bbox, outside its footprint
        box(165.0, 55.0, 170.0, 57.0),
    ],
)
def test_sentinel2_tiles_are_chosen_by_footprint(source, aoi) -> None:
    window = {"start": datetime(2019, 1, 1), "end": datetime(2019, 1, 2)}
    expected = expected_ids(
        documents(PC_S2_SEARCH),
        collection="sentinel-2-l2a",
        aoi=aoi,
        start=window["start"].replace(tzinfo=timezone.utc),
        end=window["end"].replace(tzinfo=timezone.utc),
    )
    assert 0 < len(expected) < 33

    items = search_items(source, collection="sentinel-2-l2a", geometry=aoi, **window)

    assert {item.id for item in items} == expected


def test_datetime_window_includes_start_and_excludes_end(source) -> None:
    (document,) = documents(PC_S2_ITEM)
    acquired = item_time(document)
    aoi = shape(document["geometry"]).centroid.buffer(0.01)
    search = {"source": source, "collection": "sentinel-2-l2a", "geometry": aoi}

    (item,) = search_items(**search, start=acquired, end=acquired + timedelta(seconds=1))
    assert item.id == document["id"]
    # The server's interval is closed; the exclusive end is applied to what it returns.
    with pytest.raises(NoItemsFound, match="none in the date window"):
        search_items(**search, start=acquired - timedelta(days=1), end=acquired)

    page = documents(PC_LANDSAT_PAGE)
    times = {d["id"]: item_time(d) for d in page}
    until_073 = search_items(
        source,
        collection="landsat-c2-l2",
        geometry=PATH_084,
        start=times[ROW_072],
        end=times[ROW_073],
    )
    expected = {i for i, t in times.items() if times[ROW_072] <= t < times[ROW_073]}
    assert ROW_072 in expected and ROW_073 not in expected
    assert {item.id for item in until_073} == expected


@pytest.mark.parametrize(("path", "limit"), [(PC_LANDSAT_PAGE, 20.0), (PC_S2_SEARCH, 40.0)])
def test_cloud_limit_is_applied_by_the_server(stac_api, source, path: Path, limit) -> None:
    docs = documents(path)
    collection = docs[0]["collection"]
    start = min(item_time(d) for d in docs)
    window = {"start": start, "end": max(item_time(d) for d in docs) + timedelta(seconds=1)}
    expected = expected_ids(docs, collection=collection, aoi=WORLD, max_cloud_cover=limit, **window)
    assert 0 < len(expected) < len(docs)  # the limit really splits the documents

    before = search_requests(stac_api)
    items = search_items(
        source, collection=collection, geometry=WORLD, max_cloud_cover=limit, **window
    )

    assert {item.id for item in items} == expected
    assert all(item.properties["eo:cloud_cover"] <= limit for item in items)
    # Only the matching items were paged through: the server filtered, not the client.
    assert search_requests(stac_api) - before == math.ceil(len(expected) / PAGE_SIZE)


def test_collection_filter_splits_items_of_the_same_place_and_time(source) -> None:
    window = {
        "start": datetime(2019, 1, 1, tzinfo=timezone.utc),
        "end": datetime(2021, 1, 1, tzinfo=timezone.utc),
    }
    docs = [
        *documents(PC_LANDSAT_PAGE),
        *documents(PC_S2_SEARCH),
        *documents(PC_S2_ITEM),
        *documents(USGS_ITEM),
        *documents(EARTH_SEARCH_ITEM),  # served from nginx, same id, time and collection
        *documents(L8_008059_SR),  # likewise
    ]
    usgs = expected_ids(docs, collection="landsat-c2l2-sr", aoi=WORLD, **window)
    sentinel = expected_ids(docs, collection="sentinel-2-l2a", aoi=WORLD, **window)
    assert usgs == {"LC08_L2SP_028030_20200114_20200824_02_T1_SR", f"{L8_008059_PREFIX}"}
    assert len(sentinel) == 35  # 33-item search, single PC item, Earth Search item

    found_usgs = search_items(source, collection="landsat-c2l2-sr", geometry=WORLD, **window)
    found_sentinel = search_items(source, collection="sentinel-2-l2a", geometry=WORLD, **window)

    assert {item.id for item in found_usgs} == usgs
    assert {item.id for item in found_sentinel} == sentinel
    assert all(item.collection_id == "sentinel-2-l2a" for item in found_sentinel)
    # landsat-c2-l2 has items (2023 demo, 2025 PC page), none in this window.
    with pytest.raises(NoItemsFound, match="intersect the AOI but none in the date window") as e:
        search_items(source, collection="landsat-c2-l2", geometry=WORLD, **window)
    assert "2023-06-10" in str(e.value) and "2025-07-22" in str(e.value)


def test_served_items_point_at_the_file_server(source, nginx_shared) -> None:
    (item,) = search_items(
        source,
        collection="sentinel-2-l2a",
        geometry=shape(documents(EARTH_SEARCH_ITEM)[0]["geometry"]).centroid.buffer(0.01),
        start=datetime(2020, 2, 19),
        end=datetime(2020, 2, 20),
        max_cloud_cover=5,
    )
    assert item.id == "S2A_29RKH_20200219_0_L2A"
    assert set(item.assets) == {"blue", "green", "red", "nir", "scl"}
    assert item.assets["scl"].href == nginx_shared.url(
        "shared/sentinel2_l2a_29RKH_20200219_downsampled/SCL.tif"
    )


# --- paging --------------------------------------------------------------------------------------


def test_small_pages_fetch_every_item_over_many_requests(stac_api) -> None:
    window = {"start": datetime(2019, 1, 1), "end": datetime(2019, 1, 2)}
    expected = {d["id"] for d in documents(PC_S2_SEARCH)}
    counts = {}
    for page_size in (2, 5, 100):
        before = search_requests(stac_api)
        items = search_items(
            StacSource(url=stac_api.url, page_size=page_size),
            collection="sentinel-2-l2a",
            geometry=box(160, 50, 180, 60),
            **window,
        )
        counts[page_size] = search_requests(stac_api) - before
        assert len(items) == len({item.id for item in items}) == 33  # no page twice
        assert {item.id for item in items} == expected
    assert counts == {2: 17, 5: 7, 100: 1}


def test_max_items_stops_paging_early(stac_api, source) -> None:
    page = documents(PC_LANDSAT_PAGE)
    first_three = sorted(page, key=lambda d: (item_time(d), d["id"]))[:3]
    day = datetime(2025, 7, 22)
    before = search_requests(stac_api)

    items = search_items(
        source,
        collection="landsat-c2-l2",
        geometry=PATH_084,
        start=day,
        end=day + timedelta(days=1),
        max_items=3,
    )

    assert [item.id for item in items] == [d["id"] for d in first_three]  # server-side sortby
    assert search_requests(stac_api) - before == 2  # 2 + 1 items, not all 10


# --- NoItemsFound diagnostics through the API ----------------------------------------------------


def test_unknown_collection_lists_the_served_ones(source) -> None:
    with pytest.raises(NoItemsFound) as raised:
        search_items(
            source,
            collection="landsat-8-c2-l2",
            geometry=OVERLAP_072_073,
            start=datetime(2025, 7, 22),
            end=datetime(2025, 7, 23),
        )
    message = str(raised.value)
    assert "no collection 'landsat-8-c2-l2'" in message
    available = re.search(r"available: ([^.]*)\.", message).group(1).split(", ")
    assert {"landsat-c2-l2", "landsat-c2l2-sr", "sentinel-2-l2a"} <= set(available)


def test_strict_cloud_limit_names_the_least_cloudy_match(source) -> None:
    page = {d["id"]: d for d in documents(PC_LANDSAT_PAGE)}
    least = min(page[i]["properties"]["eo:cloud_cover"] for i in (ROW_072, ROW_073))
    search = {
        "source": source,
        "collection": "landsat-c2-l2",
        "geometry": OVERLAP_072_073,
        "start": datetime(2025, 7, 22),
        "end": datetime(2025, 7, 23),
    }
    with pytest.raises(NoItemsFound) as raised:
        search_items(**search, max_cloud_cover=least - 1)
    message = str(raised.value)
    assert "2 item(s) match without the cloud filter" in message
    assert f"raise max_cloud_cover (stac_items) to at least {least}" in message
    suggested = float(re.search(r"at least ([0-9.]+)", message).group(1))
    assert len(search_items(**search, max_cloud_cover=suggested)) == 1


def test_window_elsewhere_in_time_names_the_acquisition_dates(source) -> None:
    with pytest.raises(NoItemsFound) as raised:
        search_items(
            source,
            collection="landsat-c2-l2",
            geometry=OVERLAP_072_073,
            start=datetime(2025, 8, 1),
            end=datetime(2025, 9, 1),
        )
    message = str(raised.value)
    assert "2 item(s) intersect the AOI but none in the date window (dated 2025-07-22)" in message
    assert source.url in message


def test_aoi_elsewhere_gives_the_footprints_of_the_window(source) -> None:
    with pytest.raises(NoItemsFound) as raised:
        search_items(
            source,
            collection="sentinel-2-l2a",
            geometry=box(-30, 0, -29, 1),
            start=datetime(2019, 1, 1),
            end=datetime(2019, 1, 2),
        )
    message = str(raised.value)
    assert "33 item(s) are in the window but none intersect the AOI" in message
    footprints = [shape(d["geometry"]) for d in documents(PC_S2_SEARCH)]
    lon0 = min(f.bounds[0] for f in footprints)
    lat1 = max(f.bounds[3] for f in footprints)
    assert f"lon {lon0:.2f}.." in message and f"..{lat1:.2f}" in message


def test_items_loaded_after_start_are_found_at_once(stac_api) -> None:
    # A collection of its own, so no other test of the shared server sees this item.
    collection = "geocluster-late-arrivals"
    (late,) = [d for d in documents(PC_LANDSAT_PAGE) if d["id"] == ROW_073]
    late = {**late, "id": f"{ROW_073}-late", "collection": collection, "links": []}
    stac_api.load_collections([synthesized_collection(collection, [late])])
    search = {
        "source": StacSource(url=stac_api.url, page_size=PAGE_SIZE),
        "collection": collection,
        "geometry": OVERLAP_072_073,
        "start": datetime(2025, 7, 22),
        "end": datetime(2025, 7, 23),
    }
    with pytest.raises(NoItemsFound):
        search_items(**search)

    stac_api.load_items([late])

    assert [item.id for item in search_items(**search)] == [late["id"]]


# --- the demo partition through the API and nginx ----------------------------------------------


def materialize(out: Path, *, catalog: str, registry: Path) -> dg.ExecuteInProcessResult:
    # Entered, the instance is Dagster's current one while it runs, and disposed of after.
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("aoi", ["demo"])
        return dg.materialize(
            PIPELINE_ASSETS,
            selection=["stac_items", "band_stack"],
            partition_key=partition_key("demo", DEMO_MONTH),
            instance=instance,
            resources={
                "aoi_registry": AOIRegistry(path=str(registry)),
                "stac": StacCatalog(url=catalog, page_size=PAGE_SIZE),
                "dask": DaskCluster(),
                "outputs": OutputStore(base_dir=str(out)),
            },
        )


def test_demo_band_stack_through_the_api_equals_the_local_catalog(
    tmp_path, stac_api, nginx_shared, served_folder
) -> None:
    demo = served_folder.demo
    local = materialize(tmp_path / "local", catalog=str(demo.catalog), registry=demo.aoi_registry)
    requests_before = search_requests(stac_api)
    ranges_before = nginx_shared.access_log.read_text().count('" 206 ')

    remote = materialize(tmp_path / "remote", catalog=stac_api.url, registry=demo.aoi_registry)

    assert local.success and remote.success
    assert search_requests(stac_api) - requests_before >= 2  # 4 items on pages of 2
    assert nginx_shared.access_log.read_text().count('" 206 ') > ranges_before  # ranged reads
    part = Path("demo") / DEMO_MONTH
    remote_items = pystac.ItemCollection.from_file(
        str(tmp_path / "remote/stac_items" / f"{part}.json")
    )
    local_items = pystac.ItemCollection.from_file(
        str(tmp_path / "local/stac_items" / f"{part}.json")
    )
    assert [i.id for i in remote_items] == [i.id for i in local_items]
    assert {i.id for i in remote_items} == set(demo.item_ids)
    assert all(
        asset.href.startswith(nginx_shared.base_url + "/demo/")
        for item in remote_items
        for asset in item.assets.values()
    )

    # Reopening the stored band stacks reads the pixels: ranged HTTP through nginx for one.
    expected = open_band_stack(tmp_path / "local/band_stack" / f"{part}.json").compute()
    actual = open_band_stack(tmp_path / "remote/band_stack" / f"{part}.json").compute()
    assert set(actual.data_vars) == set(expected.data_vars)
    assert np.isfinite(actual["red"].values).any()
    xr.testing.assert_identical(actual, expected)
