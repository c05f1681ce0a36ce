"""AOI registry: good GeoJSON loads, and every kind of bad GeoJSON is refused with a fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from shapely.geometry import MultiPolygon, Polygon, mapping

from geocluster_dagster.aoi import (
    AOI,
    AOI_ID_PATTERN,
    load_aoi,
    load_registry,
    parse_geometry,
    validate_aoi_id,
)
from geocluster_dagster.errors import GeoclusterError, InvalidAOI


def square(x: float, y: float, size: float = 1.0, *, clockwise: bool = False) -> list:
    """A closed square ring, counter-clockwise unless asked otherwise."""
    ring = [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
    return ring[::-1] if clockwise else ring


def polygon(*rings: list) -> dict:
    return {"type": "Polygon", "coordinates": list(rings)}


def feature(geometry: dict, **properties: object) -> dict:
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


# --- good input -------------------------------------------------------------------------------


def test_bare_geometry_feature_and_collection_files_in_a_folder(tmp_path: Path) -> None:
    write(tmp_path / "lake-a.geojson", feature(polygon(square(6, 46)), name="Lake A"))
    write(tmp_path / "bare_b.json", polygon(square(7, 46)))
    write(
        tmp_path / "several.geojson",
        {
            "type": "FeatureCollection",
            "features": [
                {**feature(polygon(square(8, 46))), "id": "from-feature-id"},
                feature(polygon(square(9, 46)), id="from-properties-id", title="T"),
                feature(polygon(square(10, 46)), aoi_id="from-aoi-id"),
            ],
        },
    )
    (tmp_path / "notes.txt").write_text("not an AOI", encoding="utf-8")

    registry = load_registry(tmp_path)

    assert sorted(registry) == [
        "bare_b",
        "from-aoi-id",
        "from-feature-id",
        "from-properties-id",
        "lake-a",
    ]
    assert registry["lake-a"].name == "Lake A"  # the stem is the id of a single-feature file
    assert registry["from-properties-id"].name == "T"
    assert registry["bare_b"].name == "bare_b"
    assert registry["bare_b"].bbox == (7.0, 46.0, 8.0, 47.0)
    assert all(re.match(AOI_ID_PATTERN, aoi_id) for aoi_id in registry)


def test_feature_collection_file_as_registry(tmp_path: Path) -> None:
    collection = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": [
            {**feature(polygon(square(-60, -3)), name="Manaus"), "id": "manaus"},
            {**feature(polygon(square(30, -1))), "id": 7},  # numeric ids are allowed
        ],
    }
    registry = load_registry(write(tmp_path / "aois.geojson", collection))
    assert sorted(registry) == ["7", "manaus"]
    assert registry["manaus"].geometry.equals(Polygon(square(-60, -3)))
    assert load_aoi(tmp_path / "aois.geojson", "manaus").name == "Manaus"


def test_multipolygon_and_polygon_with_hole_and_3d_positions(tmp_path: Path) -> None:
    multi = {"type": "MultiPolygon", "coordinates": [[square(0, 0)], [square(5, 5)]]}
    holed = polygon(square(0, 0, 10), square(4, 4, 2, clockwise=True))
    three_d = polygon([[x, y, 100.0] for x, y in square(20, 20)])
    aoi_multi = parse_geometry(multi, aoi_id="multi")
    aoi_holed = parse_geometry(holed, aoi_id="holed")
    aoi_3d = parse_geometry(three_d, aoi_id="three-d")
    assert isinstance(aoi_multi, MultiPolygon) and aoi_multi.area == pytest.approx(2.0)
    assert isinstance(aoi_holed, Polygon) and len(aoi_holed.interiors) == 1
    assert aoi_holed.area == pytest.approx(100.0 - 4.0)
    assert not aoi_3d.has_z


def test_auto_orient_fixes_winding_silently(tmp_path: Path) -> None:
    clockwise = polygon(square(0, 0, 10, clockwise=True), square(4, 4, 2))  # both rings wrong
    fixed = parse_geometry(clockwise, aoi_id="cw", auto_orient=True)
    assert fixed.exterior.is_ccw
    assert not fixed.interiors[0].is_ccw
    assert fixed.area == pytest.approx(96.0)

    multi = {
        "type": "MultiPolygon",
        "coordinates": [[square(0, 0)], [square(5, 5, clockwise=True)]],
    }
    write(tmp_path / "mixed.geojson", feature(multi))
    aoi = load_registry(tmp_path, auto_orient=True)["mixed"]
    assert all(part.exterior.is_ccw for part in aoi.geometry.geoms)
    with pytest.raises(InvalidAOI, match="part 1"):
        load_registry(tmp_path)


def test_to_geojson_round_trips(tmp_path: Path) -> None:
    aoi = AOI(
        id="round-trip",
        name="Round trip",
        geometry=Polygon(square(3, 4), [square(3.2, 4.2, 0.1, clockwise=True)]),
        properties={"owner": "me"},
    )
    document = aoi.to_geojson()
    assert document["type"] == "Feature" and document["bbox"] == [3.0, 4.0, 4.0, 5.0]
    loaded = load_aoi(write(tmp_path / "x.geojson", document), "round-trip")
    assert loaded == aoi
    assert hash(loaded) == hash(aoi)  # frozen dataclass stays hashable despite the dict


# --- bad geometry -----------------------------------------------------------------------------

BOW_TIE = polygon([[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]])
SYDNEY_LAT_LON = polygon(
    [[-33.9, 151.1], [-33.9, 151.3], [-33.7, 151.3], [-33.7, 151.1], [-33.9, 151.1]]
)
UTM_METRES = polygon(
    [[500000, 4000000], [510000, 4000000], [510000, 4010000], [500000, 4010000], [500000, 4000000]]
)
WEB_MERCATOR_CRS = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}}

BAD_GEOMETRIES = {
    "missing coordinates": ({"type": "Polygon"}, ["no 'coordinates'", "[[[lon, lat]"]),
    "wrong nesting (too shallow)": (
        {"type": "Polygon", "coordinates": square(0, 0)},
        ["wrong nesting", "too shallow"],
    ),
    "wrong nesting (too deep)": (
        {"type": "Polygon", "coordinates": [[square(0, 0)]]},
        ["wrong nesting", "too deep"],
    ),
    "multipolygon given polygon nesting": (
        {"type": "MultiPolygon", "coordinates": [square(0, 0)]},
        ["wrong nesting", "MultiPolygon"],
    ),
    "unclosed ring": (polygon(square(0, 0)[:-1]), ["not closed", "repeat the first position"]),
    "too few points": (polygon([[0, 0], [1, 0], [0, 0]]), ["too few points", "at least 4"]),
    "non-numeric position": (polygon([[0, 0], [1, "a"], [1, 1], [0, 0]]), ["finite numbers"]),
    "bow-tie": (BOW_TIE, ["Self-intersection", "make_valid", "buffer(0)"]),
    "point": ({"type": "Point", "coordinates": [1, 2]}, ["must be areas"]),
    "linestring": ({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, ["must be areas"]),
    "geometry collection": ({"type": "GeometryCollection", "geometries": []}, ["MultiPolygon"]),
    "empty polygon": ({"type": "Polygon", "coordinates": []}, ["empty geometry"]),
    "empty multipolygon": ({"type": "MultiPolygon", "coordinates": []}, ["empty geometry"]),
    "clockwise exterior": (
        polygon(square(0, 0, clockwise=True)),
        ["exterior ring is clockwise", "RFC 7946", "auto_orient=True"],
    ),
    "counter-clockwise hole": (
        polygon(square(0, 0, 10), square(4, 4, 2)),
        ["hole 0 is counter-clockwise", "auto_orient=True"],
    ),
    "lat/lon swapped": (SYDNEY_LAT_LON, ["swap to [lon, lat]"]),
    "latitude out of range": (polygon(square(120, 89.5, 1)), ["beyond +/-90"]),
    "projected coordinates": (UTM_METRES, ["WGS84 lon/lat", "ogr2ogr -t_srs EPSG:4326"]),
    "non-WGS84 crs member": ({**polygon(square(0, 0)), "crs": WEB_MERCATOR_CRS}, ["not WGS84"]),
    "antimeridian crossing": (
        polygon([[179, 0], [-179, 0], [-179, 1], [179, 1], [179, 0]]),
        ["antimeridian", "split it"],
    ),
    "not an object": ([[0, 0], [1, 1]], ["malformed GeoJSON"]),
}


@pytest.mark.parametrize("case", sorted(BAD_GEOMETRIES))
def test_bad_geometry_is_refused_with_aoi_problem_and_fix(case: str) -> None:
    geometry, expected = BAD_GEOMETRIES[case]
    with pytest.raises(InvalidAOI) as raised:
        parse_geometry(geometry, aoi_id="my-aoi")
    message = str(raised.value)
    assert "'my-aoi'" in message
    for fragment in expected:
        assert fragment in message


def test_bad_geometry_in_a_file_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "bowtie.geojson", feature(BOW_TIE))
    with pytest.raises(InvalidAOI) as raised:
        load_registry(tmp_path)
    assert "'bowtie'" in str(raised.value)
    assert str(tmp_path / "bowtie.geojson") in str(raised.value)
    assert isinstance(raised.value, GeoclusterError) and isinstance(raised.value, ValueError)


def test_non_wgs84_crs_on_the_file_is_refused(tmp_path: Path) -> None:
    collection = {"type": "FeatureCollection", "crs": WEB_MERCATOR_CRS, "features": []}
    with pytest.raises(InvalidAOI, match="not WGS84.*ogr2ogr"):
        load_registry(write(tmp_path / "mercator.geojson", collection))


# --- bad ids and registries -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_id", "suggestion"),
    [
        ("Lake Geneva|2", "lake-geneva-2"),
        ("a,b", "a-b"),
        ("Kenya", "kenya"),
        ("", "my-aoi"),
        ("trailing\n", "trailing"),  # `$` alone would accept a trailing newline
    ],
)
def test_bad_id_suggests_a_slug(bad_id: str, suggestion: str) -> None:
    with pytest.raises(InvalidAOI) as raised:
        validate_aoi_id(bad_id)
    assert f"e.g. to {suggestion!r}" in str(raised.value)
    validate_aoi_id(suggestion)  # the suggestion itself is valid


def test_bad_id_in_a_file_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "fine-name.geojson", {**feature(polygon(square(0, 0))), "id": "Bad Id"})
    with pytest.raises(InvalidAOI, match=r"'Bad Id'.*'bad-id'.*fine-name\.geojson"):
        load_registry(tmp_path)


def test_duplicate_ids_name_both_files(tmp_path: Path) -> None:
    write(tmp_path / "one.geojson", {**feature(polygon(square(0, 0))), "id": "same"})
    write(tmp_path / "two.geojson", {**feature(polygon(square(2, 0))), "id": "same"})
    with pytest.raises(InvalidAOI) as raised:
        load_registry(tmp_path)
    message = str(raised.value)
    assert "'same'" in message and "one.geojson" in message and "two.geojson" in message


def test_feature_without_id_in_a_multi_feature_file(tmp_path: Path) -> None:
    collection = {
        "type": "FeatureCollection",
        "features": [feature(polygon(square(0, 0)), id="a"), feature(polygon(square(2, 0)))],
    }
    with pytest.raises(InvalidAOI, match=r"feature #1 in .*many\.geojson has no id"):
        load_registry(write(tmp_path / "many.geojson", collection))


def test_missing_registry_and_unreadable_json(tmp_path: Path) -> None:
    with pytest.raises(InvalidAOI, match="registry not found"):
        load_registry(tmp_path / "nowhere")
    (tmp_path / "broken.geojson").write_text('{"type": "Feature", ', encoding="utf-8")
    with pytest.raises(InvalidAOI, match=r"broken\.geojson is not valid JSON .*line 1"):
        load_registry(tmp_path)


def test_load_aoi_lists_known_ids(tmp_path: Path) -> None:
    write(tmp_path / "alpha.geojson", feature(polygon(square(0, 0))))
    write(tmp_path / "beta.geojson", feature(polygon(square(2, 0))))
    with pytest.raises(InvalidAOI, match="No AOI 'gamma'.*known ids: alpha, beta"):
        load_aoi(tmp_path, "gamma")
    assert load_aoi(tmp_path, "beta").geometry.equals(Polygon(square(2, 0)))


def test_feature_without_geometry(tmp_path: Path) -> None:
    write(tmp_path / "nothing.geojson", {"type": "Feature", "properties": {}, "geometry": None})
    with pytest.raises(InvalidAOI, match="'nothing'.*has no geometry"):
        load_registry(tmp_path)


def test_parse_geometry_accepts_shapely_mapping() -> None:
    geometry = Polygon(square(1, 1))
    assert parse_geometry(dict(mapping(geometry)), aoi_id="m").equals(geometry)
