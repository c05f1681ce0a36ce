"""Areas of interest: a registry of GeoJSON polygons, validated before anything is downloaded.

An AOI registry is either a folder of ``*.geojson`` / ``*.json`` files (each a Feature, a bare
Geometry or a FeatureCollection) or one FeatureCollection file. Every geometry must be a WGS84
lon/lat Polygon or MultiPolygon that follows RFC 7946 (exterior rings counter-clockwise, holes
clockwise). Bad input raises :class:`InvalidAOI` naming the AOI, the file, the problem and the fix.

Known limits: polygons crossing the antimeridian (longitudes spanning more than 180 degrees) are
refused, split them at +/-180 into a MultiPolygon; a lat/lon swap can only be detected when some
longitude is beyond +/-90 (a swapped AOI in Europe looks like valid coordinates elsewhere).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient
from shapely.validation import explain_validity

from geocluster_dagster.errors import InvalidAOI

# Ids become Dagster partition keys: '|' breaks multi-partition keys, ',' breaks UI backfills.
AOI_ID_PATTERN = r"^[a-z0-9_-]+$"

_AREA_TYPES = ("Polygon", "MultiPolygon")
_NON_AREA_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString")
_WGS84_CRS_NAME = re.compile(r"(CRS:?84|EPSG:+(\d+\.?\d*:)?4326)$", re.IGNORECASE)
_REGISTRY_SUFFIXES = (".geojson", ".json")


@dataclass(frozen=True)
class AOI:
    """One area of interest: an id usable as a partition key and a lon/lat (multi)polygon."""

    id: str
    """Slug matching ``AOI_ID_PATTERN``; used as the Dagster partition key."""
    name: str
    """Human-readable name (the feature's ``name`` or ``title`` property, else the id)."""
    geometry: Polygon | MultiPolygon
    """Valid EPSG:4326 lon/lat geometry with RFC 7946 winding."""
    properties: dict[str, Any] = field(default_factory=dict, hash=False)
    """The feature's GeoJSON properties other than ``name``."""

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(min lon, min lat, max lon, max lat)."""
        min_x, min_y, max_x, max_y = self.geometry.bounds
        return (min_x, min_y, max_x, max_y)

    def to_geojson(self) -> dict[str, Any]:
        """This AOI as a GeoJSON Feature (round-trips through :func:`load_registry`)."""
        return {
            "type": "Feature",
            "id": self.id,
            "bbox": list(self.bbox),
            "properties": {**self.properties, "name": self.name},
            "geometry": json.loads(shapely.to_geojson(self.geometry)),
        }


def outline_in(geometry: BaseGeometry, crs: Any) -> list[np.ndarray]:
    """The rings (outer and holes) of a lon/lat ``geometry`` as (n, 2) vertex arrays in
    ``crs``, e.g. the AOI's outline on a map of its products."""
    from rasterio.warp import transform_geom

    projected = shape(transform_geom("EPSG:4326", crs, shapely.geometry.mapping(geometry)))
    rings = []
    for polygon in getattr(projected, "geoms", [projected]):
        for ring in (polygon.exterior, *polygon.interiors):
            rings.append(np.asarray(ring.coords))
    return rings


def validate_aoi_id(aoi_id: str) -> str:
    """Return ``aoi_id`` if it is a valid partition-key slug, else raise InvalidAOI with a slug."""
    if not isinstance(aoi_id, str) or not re.fullmatch(AOI_ID_PATTERN, aoi_id):
        suggestion = _slugify(str(aoi_id)) or "my-aoi"
        raise InvalidAOI(
            f"AOI id {aoi_id!r} is not valid: ids become Dagster partition keys and must match "
            f"{AOI_ID_PATTERN} (lowercase letters, digits, '_' and '-'; '|' and ',' break "
            f"partition keys and backfills). Rename it, e.g. to {suggestion!r}."
        )
    return aoi_id


def parse_geometry(
    geojson_geometry: dict[str, Any], *, aoi_id: str, auto_orient: bool = False
) -> Polygon | MultiPolygon:
    """Validate a GeoJSON geometry dict and return it as a shapely (Multi)Polygon in lon/lat.

    With ``auto_orient=True`` rings with the wrong winding are silently re-oriented
    (exterior counter-clockwise, holes clockwise) instead of refused.
    """
    return _parse_geometry(geojson_geometry, where=f"AOI {aoi_id!r}", auto_orient=auto_orient)


def load_registry(
    path: str | Path, *, auto_orient: bool = False, invalid: dict[str, InvalidAOI] | None = None
) -> dict[str, AOI]:
    """Read every AOI in a folder of GeoJSON files, or in one FeatureCollection file, by id.

    A malformed entry raises, unless ``invalid`` is given: its error is then put there, under
    the entry's id as far as it can be told (else the file name), and the others are read, so
    that one broken AOI does not stop the partitions of every other.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _REGISTRY_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        raise InvalidAOI(
            f"AOI registry not found at {path}: create a folder with one <aoi-id>.geojson file "
            "per AOI, or point to a GeoJSON FeatureCollection file."
        )
    registry: dict[str, AOI] = {}
    origin: dict[str, Path] = {}
    for file in files:
        for aoi in _read_aoi_file(file, auto_orient=auto_orient, invalid=invalid):
            if aoi.id in registry or (invalid is not None and aoi.id in invalid):
                twice = InvalidAOI(
                    f"AOI id {aoi.id!r} is defined twice, in {origin.get(aoi.id, 'an entry')} "
                    f"and in {file}: ids must be unique across the registry; rename one of them."
                )
                if invalid is None:
                    raise twice
                registry.pop(aoi.id, None)
                invalid[aoi.id] = twice
                continue
            registry[aoi.id] = aoi
            origin[aoi.id] = file
    return registry


def load_aoi(path: str | Path, aoi_id: str, *, auto_orient: bool = False) -> AOI:
    """Return the AOI ``aoi_id`` from the registry at ``path`` (the whole registry is validated)."""
    validate_aoi_id(aoi_id)
    registry = load_registry(path, auto_orient=auto_orient)
    if aoi_id not in registry:
        known = ", ".join(sorted(registry)) or "(none)"
        raise InvalidAOI(
            f"No AOI {aoi_id!r} in the registry at {path}; known ids: {known}. "
            "Use one of these, or add a GeoJSON Feature with this id to the registry."
        )
    return registry[aoi_id]


def _read_aoi_file(
    file: Path, *, auto_orient: bool, invalid: dict[str, InvalidAOI] | None = None
) -> Iterator[AOI]:
    """The AOIs of one file; with ``invalid``, malformed ones are put there instead of raised."""
    try:
        features = _features_of(file)
    except InvalidAOI as err:
        if invalid is None:
            raise
        invalid[file.stem] = err
        return
    single = len(features) == 1
    for index, feature in enumerate(features):
        try:
            yield _feature_to_aoi(
                feature, file=file, index=index, stem_id=single, auto_orient=auto_orient
            )
        except InvalidAOI as err:
            if invalid is None:
                raise
            invalid[_probable_id(feature, file, index, single)] = err


def _probable_id(feature: Any, file: Path, index: int, single: bool) -> str:
    """The id a malformed feature was meant to have, as far as it can be told."""
    if isinstance(feature, dict):
        properties = feature.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        raw = feature.get("id", properties.get("id", properties.get("aoi_id")))
        if raw is not None:
            return str(raw)
    return file.stem if single else f"{file.name}#{index}"


def _features_of(file: Path) -> list[Any]:
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InvalidAOI(
            f"AOI file {file} is not valid JSON ({err.msg} at line {err.lineno} column "
            f"{err.colno}): fix the syntax, e.g. check it with `python -m json.tool {file}`."
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidAOI(
            f"AOI file {file} cannot be read ({err}): check its permissions and that it is "
            "UTF-8 GeoJSON."
        ) from err
    if not isinstance(document, dict):
        raise InvalidAOI(
            f"AOI file {file} holds a JSON {type(document).__name__}, not a GeoJSON object: "
            "write a Feature, a FeatureCollection or a Polygon/MultiPolygon geometry."
        )
    _check_crs(document, where=f"AOI file {file}")
    kind = document.get("type")
    if kind == "FeatureCollection":
        features = document.get("features")
        if not isinstance(features, list):
            raise InvalidAOI(
                f"AOI file {file} is a FeatureCollection without a 'features' list: "
                'add "features": [ ... ] with one Feature per AOI.'
            )
    elif kind == "Feature":
        features = [document]
    else:  # a bare geometry; _parse_geometry explains a wrong or missing type
        features = [{"type": "Feature", "geometry": document, "properties": {}}]
    return list(features)


def _feature_to_aoi(
    feature: Any, *, file: Path, index: int, stem_id: bool, auto_orient: bool
) -> AOI:
    label = f"feature #{index} in {file}"
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise InvalidAOI(
            f"{label} is not a GeoJSON Feature: each entry of 'features' must be "
            '{"type": "Feature", "geometry": {...}, "properties": {...}}.'
        )
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise InvalidAOI(f"{label} has 'properties' that is not an object: make it a JSON object.")
    raw_id = feature.get("id", properties.get("id", properties.get("aoi_id")))
    if raw_id is None:
        if not stem_id:
            raise InvalidAOI(
                f"{label} has no id: add an \"id\" to the feature (or an 'id'/'aoi_id' "
                "property); ids are needed when a file holds several AOIs."
            )
        raw_id = file.stem
    aoi_id = str(raw_id)
    try:
        validate_aoi_id(aoi_id)
    except InvalidAOI as err:
        raise InvalidAOI(f"{err} (in {file})") from None
    where = f"AOI {aoi_id!r} ({file})"
    _check_crs(feature, where=where)
    if "geometry" not in feature or feature["geometry"] is None:
        raise InvalidAOI(f"{where} has no geometry: add a Polygon or MultiPolygon 'geometry'.")
    geometry = _parse_geometry(feature["geometry"], where=where, auto_orient=auto_orient)
    other_properties = {key: value for key, value in properties.items() if key != "name"}
    name = properties.get("name") or properties.get("title") or aoi_id
    return AOI(id=aoi_id, name=str(name), geometry=geometry, properties=other_properties)


def _parse_geometry(geojson: Any, *, where: str, auto_orient: bool) -> Polygon | MultiPolygon:
    if not isinstance(geojson, dict) or "type" not in geojson:
        raise InvalidAOI(
            f"{where}: malformed GeoJSON, expected a geometry object with 'type' and "
            f"'coordinates', got {_preview(geojson)}."
        )
    kind = geojson["type"]
    if kind in _NON_AREA_TYPES:
        raise InvalidAOI(
            f"{where} is a {kind}, but AOIs must be areas (Polygon or MultiPolygon): draw a "
            "polygon around the area of interest (or buffer the point/line in a metric CRS)."
        )
    if kind not in _AREA_TYPES:
        raise InvalidAOI(
            f"{where}: geometry type {kind!r} is not supported: use a Polygon or MultiPolygon "
            "(merge GeometryCollection parts into one MultiPolygon)."
        )
    _check_crs(geojson, where=where)
    coordinates = geojson.get("coordinates")
    if coordinates is None:
        raise InvalidAOI(
            f"{where}: malformed GeoJSON, the {kind} has no 'coordinates': add "
            "[[[lon, lat], ...]] rings (the first position repeated as the last)."
        )
    polygons = [coordinates] if kind == "Polygon" else coordinates
    if not isinstance(polygons, (list, tuple)):
        raise InvalidAOI(f"{where}: malformed GeoJSON, 'coordinates' must be a list.")
    if not polygons or (kind == "Polygon" and not coordinates):
        raise InvalidAOI(
            f"{where} has an empty geometry: give at least one ring of 4 or more [lon, lat] "
            "positions."
        )
    for part, rings in enumerate(polygons):
        prefix = "coordinates" if kind == "Polygon" else f"coordinates[{part}]"
        _check_rings(rings, where=where, prefix=prefix, kind=kind)
    _check_lon_lat(polygons, where=where)

    # kind is "Polygon" or "MultiPolygon" (checked above), so shape() builds that class, and
    # force_2d keeps the geometry type.
    geometry = cast(Polygon | MultiPolygon, shapely.force_2d(shape(geojson)))
    if geometry.is_empty:
        raise InvalidAOI(f"{where} has an empty geometry: give a polygon with a non-zero area.")
    min_x, _, max_x, _ = geometry.bounds
    if max_x - min_x > 180:
        raise InvalidAOI(
            f"{where} spans longitudes {min_x:g}..{max_x:g} (more than 180 degrees), which looks "
            "like a polygon crossing the antimeridian; such AOIs are not supported: split it at "
            "+/-180 into a MultiPolygon with one part on each side."
        )
    if not geometry.is_valid:
        raise InvalidAOI(
            f"{where} is not a valid polygon: {explain_validity(geometry)}. Fix it, e.g. with "
            "shapely.make_valid(geometry) or geometry.buffer(0), or 'Fix geometries' in QGIS."
        )
    if geometry.area == 0:
        raise InvalidAOI(f"{where} has zero area: give a polygon that encloses an area.")
    return _oriented(geometry, where=where, auto_orient=auto_orient)


def _check_rings(rings: Any, *, where: str, prefix: str, kind: str) -> None:
    nesting = "[[[lon, lat], ...], ...]" if kind == "Polygon" else "[[[[lon, lat], ...]], ...]"
    if not isinstance(rings, (list, tuple)) or not rings:
        raise InvalidAOI(
            f"{where}: wrong nesting in {prefix}: a {kind} needs {nesting} (a list of rings, "
            "each a list of [lon, lat] positions)."
        )
    for r, ring in enumerate(rings):
        label = f"{prefix}[{r}]"
        if not isinstance(ring, (list, tuple)):
            raise InvalidAOI(
                f"{where}: wrong nesting at {label} = {_preview(ring)}: a {kind} needs {nesting}; "
                "wrap each ring of positions in a list."
            )
        for p, position in enumerate(ring):
            if not _is_position(position):
                depth_hint = (
                    "one list level too deep"
                    if isinstance(position, (list, tuple))
                    and position
                    and isinstance(position[0], (list, tuple))
                    else "one list level too shallow"
                    if isinstance(position, (int, float))
                    else "not a position"
                )
                raise InvalidAOI(
                    f"{where}: wrong nesting at {label}[{p}] = {_preview(position)} "
                    f"({depth_hint}); a {kind} needs {nesting} with finite numbers."
                )
        if len(ring) < 4:
            raise InvalidAOI(
                f"{where}: ring {label} has too few points ({len(ring)}): a linear ring needs "
                "at least 4 positions, e.g. a triangle is 3 corners plus the first repeated."
            )
        if list(ring[0][:2]) != list(ring[-1][:2]):
            raise InvalidAOI(
                f"{where}: ring {label} is not closed (starts at {ring[0]}, ends at {ring[-1]}): "
                f"repeat the first position {ring[0]} as the last."
            )


def _check_lon_lat(polygons: Sequence[Any], *, where: str) -> None:
    positions = [pos for rings in polygons for ring in rings for pos in ring]
    xs = [abs(pos[0]) for pos in positions]
    ys = [abs(pos[1]) for pos in positions]
    if max(xs) > 180 and max(xs) <= 360 and max(ys) <= 90:
        example = positions[xs.index(max(xs))]
        raise InvalidAOI(
            f"{where} has longitude {example[0]} (position {example}), beyond +/-180: it looks "
            "like the 0..360 convention; GeoJSON longitudes are -180..180: subtract 360 from "
            "every longitude above 180."
        )
    if max(xs) > 180 or max(ys) > 180:
        example = positions[max(range(len(positions)), key=lambda i: max(xs[i], ys[i]))]
        raise InvalidAOI(
            f"{where} has coordinates outside lon/lat range, e.g. {example}, which look projected "
            "(metres): GeoJSON must be WGS84 lon/lat; reproject, e.g. "
            "ogr2ogr -t_srs EPSG:4326 out.geojson in.geojson."
        )
    if max(ys) > 90:
        example = positions[ys.index(max(ys))]
        if max(xs) <= 90:
            raise InvalidAOI(
                f"{where} has latitude {example[1]} (position {example}), beyond +/-90, while "
                "every longitude would be a valid latitude: the axes look swapped. GeoJSON is "
                "lon,lat: swap to [lon, lat]."
            )
        raise InvalidAOI(
            f"{where} has latitude {example[1]} (position {example}) beyond +/-90: GeoJSON must "
            "be WGS84 [lon, lat] with latitudes in [-90, 90]; fix or reproject the coordinates."
        )


def _check_crs(document: dict[str, Any], *, where: str) -> None:
    crs = document.get("crs")
    if crs is None:
        return
    name = crs.get("properties", {}).get("name") if isinstance(crs, dict) else None
    if isinstance(name, str) and _WGS84_CRS_NAME.search(name):
        return
    raise InvalidAOI(
        f"{where} declares crs {_preview(crs)}, which is not WGS84: GeoJSON (RFC 7946) must be "
        "WGS84 lon/lat; reproject, e.g. ogr2ogr -t_srs EPSG:4326 out.geojson in.geojson, "
        "and drop the 'crs' member."
    )


def _oriented(
    geometry: Polygon | MultiPolygon, *, where: str, auto_orient: bool
) -> Polygon | MultiPolygon:
    parts = list(geometry.geoms) if isinstance(geometry, MultiPolygon) else [geometry]
    for number, polygon in enumerate(parts):
        holes_ccw = [ring.is_ccw for ring in polygon.interiors]
        if polygon.exterior.is_ccw and not any(holes_ccw):
            continue
        if auto_orient:
            oriented = [orient(polygon, sign=1.0) for polygon in parts]
            return MultiPolygon(oriented) if isinstance(geometry, MultiPolygon) else oriented[0]
        part = f" (part {number})" if isinstance(geometry, MultiPolygon) else ""
        problem = (
            "its exterior ring is clockwise"
            if not polygon.exterior.is_ccw
            else f"hole {holes_ccw.index(True)} is counter-clockwise"
        )
        # Swapping the axes mirrors a ring, so [lat, lon] positions of a counter-clockwise ring
        # read as clockwise: say where the AOI lies as given, so a swap is seen for what it is.
        centre = polygon.centroid
        swapped = (
            f" As given ([lon, lat]) it lies at lon {centre.x:.2f}, lat {centre.y:.2f}; if its "
            f"positions are [lat, lon] (it belongs at lon {centre.y:.2f}, lat {centre.x:.2f}), "
            "swap each position to [lon, lat] instead: that also fixes the winding."
            if not polygon.exterior.is_ccw and abs(centre.x) <= 90
            else ""
        )
        raise InvalidAOI(
            f"{where}{part} has the wrong winding: {problem}. RFC 7946 requires exterior rings "
            "counter-clockwise and holes clockwise: reverse the ring's positions, or set "
            "`auto_orient: true` on the aoi_registry resource (load_registry(..., "
            f"auto_orient=True)) to re-orient silently.{swapped}"
        )
    return geometry


def _is_position(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) in (2, 3)
        and all(
            isinstance(number, (int, float))
            and not isinstance(number, bool)
            and math.isfinite(number)
            for number in value
        )
    )


def _slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: The AOI registry properties that register an AOI's reference data for the accuracy asset.
REFERENCE_DATA, REFERENCE_LABEL = "reference_data", "reference_label"


def reference_of(aoi: AOI, registry: Path) -> tuple[Path, str | None] | None:
    """The AOI's reference data (its ``reference_data`` property: a GeoJSON, GeoPackage or
    shapefile; a relative path is relative to the registry's folder) and the label column its
    ``reference_label`` property names (None: the accuracy settings' default); None when the
    AOI registers none."""
    value = aoi.properties.get(REFERENCE_DATA)
    if not value:
        return None
    path = Path(str(value)).expanduser()
    if not path.is_absolute():
        path = (registry if registry.is_dir() else registry.parent) / path
    label = aoi.properties.get(REFERENCE_LABEL)
    return path, str(label) if label else None
