"""STAC search over local ItemCollections and static catalogs built from real provider documents."""

from __future__ import annotations

import copy
import json
import re
import shutil
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pystac
import pytest
from shapely.geometry import Point, box, shape

from geocluster_dagster.errors import AssetReadError, ConfigError, NoItemsFound
from geocluster_dagster.remote import PlanetaryComputerSigner
from geocluster_dagster.search import (
    PLANETARY_COMPUTER_STAC,
    StacSource,
    _api_search_parameters,
    _open_api_client,
    _Query,
    search_items,
)

from .conftest import SHARED_DATA

DATA = SHARED_DATA
STAC = DATA / "stac"
PC_LANDSAT_PAGE = STAC / "pc_landsat-c2-l2_items_page_LC09_path084.json"
PC_S2_SEARCH = STAC / "pc_search_sentinel-2-l2a_20190101_33items.json"
PC_S2_ITEM = STAC / "pc_sentinel-2-l2a_item_S2B_MSIL2A_20190629T212529_R043_T06VVN.json"
USGS_ITEM = STAC / "usgs_landsat-c2l2-sr_item_LC08_L2SP_028030_20200114.json"
EARTH_SEARCH_DIR = DATA / "sentinel2_l2a_29RKH_20200219_downsampled"
EARTH_SEARCH_ITEM = EARTH_SEARCH_DIR / "S2A_29RKH_20200219_0_L2A.json"
USGS_008059 = DATA / "landsat8_c2l2_008059_20191201_downsampled"
USGS_008059_SR = USGS_008059 / "LC08_L2SP_008059_20191201_20200825_02_T1_SR_stac.json"
USGS_008059_ST = USGS_008059 / "LC08_L2SP_008059_20191201_20200825_02_T1_ST_stac.json"

ROW_072 = "LC09_L2SR_084072_20250722_02_T2"
ROW_073 = "LC09_L2SR_084073_20250722_02_T1"
# Inside both row 072 and 073 footprints, outside row 074 (the three rows overlap pairwise).
OVERLAP_072_073 = Point(163.24, -18.07).buffer(0.05)
PATH_084 = box(158.0, -33.0, 170.0, 7.0)
DAY_START = datetime(2025, 7, 22, tzinfo=timezone.utc)
DAY_END = DAY_START + timedelta(days=1)


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def features_by_id(path: Path) -> dict[str, dict]:
    return {feature["id"]: feature for feature in load_json(path)["features"]}


def item_time(feature: dict) -> datetime:
    return datetime.fromisoformat(feature["properties"]["datetime"].replace("Z", "+00:00"))


def write_collection(path: Path, features: list[dict]) -> StacSource:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), "utf-8")
    return StacSource(str(path))


def search_landsat(source: StacSource, **overrides: object) -> pystac.ItemCollection:
    arguments: dict = {
        "collection": "landsat-c2-l2",
        "geometry": OVERLAP_072_073,
        "start": DAY_START,
        "end": DAY_END,
    }
    arguments.update(overrides)
    return search_items(source, **arguments)


@pytest.fixture(scope="module")
def landsat_page() -> StacSource:
    return StacSource(str(PC_LANDSAT_PAGE))


# --- source kinds and signing -----------------------------------------------------------------


def test_source_kind_and_signing(tmp_path: Path) -> None:
    pc = StacSource(PLANETARY_COMPUTER_STAC)
    assert pc.kind == "api"
    assert isinstance(pc.href_signer(), PlanetaryComputerSigner)  # not called: no network
    assert StacSource(PLANETARY_COMPUTER_STAC, sign="none").href_signer() is None
    assert StacSource("https://earth-search.aws.element84.com/v1").href_signer() is None

    local = StacSource(str(PC_LANDSAT_PAGE))
    assert local.kind == "item_collection"
    assert local.href_signer() is None  # hrefs are PC blobs, but auto only signs the PC API
    assert StacSource(str(PC_LANDSAT_PAGE), sign="planetary-computer").href_signer() is not None
    assert StacSource(f"file://{PC_LANDSAT_PAGE}").kind == "item_collection"

    catalog = pystac.Catalog(id="c", description="d")
    catalog.normalize_and_save(str(tmp_path / "odd-name"), pystac.CatalogType.SELF_CONTAINED)
    assert StacSource(str(tmp_path / "odd-name" / "catalog.json")).kind == "static_catalog"
    renamed = tmp_path / "root.json"
    shutil.copy(tmp_path / "odd-name" / "catalog.json", renamed)
    assert StacSource(str(renamed)).kind == "static_catalog"  # recognised by content


@pytest.mark.parametrize("bad", [{"sign": "aws"}, {"page_size": 0}, {"max_retries": -1}])
def test_source_settings_are_validated(bad: dict) -> None:
    with pytest.raises(ConfigError):
        StacSource(PLANETARY_COMPUTER_STAC, **bad)


# --- Planetary Computer Landsat page (10 items, path 084) --------------------------------------


def test_overlap_of_rows_072_and_073_returns_exactly_those(landsat_page: StacSource) -> None:
    items = search_landsat(landsat_page)
    assert [item.id for item in items] == [ROW_072, ROW_073]  # 072 was acquired first
    for item in items:
        assert {"red", "nir08", "qa_pixel"} <= set(item.assets)
        for asset in item.assets.values():
            assert asset.href.startswith("https://")
            assert "sig=" not in asset.href and "se=" not in asset.href  # never signed


def test_cloud_limit_drops_exactly_the_cloudier_items(landsat_page: StacSource) -> None:
    features = features_by_id(PC_LANDSAT_PAGE)
    limit = 20.0
    expected = {i for i, f in features.items() if f["properties"]["eo:cloud_cover"] <= limit}
    assert 0 < len(expected) < len(features)  # the limit really splits the page

    items = search_landsat(landsat_page, geometry=PATH_084, max_cloud_cover=limit)

    assert {item.id for item in items} == expected
    assert all(item.properties["eo:cloud_cover"] <= limit for item in items)
    assert len(search_landsat(landsat_page, geometry=PATH_084)) == len(features)


def test_results_are_sorted_by_datetime_then_id(landsat_page: StacSource) -> None:
    items = search_landsat(landsat_page, geometry=PATH_084)
    keys = [(item.datetime, item.id) for item in items]
    assert keys == sorted(keys)
    first_two = search_landsat(landsat_page, geometry=PATH_084, max_items=2)
    assert [item.id for item in first_two] == [item.id for item in items][:2]


def test_window_includes_start_and_excludes_end(landsat_page: StacSource) -> None:
    features = features_by_id(PC_LANDSAT_PAGE)
    t072, t073 = item_time(features[ROW_072]), item_time(features[ROW_073])
    assert t072 < t073

    from_073 = search_landsat(landsat_page, start=t073, end=t073 + timedelta(seconds=1))
    assert [item.id for item in from_073] == [ROW_073]
    until_073 = search_landsat(landsat_page, start=t072, end=t073)
    assert [item.id for item in until_073] == [ROW_072]


def test_naive_datetimes_are_utc(landsat_page: StacSource) -> None:
    naive = search_landsat(landsat_page, start=datetime(2025, 7, 22), end=datetime(2025, 7, 23))
    # 23:08 UTC on the 22nd is the 23rd in UTC+2: an aware window there misses it.
    plus_two = timezone(timedelta(hours=2))
    assert [item.id for item in naive] == [ROW_072, ROW_073]
    with pytest.raises(NoItemsFound):
        search_landsat(
            landsat_page,
            start=datetime(2025, 7, 22, tzinfo=plus_two),
            end=datetime(2025, 7, 23, tzinfo=plus_two),
        )


def test_footprint_not_bbox_decides(landsat_page: StacSource) -> None:
    features = features_by_id(PC_LANDSAT_PAGE)
    corner = Point(162.11, -18.54).buffer(0.01)  # inside row 073's bbox, outside every footprint
    assert box(*features[ROW_073]["bbox"]).intersects(corner)
    assert not any(shape(f["geometry"]).intersects(corner) for f in features.values())
    with pytest.raises(NoItemsFound, match="none intersect the AOI"):
        search_landsat(landsat_page, geometry=corner)


# --- NoItemsFound says which filter to relax ---------------------------------------------------


def test_window_outside_the_acquisition_names_the_date_filter(landsat_page: StacSource) -> None:
    with pytest.raises(NoItemsFound) as raised:
        search_landsat(landsat_page, start=datetime(2025, 8, 1), end=datetime(2025, 9, 1))
    message = str(raised.value)
    assert "date window" in message and "process the window(s) holding those dates" in message
    assert "GEOCLUSTER_DATE_WINDOWS" in message  # a fix the graph's user can reach
    assert "2025-07-22" in message  # when the AOI was actually imaged
    assert "landsat-c2-l2" in message and "(163.1900, -18.1200, 163.2900, -18.0200)" in message
    assert "2025-08-01" in message and "2025-09-01" in message


def test_strict_cloud_limit_names_the_least_cloudy_item(landsat_page: StacSource) -> None:
    features = features_by_id(PC_LANDSAT_PAGE)
    least = min(features[i]["properties"]["eo:cloud_cover"] for i in (ROW_072, ROW_073))
    with pytest.raises(NoItemsFound) as raised:
        search_landsat(landsat_page, max_cloud_cover=least - 1)
    message = str(raised.value)
    assert "2 item(s) match without the cloud filter" in message
    assert f"raise max_cloud_cover (stac_items) to at least {least:g}" in message
    assert len(search_landsat(landsat_page, max_cloud_cover=least)) == 1  # the limit is inclusive


def test_unknown_collection_lists_the_available_ones(landsat_page: StacSource) -> None:
    with pytest.raises(
        NoItemsFound, match="no collection 'sentinel-2-l2a'.*available: landsat-c2-l2"
    ):
        search_landsat(landsat_page, collection="sentinel-2-l2a")


def test_aoi_elsewhere_says_check_the_aoi(landsat_page: StacSource) -> None:
    with pytest.raises(
        NoItemsFound, match="in the window but none intersect the AOI.*check the AOI"
    ):
        search_landsat(landsat_page, geometry=box(-30, 0, -29, 1))


def test_nothing_anywhere_says_widen_or_check(landsat_page: StacSource) -> None:
    with pytest.raises(NoItemsFound, match="no items intersecting the AOI in this window"):
        search_landsat(
            landsat_page,
            geometry=box(-30, 0, -29, 1),
            start=datetime(2001, 1, 1),
            end=datetime(2001, 2, 1),
        )


# --- items with time ranges or without cloud cover ---------------------------------------------


def test_time_ranges_and_missing_cloud_cover(tmp_path: Path) -> None:
    features = features_by_id(PC_LANDSAT_PAGE)
    ranged = copy.deepcopy(features[ROW_072])
    ranged["properties"].update(
        datetime=None,
        start_datetime="2025-07-01T00:00:00Z",
        end_datetime="2025-07-31T23:59:59Z",
    )
    cloudless = copy.deepcopy(features[ROW_073])
    del cloudless["properties"]["eo:cloud_cover"]
    source = write_collection(tmp_path / "edited.json", [ranged, cloudless])

    mid_july = search_landsat(source, start=datetime(2025, 7, 10), end=datetime(2025, 7, 11))
    assert [item.id for item in mid_july] == [ROW_072]
    with pytest.raises(NoItemsFound):
        search_landsat(source, start=datetime(2025, 8, 1), end=datetime(2025, 8, 2))
    # A local source keeps items that do not report cloud cover at all.
    assert [item.id for item in search_landsat(source, max_cloud_cover=0)] == [ROW_073]


# --- Sentinel-2: 33 tiles of one datatake across UTM zones 58, 59 and 60 -----------------------


@pytest.mark.parametrize(
    ("aoi", "tiles"),
    [
        (Point(168.1, 56.3).buffer(0.02), {"T58VFH", "T59VLC"}),  # zone 58/59 overlap
        (box(173.5, 57.8, 173.9, 58.2), {"T59VPE", "T60VUK"}),  # zone 59/60 overlap
        (Point(168.45, 56.1).buffer(0.02), {"T59VLC"}),  # T58VFH's bbox covers it, not its data
    ],
)
def test_sentinel2_search_filters_by_tile_footprint(aoi, tiles: set[str]) -> None:
    items = search_items(
        StacSource(str(PC_S2_SEARCH)),
        collection="sentinel-2-l2a",
        geometry=aoi,
        start=datetime(2019, 1, 1),
        end=datetime(2019, 1, 2),
    )
    assert {item.id.split("_")[4] for item in items} == tiles
    # pystac migrates projection v1 `proj:epsg` to v2 `proj:code` on read.
    zones = {item.properties["proj:code"] for item in items}
    assert zones == {f"EPSG:326{tile[1:3]}" for tile in tiles}
    assert [item.id for item in items] == sorted(item.id for item in items)  # same datetime


def test_suggested_cloud_limit_really_admits_an_item() -> None:
    source = StacSource(str(PC_S2_SEARCH))
    window = {"start": datetime(2019, 1, 1), "end": datetime(2019, 1, 2)}
    aoi = Point(168.1, 56.3).buffer(0.02)  # T58VFH (93.6 %) and T59VLC (36.339903 %)
    with pytest.raises(NoItemsFound) as raised:
        search_items(source, collection="sentinel-2-l2a", geometry=aoi, max_cloud_cover=5, **window)
    suggested = float(re.search(r"at least ([0-9.]+)", str(raised.value)).group(1))
    found = search_items(
        source, collection="sentinel-2-l2a", geometry=aoi, max_cloud_cover=suggested, **window
    )
    assert [item.id.split("_")[4] for item in found] == ["T59VLC"]


def test_all_33_sentinel2_tiles_are_read_with_assets() -> None:
    items = search_items(
        StacSource(str(PC_S2_SEARCH)),
        collection="sentinel-2-l2a",
        geometry=box(160, 50, 180, 60),
        start=datetime(2019, 1, 1),
        end=datetime(2019, 1, 2),
    )
    assert len(items) == len(load_json(PC_S2_SEARCH)["features"]) == 33
    codes = {item.properties["proj:code"] for item in items}
    assert codes == {"EPSG:32658", "EPSG:32659", "EPSG:32660"}
    assert all({"B04", "B08", "SCL"} <= set(item.assets) for item in items)


# --- Earth Search, USGS and single-item documents ----------------------------------------------


@pytest.fixture()
def mixed_providers(tmp_path: Path) -> StacSource:
    documents = [USGS_ITEM, EARTH_SEARCH_ITEM, USGS_008059_SR, USGS_008059_ST]
    return write_collection(tmp_path / "mixed.json", [load_json(p) for p in documents])


def footprint_centre(path: Path):
    return shape(load_json(path)["geometry"]).centroid.buffer(0.01)


def test_usgs_stac_server_item(mixed_providers: StacSource) -> None:
    (item,) = search_items(
        mixed_providers,
        collection="landsat-c2l2-sr",
        geometry=footprint_centre(USGS_ITEM),
        start=datetime(2020, 1, 14),
        end=datetime(2020, 1, 15),
    )
    assert item.id == "LC08_L2SP_028030_20200114_20200824_02_T1_SR"
    assert {"red", "nir08", "swir16", "qa_pixel"} <= set(item.assets)
    assert item.assets["red"].href.startswith("https://landsatlook.usgs.gov/")


def test_usgs_stac_0_7_items_migrate_and_split_by_collection(mixed_providers: StacSource) -> None:
    window = {"start": datetime(2019, 12, 1), "end": datetime(2019, 12, 2)}
    aoi = footprint_centre(USGS_008059_SR)
    (sr,) = search_items(mixed_providers, collection="landsat-c2l2-sr", geometry=aoi, **window)
    (st,) = search_items(mixed_providers, collection="landsat-c2l2-st", geometry=aoi, **window)
    assert sr.id == st.id == "LC08_L2SP_008059_20191201_20200825_02_T1"
    assert "SR_B4.TIF" in sr.assets and "ST_B10.TIF" in st.assets
    assert sr.properties["eo:cloud_cover"] == pytest.approx(81.02)
    with pytest.raises(
        NoItemsFound, match="raise max_cloud_cover \\(stac_items\\) to at least 81.02"
    ):
        search_items(
            mixed_providers,
            collection="landsat-c2l2-sr",
            geometry=aoi,
            max_cloud_cover=50,
            **window,
        )


def test_earth_search_item(mixed_providers: StacSource) -> None:
    (item,) = search_items(
        mixed_providers,
        collection="sentinel-2-l2a",
        geometry=footprint_centre(EARTH_SEARCH_ITEM),
        start=datetime(2020, 2, 19),
        end=datetime(2020, 2, 20),
        max_cloud_cover=5,
    )
    assert item.id == "S2A_29RKH_20200219_0_L2A"
    assert {"red", "nir", "scl"} <= set(item.assets)
    assert item.assets["scl"].href.startswith("https://sentinel-cogs.s3.us-west-2.amazonaws.com/")


def test_single_item_file_is_a_source() -> None:
    source = StacSource(str(PC_S2_ITEM))
    assert source.kind == "item_collection"
    (item,) = search_items(
        source,
        collection="sentinel-2-l2a",
        geometry=footprint_centre(PC_S2_ITEM),
        start=datetime(2019, 6, 29),
        end=datetime(2019, 6, 30),
    )
    assert "SCL" in item.assets and item.assets["SCL"].href.startswith("https://")


def test_relative_hrefs_in_an_item_collection_resolve_next_to_the_file(tmp_path: Path) -> None:
    document = load_json(EARTH_SEARCH_ITEM)
    document["links"] = [link for link in document["links"] if link["rel"] != "self"]
    document["assets"]["scl"]["href"] = "rasters/SCL.tif"
    source = write_collection(tmp_path / "local.json", [document])
    (item,) = search_items(
        source,
        collection="sentinel-2-l2a",
        geometry=footprint_centre(EARTH_SEARCH_ITEM),
        start=datetime(2020, 2, 19),
        end=datetime(2020, 2, 20),
    )
    assert item.assets["scl"].href == str(tmp_path / "rasters" / "SCL.tif")


# --- static catalog ----------------------------------------------------------------------------


def build_static_catalog(root: Path) -> Path:
    """Catalog -> {landsat-c2-l2 (PC page), sentinel-2-l2a (Earth Search, local SCL)}."""
    catalog = pystac.Catalog(id="local", description="Real items from three providers")
    landsat_collection = pystac.Collection.from_file(str(STAC / "pc_landsat-c2-l2_collection.json"))
    landsat_collection.clear_links()
    landsat_collection.clear_items()
    for feature in load_json(PC_LANDSAT_PAGE)["features"]:
        landsat_collection.add_item(pystac.Item.from_dict(feature))
    sentinel_collection = pystac.Collection(
        id="sentinel-2-l2a",
        description="Earth Search item",
        extent=pystac.Extent(
            pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])
        ),
    )
    earth_search = pystac.Item.from_dict(load_json(EARTH_SEARCH_ITEM))
    earth_search.set_self_href(None)  # its s3:// self link would anchor relative hrefs
    earth_search.assets["scl"].href = "./SCL.tif"  # relative to the item's own JSON
    sentinel_collection.add_item(earth_search)
    catalog.add_children([landsat_collection, sentinel_collection])
    catalog.normalize_and_save(str(root), pystac.CatalogType.SELF_CONTAINED)
    item_folder = root / "sentinel-2-l2a" / earth_search.id
    shutil.copy(EARTH_SEARCH_DIR / "SCL.tif", item_folder / "SCL.tif")
    return root / "catalog.json"


def test_static_catalog_applies_the_same_filters(tmp_path: Path) -> None:
    source = StacSource(str(build_static_catalog(tmp_path / "catalog")))
    assert source.kind == "static_catalog"

    assert [item.id for item in search_landsat(source)] == [ROW_072, ROW_073]
    features = features_by_id(PC_LANDSAT_PAGE)
    clear = search_landsat(source, geometry=PATH_084, max_cloud_cover=10)
    expected = {i for i, f in features.items() if f["properties"]["eo:cloud_cover"] <= 10}
    assert {item.id for item in clear} == expected

    (sentinel,) = search_items(
        source,
        collection="sentinel-2-l2a",
        geometry=footprint_centre(EARTH_SEARCH_ITEM),
        start=datetime(2020, 2, 19),
        end=datetime(2020, 2, 20),
    )
    local_scl = Path(sentinel.assets["scl"].href)
    assert local_scl.is_absolute() and local_scl.is_file()
    assert local_scl.read_bytes() == (EARTH_SEARCH_DIR / "SCL.tif").read_bytes()
    assert sentinel.assets["red"].href.startswith("https://")

    with pytest.raises(NoItemsFound, match="available: landsat-c2-l2, sentinel-2-l2a"):
        search_landsat(source, collection="landsat-c2l2-sr")


# --- unreadable sources and bad arguments ------------------------------------------------------


def test_missing_or_broken_local_source(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(AssetReadError, match=f"Cannot read the local STAC source {missing}"):
        search_landsat(StacSource(str(missing)))
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "FeatureCollection", "features": [', encoding="utf-8")
    with pytest.raises(AssetReadError, match="broken.json.*JSONDecodeError"):
        search_landsat(StacSource(str(broken)))
    topology = tmp_path / "topology.json"
    topology.write_text('{"type": "Topology", "objects": {}}', encoding="utf-8")
    with pytest.raises(AssetReadError, match="neither a Catalog"):
        search_landsat(StacSource(str(topology)))


def test_unreachable_api_names_the_url() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/stac/v1"
    with pytest.raises(AssetReadError, match=f"Cannot open the STAC API at {url}.*retries"):
        search_landsat(StacSource(url, max_retries=1, backoff_factor=0.0, timeout_s=2.0))


@pytest.mark.parametrize(
    "bad",
    [
        {"start": DAY_END, "end": DAY_START},
        {"max_cloud_cover": 150},
        {"geometry": {"type": "Point", "coordinates": [0, 0]}},
        {"geometry": box(500000, 4000000, 510000, 4010000)},
        {"start": "2025-07-22"},
        {"max_items": 0},
        {"collection": ""},
    ],
)
def test_bad_arguments_raise_config_error(landsat_page: StacSource, bad: dict) -> None:
    with pytest.raises(ConfigError):
        search_landsat(landsat_page, **bad)


# --- API request construction (no server: the client is opened from a local landing page) -----


def open_landing_page(tmp_path: Path, conforms_to: list[str], **settings: object):
    landing = {
        "type": "Catalog",
        "id": "landing",
        "description": "STAC API landing page",
        "stac_version": "1.0.0",
        # pystac-client needs a search link to build a search; nothing is ever sent to it.
        "links": [
            {
                "rel": "search",
                "type": "application/geo+json",
                "href": "http://127.0.0.1:9/search",
                "method": "POST",
            }
        ],
        "conformsTo": ["https://api.stacspec.org/v1.0.0/core", *conforms_to],
    }
    path = tmp_path / "landing.json"
    path.write_text(json.dumps(landing), encoding="utf-8")
    return _open_api_client(StacSource(str(path), **settings))


def test_api_client_retries_and_timeout(tmp_path: Path) -> None:
    client = open_landing_page(tmp_path, [], max_retries=3, backoff_factor=0.25, timeout_s=12.5)
    stac_io = client._stac_io
    assert stac_io.timeout == 12.5
    retry = stac_io.session.get_adapter("https://example.com").max_retries
    assert retry.total == 3 and retry.backoff_factor == 0.25
    assert set(retry.status_forcelist) == {429, 500, 502, 503, 504}
    assert retry.respect_retry_after_header
    assert "POST" in retry.allowed_methods  # item search is a POST


ITEM_SEARCH = "https://api.stacspec.org/v1.0.0/item-search"


@pytest.mark.parametrize(
    ("conformance", "expected"),
    [
        ([f"{ITEM_SEARCH}#filter", f"{ITEM_SEARCH}#query"], "filter"),
        ([f"{ITEM_SEARCH}#query"], "query"),
        ([], None),
    ],
)
def test_cloud_filter_uses_cql2_then_query_extension(
    tmp_path: Path, conformance: list[str], expected: str | None
) -> None:
    client = open_landing_page(tmp_path, [ITEM_SEARCH, *conformance])
    query = _Query("landsat-c2-l2", OVERLAP_072_073, DAY_START, DAY_END, 20.0)
    parameters = _api_search_parameters(client, query, page_size=50, limit=None)

    assert parameters["collections"] == ["landsat-c2-l2"] and parameters["limit"] == 50
    assert parameters["intersects"]["type"] == "Polygon"
    assert parameters["datetime"] == [DAY_START, DAY_END]
    if expected == "filter":
        assert parameters["filter"] == {
            "op": "<=",
            "args": [{"property": "eo:cloud_cover"}, 20.0],
        }
        assert parameters["filter_lang"] == "cql2-json" and "query" not in parameters
    elif expected == "query":
        assert parameters["query"] == {"eo:cloud_cover": {"lte": 20.0}}
        assert "filter" not in parameters
    else:
        assert "filter" not in parameters and "query" not in parameters

    body = client.search(**parameters).get_parameters()  # the POST body pystac-client would send
    assert body["datetime"] == "2025-07-22T00:00:00Z/2025-07-23T00:00:00Z"
    assert body["collections"] == ("landsat-c2-l2",) and body["limit"] == 50
    assert body.get("filter-lang") == ("cql2-json" if expected == "filter" else None)
    assert "sortby" not in body


def test_max_items_sorts_server_side_when_the_api_can(tmp_path: Path) -> None:
    client = open_landing_page(tmp_path, [ITEM_SEARCH, f"{ITEM_SEARCH}#sort"])
    query = _Query("landsat-c2-l2", OVERLAP_072_073, DAY_START, DAY_END, None)
    parameters = _api_search_parameters(client, query, page_size=100, limit=5)
    assert [order["field"] for order in parameters["sortby"]] == ["properties.datetime", "id"]
    assert parameters["max_items"] == 5
    assert client.search(**parameters).get_parameters()["limit"] == 5


def test_a_source_gives_up_after_a_documented_bound():
    """Every attempt times out, with urllib3's backoff between retries (none before the first)."""
    default = StacSource(url="https://example.test/stac")
    assert default.give_up_after_s == 6 * 60.0 + (2 + 4 + 8 + 16) * 0.5  # 375 s
    assert StacSource(url="x.json", max_retries=0, timeout_s=10).give_up_after_s == 10.0
