"""Diagnoses that point the right way: each mistake named for what it is, with its fix."""

from __future__ import annotations

import json
from datetime import datetime

import pystac
import pytest
import shapely

from geocluster_dagster.aoi import load_registry, parse_geometry
from geocluster_dagster.defs.resources import AOIRegistry
from geocluster_dagster.demo import build_demo
from geocluster_dagster.errors import AssetReadError, InvalidAOI, NoItemsFound
from geocluster_dagster.search import StacSource, search_items

JUNE = {"start": datetime(2023, 6, 1), "end": datetime(2023, 7, 1)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return build_demo(tmp_path_factory.mktemp("demo") / "catalog")


def _demo_ring(demo) -> list[list[float]]:
    return json.loads(demo.aoi_registry.read_text())["features"][0]["geometry"]["coordinates"][0]


def test_longitudes_in_0_to_360_are_named_as_such_not_as_metres():
    ring = [[190.0, 10.0], [191.0, 10.0], [191.0, 11.0], [190.0, 11.0], [190.0, 10.0]]
    with pytest.raises(InvalidAOI, match=r"0\.\.360 convention.*subtract 360") as err:
        parse_geometry({"type": "Polygon", "coordinates": [ring]}, aoi_id="pacific")
    assert "metres" not in str(err.value)


def test_a_swapped_ring_is_told_where_it_lies_and_where_it_belongs(demo):
    swapped = [[lat, lon] for lon, lat in _demo_ring(demo)]
    with pytest.raises(InvalidAOI) as err:
        parse_geometry({"type": "Polygon", "coordinates": [swapped]}, aoi_id="demo")
    message = str(err.value)
    assert "exterior ring is clockwise" in message  # true, but not the whole story
    assert "it lies at lon 35.00, lat -84.00" in message
    assert "it belongs at lon -84.00, lat 35.00" in message and "swap each position" in message


def test_a_swapped_aoi_is_checked_against_the_catalog(demo):
    swapped = shapely.Polygon([(lat, lon) for lon, lat in _demo_ring(demo)])
    with pytest.raises(NoItemsFound, match=r"intersect it with its axes swapped.*\[lon, lat\]"):
        search_items(
            StacSource(str(demo.catalog)), collection="landsat-c2-l2", geometry=swapped, **JUNE
        )


def test_an_empty_item_collection_is_called_empty(tmp_path, demo):
    empty = tmp_path / "items.json"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    aoi = shapely.Polygon(_demo_ring(demo))
    with pytest.raises(NoItemsFound, match="holds no STAC items at all") as err:
        search_items(StacSource(str(empty)), collection="landsat-c2-l2", geometry=aoi, **JUNE)
    assert "(none)" not in str(err.value)


def test_items_without_a_footprint_are_named(tmp_path, demo):
    documents = []
    for item in pystac.read_file(str(demo.catalog)).get_items(recursive=True):
        item.make_asset_hrefs_absolute()
        document = item.to_dict(include_self_link=False)
        document["geometry"], document["bbox"] = None, None
        documents.append(document)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"type": "FeatureCollection", "features": documents}))
    aoi = shapely.Polygon(_demo_ring(demo))
    with pytest.raises(NoItemsFound, match="none has a footprint") as err:
        search_items(StacSource(str(bare)), collection="landsat-c2-l2", geometry=aoi, **JUNE)
    assert "nan" not in str(err.value)


def test_one_malformed_aoi_does_not_stop_the_others(tmp_path, demo):
    registry = tmp_path / "aois"
    registry.mkdir()
    (registry / "good.geojson").write_text(
        json.dumps(
            {
                "type": "Feature",
                "id": "good",
                "geometry": {"type": "Polygon", "coordinates": [_demo_ring(demo)]},
            }
        )
    )
    clockwise = list(reversed(_demo_ring(demo)))
    (registry / "bad.geojson").write_text(
        json.dumps(
            {
                "type": "Feature",
                "id": "bad",
                "geometry": {"type": "Polygon", "coordinates": [clockwise]},
            }
        )
    )
    (registry / "broken.geojson").write_text("{ not json")
    with pytest.raises(InvalidAOI):
        load_registry(registry)  # strict: `geocluster aois` shows every problem
    resource = AOIRegistry(path=str(registry))
    assert resource.get("good").id == "good"
    with pytest.raises(InvalidAOI, match="'bad'.*clockwise"):
        resource.get("bad")
    with pytest.raises(InvalidAOI, match="not valid JSON"):
        resource.get("broken")
    with pytest.raises(InvalidAOI, match=r"malformed entries: bad, broken"):
        resource.get("elsewhere")


def test_a_cloud_cover_that_is_not_a_number_is_named_with_the_item(tmp_path, demo):
    documents = []
    for item in pystac.read_file(str(demo.catalog)).get_items(recursive=True):
        item.make_asset_hrefs_absolute()
        document = item.to_dict(include_self_link=False)
        document["properties"]["eo:cloud_cover"] = "12.5"
        documents.append(document)
    strings = tmp_path / "strings.json"
    strings.write_text(json.dumps({"type": "FeatureCollection", "features": documents}))
    aoi = shapely.Polygon(_demo_ring(demo))
    source = StacSource(str(strings))
    with pytest.raises(
        AssetReadError,
        match=r"eo:cloud_cover '12\.5', which is not a number.*max_cloud_cover: null",
    ):
        search_items(source, collection="landsat-c2-l2", geometry=aoi, max_cloud_cover=60, **JUNE)
    found = search_items(
        source, collection="landsat-c2-l2", geometry=aoi, max_cloud_cover=None, **JUNE
    )
    assert len(found) == 4
