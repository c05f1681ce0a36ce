"""The outputs as a static STAC catalog that STAC tools, odc-stac and QGIS users can browse.

Layout under the output root: ``stac/catalog.json`` -> one Collection per AOI,
``stac/<aoi>/collection.json`` -> a catalog per year, ``stac/<aoi>/<year>/catalog.json`` -> one
Item per AOI x date partition, ``stac/<aoi>/<year>/<date>.json``, with every product of the
partition as an asset (hrefs relative to the Item, so the output root can be moved or served
as it is). Each Item carries the grid (``proj:``), the window (``start_datetime``/
``end_datetime``), per-band names, types, nodata, scale/offset, units and statistics (STAC 1.1 ``bands``,
and ``eo:bands``/``raster:bands``, which odc-stac reads), the cluster map's classes
(``classification:classes``), how it was made (``processing:``), ``file:checksum``/``file:size``
of every asset, and links to the scenes it was derived from.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pystac
import rasterio
import shapely.geometry
from shapely.geometry.base import BaseGeometry

from .. import __version__
from ..storage import exclusive_lock, local_state, sha256_of, write_json
from .geotiff import BANDS, INDICES

CATALOG_DIR = "stac"
STAC_VERSION = "1.1.0"
EXTENSIONS = {
    "proj": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    # eo and raster v1.1: their `eo:bands` and `raster:bands` are what odc-stac reads band
    # names, nodata and scale from (it does not read STAC 1.1's `bands` yet), and v2.0 forbids
    # them; `bands` (core STAC 1.1) carries the same in the 1.1 form beside them.
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
    "processing": "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
}
#: The libraries whose versions decide the outputs, recorded in ``processing:software``.
SOFTWARE = ("rasterio", "odc-stac", "numpy", "scikit-learn", "spyndex", "dask", "pystac")
_COG = "image/tiff; application=geotiff; profile=cloud-optimized"


@dataclass(frozen=True)
class PartitionProducts:
    """What one partition produced, and where it came from."""

    aoi_id: str
    date_key: str
    start: datetime
    end: datetime
    aoi: BaseGeometry
    geotiff: Path
    """The geotiff product's folder (:mod:`geocluster_dagster.products.geotiff`)."""
    clusters: Path
    diagnostics: Path | None = None
    change: Path | None = None
    accuracy: Path | None = None
    report: Path | None = None
    sources: Sequence[pystac.Item] = ()
    search: str = ""
    """The STAC source searched (API root or catalog file)."""
    lineage: Mapping[str, Any] = field(default_factory=dict)
    """Settings that made the products (mask flags, composite, model, ...)."""


def file_fields(path: Path) -> dict[str, Any]:
    """``file:checksum`` (a SHA2-256 multihash, hex) and ``file:size`` of a file."""
    return {"file:checksum": "1220" + sha256_of(path), "file:size": path.stat().st_size}


def software_versions() -> dict[str, str]:
    """This package's version and those of the libraries that decide the outputs."""
    found = {"geocluster_dagster": __version__}
    for name in SOFTWARE:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _raster_bands(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The file's grid (``proj:``) and, per band, the STAC 1.1 band object (with the ``eo:``
    and ``raster:`` fields inline) and the statistics GDAL computes from the overviews."""
    # PAM off: GDAL would store the statistics it computes in a new <file>.aux.xml beside the
    # product, and the products are not this function's to change.
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(str(path)) as src:
        grid = {
            "proj:code": f"EPSG:{src.crs.to_epsg()}" if src.crs and src.crs.to_epsg() else None,
            # a CRS without an EPSG code (e.g. a custom projection) is given in full
            "proj:wkt2": src.crs.to_wkt() if src.crs and not src.crs.to_epsg() else None,
            "proj:shape": [src.height, src.width],
            "proj:transform": list(src.transform)[:6],
            "proj:bbox": list(src.bounds),
        }
        bands = []
        for index in src.indexes:
            name = src.descriptions[index - 1] or f"band_{index}"
            nodata = src.nodata
            scale, offset = src.scales[index - 1], src.offsets[index - 1]
            band: dict[str, Any] = {
                "name": name,
                "data_type": src.dtypes[index - 1],
                "nodata": "nan" if nodata is not None and nodata != nodata else nodata,
            }
            if (scale, offset) != (1, 0):  # stored as DN: value = DN * scale + offset
                band.update({"raster:scale": scale, "raster:offset": offset})
            if src.units[index - 1]:
                band["unit"] = src.units[index - 1]
            try:
                (stats,) = src.stats(indexes=[index], approx=True)
                # GDAL's statistics are of the stored DN; the unit is of the physical values.
                band["statistics"] = {
                    "minimum": stats.min * scale + offset,
                    "maximum": stats.max * scale + offset,
                    "mean": stats.mean * scale + offset,
                    "stddev": stats.std * scale,
                }
            except rasterio.errors.RasterioError:  # an all-nodata band has none
                pass
            bands.append(band)
    return grid, bands


def _asset(
    href_from: Path, path: Path, title: str, roles: list[str], media: str, **extra: Any
) -> pystac.Asset:
    return pystac.Asset(
        href=os.path.relpath(str(path), str(href_from.parent)),
        title=title,
        media_type=media,
        roles=roles,
        extra_fields={**file_fields(path), **extra},
    )


def _grid_fields(grid: dict[str, Any]) -> dict[str, Any]:
    """A raster asset's own grid (``proj:code``, shape, transform, bbox): on the rasters, not
    the Item, so that readers (odc-stac) take the figures and tables for what they are, not
    bands on the Item's grid."""
    return {k: v for k, v in grid.items() if v is not None}


def _band_fields(bands: list[dict[str, Any]]) -> dict[str, Any]:
    """The bands in the STAC 1.1 form, and in the eo:/raster: 1.x form odc-stac reads."""
    eo = [
        {"name": b["name"], **({"common_name": b["name"]} if b["name"] in _COMMON else {})}
        for b in bands
    ]
    raster = [
        {
            k.removeprefix("raster:"): v
            for k, v in b.items()
            if k in ("data_type", "nodata", "unit", "statistics", "raster:scale", "raster:offset")
        }
        for b in bands
    ]
    return {"bands": bands, "eo:bands": eo, "raster:bands": raster}


_COMMON = {"coastal", "blue", "green", "red", "nir", "swir16", "swir22", "lwir"}


def build_item(products: PartitionProducts, item_path: Path) -> pystac.Item:
    """The STAC Item of one partition, its asset hrefs relative to ``item_path``."""
    files = {
        name: _raster_bands(products.geotiff / name)
        for name in (BANDS, INDICES)
        if (products.geotiff / name).exists()
    }
    geometry = shapely.geometry.mapping(products.aoi)
    item = pystac.Item(
        id=f"{products.aoi_id}_{products.date_key}",
        geometry=json.loads(json.dumps(geometry)),
        bbox=list(products.aoi.bounds),
        datetime=None,
        start_datetime=products.start,
        # Inclusive, as STAC clients and people read it: the window's last second, not the next
        # window's first (which would put July 1st in June's Item).
        end_datetime=products.end - timedelta(seconds=1),
        properties={
            "geocluster:aoi_id": products.aoi_id,
            "geocluster:date_partition": products.date_key,
            "processing:software": software_versions(),
            "processing:datetime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "processing:lineage": json.dumps(dict(products.lineage), sort_keys=True, default=str),
        },
        stac_extensions=sorted(EXTENSIONS.values()),
    )
    for key, name, title in (
        ("bands", BANDS, "Spectral bands (COG)"),
        ("indices", INDICES, "Spectral indices (COG)"),
    ):
        if name in files:
            grid, bands = files[name]
            item.add_asset(
                key,
                _asset(
                    item_path, products.geotiff / name, title, ["data"], _COG,
                    **_grid_fields(grid), **_band_fields(bands),
                ),
            )  # fmt: skip
    _cluster_assets(item, item_path, products)
    if products.diagnostics is not None:
        for png in sorted(products.diagnostics.glob("*.png")):
            roles = ["overview"] if png.stem == "cluster_map" else ["metadata"]
            item.add_asset(
                f"plot_{png.stem}",
                _asset(item_path, png, png.stem.replace("_", " "), roles, pystac.MediaType.PNG),
            )
        scores = products.diagnostics / "scores.json"
        if scores.exists():
            item.add_asset(
                "scores",
                _asset(item_path, scores, "Clustering scores", ["metadata"], pystac.MediaType.JSON),
            )
    if products.change is not None and (products.change / "change.tif").exists():
        _change_assets(item, item_path, products.change)
        item.add_asset(
            "transitions",
            _asset(
                item_path,
                products.change / "transitions.csv",
                "Transitions in pixels and hectares",
                ["metadata"],
                "text/csv",
            ),
        )
    if products.accuracy is not None:
        for key, name, title, media in (
            (
                "accuracy",
                "accuracy.json",
                "Accuracy against the AOI's reference data (Olofsson et al. 2014)",
                pystac.MediaType.JSON,
            ),
            ("error_matrix", "error_matrix.csv", "Error matrix (reference samples)", "text/csv"),
            ("plot_error_matrix", "error_matrix.png", "error matrix", pystac.MediaType.PNG),
        ):
            if (products.accuracy / name).exists():
                item.add_asset(
                    key, _asset(item_path, products.accuracy / name, title, ["metadata"], media)
                )
    if products.report is not None:
        item.add_asset(
            "report",
            _asset(item_path, products.report, "Report of the partition (HTML, figures embedded)", ["overview"], pystac.MediaType.HTML),
        )  # fmt: skip
    for source in products.sources:
        href = source.get_self_href() or next(
            (link.href for link in source.links if link.rel == "self"), None
        )
        item.add_link(
            pystac.Link("derived_from", href or source.id, pystac.MediaType.JSON, title=source.id)
        )
    if products.search:
        item.add_link(pystac.Link("via", products.search, title="The STAC source searched"))
    return item


def _cluster_assets(item: pystac.Item, item_path: Path, products: PartitionProducts) -> None:
    folder = products.clusters
    summary = json.loads((folder / "summary.json").read_text())
    colours = _colours(folder / "cluster_map.tif")
    classes = [
        {
            "value": c["id"],
            "name": class_slug(c["name"]),  # classification v2: a machine-readable name
            "title": c["name"],
            "description": c["rule"],
            **({"color_hint": colours[c["id"]]} if c["id"] in colours else {}),
        }
        for c in summary.get("classes", [])
    ]
    _distinct_slugs(classes)
    _add_raster(
        item, item_path, "cluster_map", folder / "cluster_map.tif",
        "Cluster map (ids of the model, 0 = nodata)", classes=classes,
    )  # fmt: skip
    if (folder / "confidence.tif").exists():  # products made before the confidence layer lack it
        _add_raster(
            item, item_path, "confidence", folder / "confidence.tif",
            "Confidence of each label (simplified silhouette, percent; 25 or less: not "
            "confident; 255 = nodata)",
            roles=("data", "quality"),
        )  # fmt: skip
    for name, title, media in (
        ("signatures.csv", "Per-cluster signatures", "text/csv"),
        ("model.json", "Cluster model (plain parameters, no code)", pystac.MediaType.JSON),
        ("summary.json", "How the map was made", pystac.MediaType.JSON),
    ):
        item.add_asset(
            name.split(".")[0], _asset(item_path, folder / name, title, ["metadata"], media)
        )


def _change_assets(item: pystac.Item, item_path: Path, folder: Path) -> None:
    """The change product's three layers, each a single-band COG with its classes."""
    from ..change_states import STATE_NAMES, UNKNOWN
    from ..model_file import load_model

    if not (folder / "from.tif").exists():  # made before one file per layer (VERSION 3)
        _add_raster(
            item, item_path, "change_map", folder / "change.tif",
            "Change from the previous date (from, to, change)",
        )  # fmt: skip
        return
    names = load_model(folder / "model.json").names_by_id
    layers = (
        ("change_map", "change.tif", "Change from the previous date (0 = unknown)", {
            UNKNOWN: "unknown", **STATE_NAMES}),
        ("change_from", "from.tif", "Clusters of the previous date (0 = nodata)", names),
        ("change_to", "to.tif", "Clusters of this date, as compared (0 = nodata)", names),
    )  # fmt: skip
    for key, file, title, by_value in layers:
        colours = _colours(folder / file)
        classes = [
            {
                "value": value,
                "name": class_slug(name),
                "title": name,
                **({"color_hint": colours[value]} if value in colours else {}),
                **({"nodata": True} if value == 0 else {}),
            }
            for value, name in sorted(by_value.items())
        ]
        _distinct_slugs(classes)
        _add_raster(item, item_path, key, folder / file, title, classes=classes)


def _add_raster(
    item: pystac.Item,
    item_path: Path,
    key: str,
    path: Path,
    title: str,
    *,
    roles: Sequence[str] = ("data",),
    classes: list[dict[str, Any]] | None = None,
) -> None:
    """A COG product as the asset ``key``, with its grid (``proj:``), its bands' fields and, for
    a class map, its ``classification:classes``."""
    grid, bands = _raster_bands(path)
    extra = {"classification:classes": classes} if classes is not None else {}
    item.add_asset(
        key,
        _asset(
            item_path, path, title, list(roles), _COG, **_grid_fields(grid),
            **_band_fields(bands), **extra,
        ),
    )  # fmt: skip


def _distinct_slugs(classes: list[dict[str, Any]]) -> None:
    """Two names that differ only in punctuation keep distinct slugs (the value appended)."""
    slugs = [c["name"] for c in classes]
    for c in classes:
        if slugs.count(c["name"]) > 1:
            c["name"] = f"{c['name']}-{c['value']}"


def class_slug(name: str) -> str:
    """A class name in the form classification v2.0.0 requires of ``name`` (letters, digits,
    ``-`` and ``_``): 'dense vegetation (darkest)' -> 'dense-vegetation-darkest'."""
    slug = re.sub(r"[^0-9A-Za-z]+", "-", name).strip("-").lower()
    return slug or "unnamed"


def _colours(path: Path) -> dict[int, str]:
    with rasterio.open(str(path)) as src:
        try:
            table = src.colormap(1)
        except ValueError:  # no colour table
            return {}
    return {int(v): "{:02X}{:02X}{:02X}".format(*rgba[:3]) for v, rgba in table.items() if v}


def item_path(output_root: Path, aoi_id: str, date_key: str) -> Path:
    """Where the partition's Item is: ``stac/<aoi>/<year>/<date>.json``."""
    return output_root / CATALOG_DIR / aoi_id / date_key[:4] / f"{date_key}.json"


@dataclass(frozen=True)
class Published:
    """An Item written into the catalog, and what that cost."""

    path: Path
    bytes_written: int
    """Bytes of the documents written (the Item, its year's catalog, the AOI's collection and,
    for an AOI's first Item, the root catalog): bounded, whatever the number of Items."""


def write_item(products: PartitionProducts, output_root: Path) -> Path:
    """Write the partition's Item and link it into the catalog (created on first use);
    returns the Item's path."""
    path = item_path(output_root, products.aoi_id, products.date_key)
    document = build_item(products, path).to_dict(include_self_link=False, transform_hrefs=False)
    return publish_item(document, output_root, products.aoi_id, products.date_key).path


def publish_item(
    document: dict[str, Any], output_root: Path, aoi_id: str, date_key: str
) -> Published:
    """Write the Item ``document`` of the partition and link it into its year's catalog, the
    AOI's collection and the root catalog.

    Layout: ``stac/catalog.json`` -> ``stac/<aoi>/collection.json`` (one Collection per AOI) ->
    ``stac/<aoi>/<year>/catalog.json`` -> ``stac/<aoi>/<year>/<date>.json``. A partition
    rewrites its Item, its year's catalog (at most 24 Items, half-month windows) and its AOI's
    collection (one entry per year); the root catalog only when the AOI is new. So adding an
    Item costs the same at the 10,000th partition as at the first, and partitions of other
    AOIs never wait for each other's catalog updates.
    """
    path = item_path(output_root, aoi_id, date_key)
    document = {**document, "collection": aoi_id, "stac_version": STAC_VERSION}
    document["links"] = [
        {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
        {"rel": "parent", "href": "./catalog.json", "type": "application/json"},
        {"rel": "collection", "href": "../collection.json", "type": "application/json"},
        *[link for link in document.get("links", []) if link["rel"] not in _STRUCTURE],
    ]
    entry = {
        "href": f"./{path.name}",
        "bbox": document["bbox"],
        "start": document["properties"]["start_datetime"],
        "end": document["properties"]["end_datetime"],
    }
    written = 0
    with _aoi_lock(output_root, aoi_id, date_key):
        written += _write(document, path)
        written += _update_aoi(output_root, aoi_id, date_key[:4], document["id"], entry)
    _remove_legacy_item(output_root, aoi_id, date_key)
    written += _list_in_root(output_root, aoi_id)
    return Published(path, written)


def withdraw_item(output_root: Path, aoi_id: str, date_key: str) -> bool:
    """Take the partition's Item out of the catalog (file and links): a run is rewriting its
    products, and the Item's checksums and figures would describe the earlier ones. The
    partition's ``stac_item`` step publishes it again. True if there was one."""
    path = item_path(output_root, aoi_id, date_key)
    found = _remove_legacy_item(output_root, aoi_id, date_key)
    if not path.exists():
        return found
    with _aoi_lock(output_root, aoi_id, date_key):
        _update_aoi(output_root, aoi_id, date_key[:4], f"{aoi_id}_{date_key}", None)
        path.unlink(missing_ok=True)
    return True


#: Links the catalog sets on every Item (any the Item came with are replaced).
_STRUCTURE = ("root", "parent", "collection", "self")


def _remove_legacy_item(output_root: Path, aoi_id: str, date_key: str) -> bool:
    """Remove the Item where versions before the per-AOI layout wrote it (under one
    collection, ``stac/outputs/``), when the partition's Item is written or withdrawn. True if
    there was one."""
    legacy = output_root / CATALOG_DIR / "outputs" / aoi_id / f"{date_key}.json"
    if not legacy.is_file():  # (exists() is False too where a file stands for a folder)
        return False
    legacy.unlink()
    return True


def _update_aoi(
    output_root: Path, aoi_id: str, year: str, item_id: str, entry: dict[str, Any] | None
) -> int:
    """Link the Item ``item_id`` (``entry``: href, bbox, start, end) into its year's catalog,
    or unlink it (``entry`` None), and bring the AOI's collection up to date. Returns the bytes
    written."""
    folder = output_root / CATALOG_DIR / aoi_id
    year_file = folder / year / "catalog.json"
    items = _bookkeeping(year_file, "geocluster:items")
    if entry is None:
        items.pop(item_id, None)
    else:
        items[item_id] = entry
    written = 0
    years = _bookkeeping(folder / "collection.json", "geocluster:years")
    if items:
        written += _write(_year_catalog(aoi_id, year, items), year_file)
        years[year] = _extent_of(list(items.values()))
    else:  # the year's last Item withdrawn: the year leaves the collection
        year_file.unlink(missing_ok=True)
        years.pop(year, None)
    written += _write(_collection(aoi_id, years), folder / "collection.json")
    return written


def _bookkeeping(path: Path, key: str) -> dict[str, Any]:
    """What a catalog document of ours records for its next update (not part of STAC)."""
    if not path.exists():
        return {}
    found: dict[str, Any] = json.loads(path.read_text()).get(key, {})
    return found


def _extent_of(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The bbox and time span covering ``entries`` (each with bbox, start, end)."""
    boxes = [e["bbox"] for e in entries]
    return {
        "bbox": [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ],
        "start": min(e["start"] for e in entries),
        "end": max(e["end"] for e in entries),
    }


def _year_catalog(aoi_id: str, year: str, items: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": f"{aoi_id}-{year}",
        "description": f"The partitions of AOI {aoi_id} in {year}: one Item per date window.",
        "links": [
            {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../collection.json", "type": "application/json"},
            *[{"rel": "item", "href": e["href"], "type": "application/geo+json"} for _, e in sorted(items.items())],
        ],
        # Bookkeeping for the next update (each Item's extent), not part of the STAC spec.
        "geocluster:items": items,
    }  # fmt: skip


def _collection(aoi_id: str, years: dict[str, Any]) -> dict[str, Any]:
    """The AOI's collection; with no year (every Item withdrawn) it covers the whole world and
    all time (a STAC open interval)."""
    extent = _extent_of(list(years.values())) if years else None
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "id": aoi_id,
        "title": f"geocluster outputs of AOI {aoi_id}",
        "description": "Cloud-free composites, cluster maps, diagnostics and change of each "
        f"date window of AOI {aoi_id}.",
        "license": "other",
        "extent": {
            "spatial": {"bbox": [extent["bbox"] if extent else [-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [[extent["start"], extent["end"]] if extent else [None, None]]},
        },
        "links": [
            {"rel": "root", "href": "../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
            *[{"rel": "child", "href": f"./{year}/catalog.json", "type": "application/json"} for year in sorted(years)],
        ],
        # Bookkeeping for the next update (each year's extent), not part of the STAC spec.
        "geocluster:years": years,
    }  # fmt: skip


def _list_in_root(output_root: Path, aoi_id: str) -> int:
    """Link the AOI's collection from the root catalog, if it is not yet (and drop the link of
    the one collection earlier versions kept every Item in). Returns the bytes written."""
    folder = output_root / CATALOG_DIR
    root = folder / "catalog.json"
    child = f"./{aoi_id}/collection.json"
    with exclusive_lock(
        local_state(output_root) / ".locks" / "stac" / "catalog.lock",
        what="The output STAC catalog's root",
        holder=f"AOI {aoi_id}",
        timeout_s=600,
        on_wait=lambda _: None,
    ):
        links = json.loads(root.read_text()).get("links", []) if root.exists() else []
        children = {link["href"] for link in links if link.get("rel") == "child"}
        if child in children and "./outputs/collection.json" not in children:
            return 0
        children = (children - {"./outputs/collection.json"}) | {child}
        return _write(_catalog(sorted(children)), root)


def _catalog(children: list[str]) -> dict[str, Any]:
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": "geocluster-outputs",
        "description": "Products of geocluster_dagster: one Collection per AOI, one Item per "
        "AOI x date partition.",
        "links": [
            {"rel": "root", "href": "./catalog.json", "type": "application/json"},
            *[{"rel": "child", "href": href, "type": "application/json"} for href in children],
        ],
    }


def _aoi_lock(output_root: Path, aoi_id: str, date_key: str) -> Any:
    """The lock under which one partition of an AOI at a time changes the AOI's catalogs. On
    object storage it holds on this machine; across machines the run queue's limit of one run
    per AOI (deploy/dagster.yaml) does."""
    return exclusive_lock(
        local_state(output_root) / ".locks" / "stac" / f"{aoi_id}.lock",
        what=f"The output STAC catalog of AOI {aoi_id}",
        holder=f"partition {aoi_id}|{date_key}",
        timeout_s=600,
        on_wait=lambda _: None,
    )


def _write(document: dict[str, Any], path: Path) -> int:
    """Write a catalog document (atomically); returns its size in bytes."""
    return write_json(document, path).stat().st_size
