"""The demo on disk: STAC items and collection, COGs, the AOI registry, and the atomic build.

``build_demo`` writes a self-contained static STAC catalog (``catalog.json`` -> collection
``landsat-c2-l2`` -> one item per tile and date) shaped like the Planetary Computer's
``landsat-c2-l2`` items, one single-band COG per asset, the AOI registry and, last, a manifest
that marks the demo complete. The demo is built in a staging directory next to ``root`` and
renamed into place, so ``root`` never holds a half-built demo.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
import shapely
import shapely.geometry
from pyproj import CRS
from pystac.extensions.classification import Bitfield, Classification, ClassificationExtension
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from pystac.extensions.view import ViewExtension
from rasterio.transform import Affine

from geocluster_dagster.demo.landscape import (
    DEMO_CLASSES,
    LandCoverPatch,
    _from_local,
    _transformer,
    local_landscape,
)
from geocluster_dagster.demo.scene import (
    _PIXEL,
    _QA_BITFIELDS,
    DEMO_ACQUISITIONS,
    DEMO_TILES,
    SR_OFFSET,
    SR_SCALE,
    ST_OFFSET,
    ST_SCALE,
    Acquisition,
    Tile,
    _sample_tile,
    observe,
)
from geocluster_dagster.errors import ConfigError
from geocluster_dagster.storage import atomic_path, remove_quietly, write_json

DEMO_VERSION = "2"  # 2: reference points for the accuracy asset
DEMO_AOI_ID = "demo"
DEMO_COLLECTION = "landsat-c2-l2"
DEMO_MONTH = "2023-06-01"

_MANIFEST = "demo_manifest.json"
_AOI_REGISTRY = "aois.geojson"
_CATALOG_ID = "geocluster-demo"

# --------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True)
class DemoPaths:
    """Where a built demo lives and what it holds."""

    root: Path
    """Directory holding the whole demo (catalog, COGs, AOI registry)."""
    catalog: Path
    """The static STAC catalog's root ``catalog.json``."""
    aoi_registry: Path
    """GeoJSON FeatureCollection holding the demo AOI (feature id ``DEMO_AOI_ID``)."""
    aoi_id: str
    """Id of the demo AOI in the registry."""
    start: datetime
    """Start of the demo's time window (UTC, inclusive): the first day of ``DEMO_MONTH``."""
    end: datetime
    """End of the demo's time window (UTC, exclusive): the first day of the next month."""
    item_ids: tuple[str, ...]
    """Ids of the STAC items in the demo collection, by date then tile."""


def build_demo(
    root: Path | str, *, overwrite: bool = False, patch: LandCoverPatch | None = None
) -> DemoPaths:
    """Write the demo catalog into ``root`` (or return the one already there) and say where it is.

    Idempotent: if ``root`` holds a complete demo of the same ``DEMO_VERSION`` (and ``patch``)
    it is returned untouched unless ``overwrite``. Otherwise the demo is built in a temporary
    sibling directory and renamed into place, so ``root`` never holds a half-built demo.

    With ``patch``, the acquisitions from ``patch.since`` on see that disk of ground with
    another cover: a known change (the demo's ground is otherwise the same on both dates).
    """
    root = Path(root).expanduser().absolute()
    paths = _demo_paths(root)

    def complete(folder: Path) -> bool:
        return _is_complete(folder, patch)

    if not overwrite and complete(root):
        return paths
    _refuse_foreign_directory(root, overwrite)
    # Built in a temporary sibling and renamed into place. Two processes may build at once:
    # unless told to overwrite, the one that finishes second keeps the first one's demo.
    with atomic_path(root, keep_existing=None if overwrite else complete) as staging:
        staging.mkdir()
        _write_demo(staging, patch)
    return paths


# --------------------------------------------------------------------------------------------
# STAC shape (Planetary Computer landsat-c2-l2).

_MEDIA_COG = pystac.MediaType.COG
_LANDSAT_EXT = "https://landsat.usgs.gov/stac/landsat-extension/v1.1.1/schema.json"

SR_BANDS = (
    ("coastal", "SR_B1", "OLI_B1", 0.44, 0.02, "Coastal/Aerosol", "Coastal/Aerosol Band"),
    ("blue", "SR_B2", "OLI_B2", 0.48, 0.06, "Visible blue", "Blue Band"),
    ("green", "SR_B3", "OLI_B3", 0.56, 0.06, "Visible green", "Green Band"),
    ("red", "SR_B4", "OLI_B4", 0.65, 0.04, "Visible red", "Red Band"),
    ("nir08", "SR_B5", "OLI_B5", 0.87, 0.03, "Near infrared", "Near Infrared Band 0.8"),
    (
        "swir16",
        "SR_B6",
        "OLI_B6",
        1.61,
        0.09,
        "Short-wave infrared",
        "Short-wave Infrared Band 1.6",
    ),
    ("swir22", "SR_B7", "OLI_B7", 2.2, 0.19, "Short-wave infrared", "Short-wave Infrared Band 2.2"),
)
"""The surface-reflectance assets in band order, each (asset key, file suffix, band name, centre
wavelength, fwhm, band description, asset title). An item's asset ``key`` is the file
``<product_id>_<suffix>.TIF``; the ``lwir11`` (ST_B10) and ``qa_pixel`` (QA_PIXEL) assets follow."""


def item_id(tile: Tile, acq: Acquisition) -> str:
    """PC item id, e.g. LC08_L2SP_019036_20230610_02_T1."""
    return f"{acq.satellite}_L2SP_{tile.wrs_path:03d}{tile.wrs_row:03d}_{acq.day:%Y%m%d}_02_T1"


def product_id(tile: Tile, acq: Acquisition) -> str:
    """USGS product id (names the files), e.g. LC08_L2SP_019036_20230610_20230617_02_T1."""
    path_row = f"{tile.wrs_path:03d}{tile.wrs_row:03d}"
    return f"{acq.satellite}_L2SP_{path_row}_{acq.day:%Y%m%d}_{acq.processed:%Y%m%d}_02_T1"


def _footprint(tile: Tile, transform: Affine) -> shapely.Polygon:
    """Tile outline in lon/lat, densified so the cross-zone warp is followed; exterior CCW."""
    h, w = tile.shape
    left, top = transform.c, transform.f
    outline = shapely.box(left, top + h * transform.e, left + w * transform.a, top)
    to_lonlat = _transformer(CRS.from_epsg(tile.epsg).to_wkt(), CRS.from_epsg(4326).to_wkt())
    footprint: shapely.Polygon = shapely.transform(
        outline.segmentize(32 * _PIXEL),
        lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])),
    )
    return footprint


def _bitfields() -> list[Bitfield]:
    return [
        Bitfield.create(
            offset=offset,
            length=length,
            description=description,
            name=name,
            classes=[
                Classification.create(value=value, name=class_name, description=class_description)
                for value, (class_name, class_description) in enumerate(classes)
            ],
        )
        for name, offset, length, description, classes in _QA_BITFIELDS
    ]


def _add_assets(item: pystac.Item, folder: Path, product: str) -> None:
    """The nine assets, with eo:bands and raster:bands as the Planetary Computer has them."""
    for key, suffix, band, centre, fwhm, band_description, title in SR_BANDS:
        asset = pystac.Asset(
            href=str(folder / f"{product}_{suffix}.TIF"),
            title=title,
            description=f"Collection 2 Level-2 {title} ({suffix}) Surface Reflectance",
            media_type=_MEDIA_COG,
            roles=["data", "reflectance"],
        )
        item.add_asset(key, asset)
        EOExtension.ext(asset, add_if_missing=True).bands = [
            Band.create(
                name=band,
                common_name=key,
                description=band_description,
                center_wavelength=centre,
                full_width_half_max=fwhm,
            )
        ]
        RasterExtension.ext(asset, add_if_missing=True).bands = [
            RasterBand.create(
                scale=SR_SCALE,
                offset=SR_OFFSET,
                nodata=0,
                data_type=DataType.UINT16,
                spatial_resolution=30,
            )
        ]

    lwir = pystac.Asset(
        href=str(folder / f"{product}_ST_B10.TIF"),
        title="Surface Temperature Band",
        description="Collection 2 Level-2 Thermal Infrared Band (ST_B10) Surface Temperature",
        media_type=_MEDIA_COG,
        roles=["data", "temperature"],
    )
    item.add_asset("lwir11", lwir)
    lwir.common_metadata.gsd = 100  # TIRS' native resolution, resampled to 30 m by USGS
    EOExtension.ext(lwir, add_if_missing=True).bands = [
        Band.create(
            name="TIRS_B10",
            common_name="lwir11",
            description="Long-wave infrared",
            center_wavelength=10.9,
            full_width_half_max=0.59,
        )
    ]
    RasterExtension.ext(lwir, add_if_missing=True).bands = [
        RasterBand.create(
            unit="kelvin",
            scale=ST_SCALE,
            offset=ST_OFFSET,
            nodata=0,
            data_type=DataType.UINT16,
            spatial_resolution=30,
        )
    ]

    qa = pystac.Asset(
        href=str(folder / f"{product}_QA_PIXEL.TIF"),
        title="Pixel Quality Assessment Band",
        description="Collection 2 Level-1 Pixel Quality Assessment Band (QA_PIXEL)",
        media_type=_MEDIA_COG,
        roles=["cloud", "cloud-shadow", "snow-ice", "water-mask"],
    )
    item.add_asset("qa_pixel", qa)
    RasterExtension.ext(qa, add_if_missing=True).bands = [
        RasterBand.create(
            unit="bit index", nodata=1, data_type=DataType.UINT16, spatial_resolution=30
        )
    ]
    ClassificationExtension.ext(qa, add_if_missing=True).bitfields = _bitfields()


def make_item(
    tile: Tile,
    acq: Acquisition,
    transform: Affine,
    folder: Path,
    *,
    cloud_cover: float,
    cloud_cover_land: float,
) -> pystac.Item:
    """The Planetary-Computer-shaped item of ``tile`` on ``acq`` on the grid ``transform``.

    Its assets point at ``folder/<product_id>_<suffix>.TIF`` (see ``SR_BANDS``); the files are
    not touched. ``cloud_cover`` and ``cloud_cover_land`` are percentages of the valid pixels
    and of the valid land pixels.
    """
    h, w = tile.shape
    footprint = _footprint(tile, transform)
    acquired = datetime.combine(acq.day, tile.overpass, tzinfo=timezone.utc)
    item = pystac.Item(
        id=item_id(tile, acq),
        geometry=shapely.geometry.mapping(footprint),
        bbox=list(footprint.bounds),
        datetime=acquired,
        properties={
            "gsd": 30,
            "platform": acq.platform,
            "instruments": ["oli", "tirs"],
            "description": "Landsat Collection 2 Level-2 (SYNTHETIC demo data)",
            "landsat:wrs_path": f"{tile.wrs_path:03d}",
            "landsat:wrs_row": f"{tile.wrs_row:03d}",
            "landsat:wrs_type": "2",
            "landsat:scene_id": (
                f"LC{acq.satellite[-1]}{tile.wrs_path:03d}{tile.wrs_row:03d}"
                f"{acq.day:%Y}{acq.day.timetuple().tm_yday:03d}LGN00"
            ),
            "landsat:correction": "L2SP",
            "landsat:cloud_cover_land": cloud_cover_land,
            "landsat:collection_number": "02",
            "landsat:collection_category": "T1",
            "geocluster:synthetic": True,
            "geocluster:demo_version": DEMO_VERSION,
        },
        collection=DEMO_COLLECTION,
    )
    item.stac_extensions.append(_LANDSAT_EXT)
    EOExtension.ext(item, add_if_missing=True).cloud_cover = cloud_cover
    left, top = transform.c, transform.f
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=f"EPSG:{tile.epsg}",
        shape=[h, w],
        transform=[transform.a, transform.b, transform.c, transform.d, transform.e, transform.f],
        bbox=[left, top + h * transform.e, left + w * transform.a, top],
    )
    ViewExtension.ext(item, add_if_missing=True).apply(
        off_nadir=0, sun_azimuth=acq.sun_azimuth, sun_elevation=acq.sun_elevation
    )
    _add_assets(item, folder, product_id(tile, acq))
    return item


# --------------------------------------------------------------------------------------------
# Writing.


def _write_cog(
    path: Path, band: np.ndarray, transform: Affine, epsg: int, nodata: int, resampling: str
) -> None:
    """One single-band COG like the USGS ones: uint16, deflate, 256 px blocks, overviews."""
    h, w = band.shape
    profile = dict(
        driver="COG",
        width=w,
        height=h,
        count=1,
        dtype="uint16",
        crs=f"EPSG:{epsg}",
        transform=transform,
        nodata=nodata,
        compress="deflate",
        predictor=2,
        blocksize=256,
        overview_resampling=resampling,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(band, 1)


def catalog_and_collection() -> tuple[pystac.Catalog, pystac.Collection]:
    """The empty catalog and its ``landsat-c2-l2`` collection, both labelled synthetic."""
    catalog = pystac.Catalog(
        id=_CATALOG_ID,
        title="geocluster_dagster offline demo (SYNTHETIC)",
        description=(
            "Offline demo catalog for geocluster_dagster. SYNTHETIC data: a procedurally "
            "generated landscape filled with real Landsat 8 C2 L2 spectra (spyndex), encoded "
            "like Planetary Computer landsat-c2-l2 assets. Not an observation of any place."
        ),
    )
    open_interval: list[list[datetime | None]] = [[None, None]]  # no start, no end
    collection = pystac.Collection(
        id=DEMO_COLLECTION,
        title="Landsat Collection 2 Level-2 (SYNTHETIC demo)",
        description=(
            "SYNTHETIC stand-in for the Planetary Computer's `landsat-c2-l2` collection, built by "
            "geocluster_dagster.demo. The landscape, clouds and acquisitions are invented; the "
            "surface spectra are real Landsat 8 C2 L2 samples shipped with spyndex (MIT). "
            "Assets use the Collection 2 Level-2 encoding (SR: DN*2.75e-5-0.2, ST: "
            "DN*0.00341802+149 K, QA_PIXEL USGS bit flags). Do not use for science."
        ),
        extent=pystac.Extent(
            pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
            pystac.TemporalExtent(open_interval),
        ),
        license="MIT",
        keywords=["Landsat", "synthetic", "demo", "Reflectance", "Temperature"],
        providers=[
            pystac.Provider(
                name="geocluster_dagster (synthetic demo generator)",
                roles=[pystac.ProviderRole.PROCESSOR, pystac.ProviderRole.HOST],
            )
        ],
        summaries=pystac.Summaries(
            {
                "platform": sorted({a.platform for a in DEMO_ACQUISITIONS}),
                "instruments": ["oli", "tirs"],
                "gsd": [30],
            }
        ),
        extra_fields={"geocluster:synthetic": True},
    )
    catalog.add_child(collection)
    return catalog, collection


def _write_demo(staging: Path, patch: LandCoverPatch | None = None) -> None:
    """Write the catalog, COGs, AOI registry and (last) the manifest into ``staging``."""
    catalog, collection = catalog_and_collection()

    # the ground is the same on both dates (but for a patch); only the sky changes
    sampled = {tile.key: _sample_tile(tile) for tile in DEMO_TILES}
    for acq in DEMO_ACQUISITIONS:
        for tile in DEMO_TILES:
            ground = sampled[tile.key]
            if patch is not None and acq.day >= patch.since:
                transform, x, y, classes, values = ground
                ground = (transform, x, y, *patch.paint(classes, values, x, y))
            collection.add_item(_write_scene(tile, acq, ground, staging / DEMO_COLLECTION))

    save_catalog(catalog, collection, staging)
    (staging / _AOI_REGISTRY).write_text(json.dumps(_aoi_registry(), indent=2) + "\n")
    (staging / DEMO_REFERENCE).write_text(json.dumps(_reference_points()) + "\n")
    _write_manifest(staging, patch)


def _write_scene(
    tile: Tile, acq: Acquisition, sampled: tuple[Any, ...], parent: Path
) -> pystac.Item:
    """One tile on one date: its COGs in ``parent/<item id>/`` and its item (file hrefs)."""
    transform, x, y, classes, ground = sampled
    obs = observe(classes, ground, x, y, tile, acq)
    folder = parent / item_id(tile, acq)
    folder.mkdir(parents=True)
    item = make_item(
        tile,
        acq,
        transform,
        folder,
        cloud_cover=obs.cloud_cover,
        cloud_cover_land=obs.cloud_cover_land,
    )
    rasters = {key: (obs.sr[i], 0, "average") for i, (key, *_) in enumerate(SR_BANDS)}
    rasters["lwir11"] = (obs.st, 0, "average")
    rasters["qa_pixel"] = (obs.qa, 1, "nearest")  # never average bit flags
    for key, (band, nodata, resampling) in rasters.items():
        href = Path(item.assets[key].href)
        _write_cog(href, band, transform, tile.epsg, nodata, resampling)
    return item


LIVE_ITEMS = "items.json"


def add_live_scene(folder: Path | str, day: date) -> tuple[Path, list[pystac.Item]]:
    """A new demo scene "acquired" on ``day`` (both tiles, Landsat 9, new clouds), added to the
    ItemCollection ``folder/items.json``: point the STAC source at that file and the
    new-imagery sensor finds the scene and runs its partition, as it would for a real
    acquisition. Adding the same day again changes nothing."""
    folder = Path(folder).expanduser().absolute()
    collection_file = folder / LIVE_ITEMS
    known = (
        list(pystac.ItemCollection.from_file(str(collection_file)))
        if collection_file.exists()
        else []
    )
    acq = Acquisition(
        "LC09", "landsat-9", day, day, day.toordinal() % 997, 0.0, 150.0, 35.0, None
    )  # fmt: skip
    if any(i.id == item_id(tile, acq) for tile in DEMO_TILES for i in known):
        return collection_file, []
    added = []
    for tile in DEMO_TILES:
        # A folder without its item in items.json is what a killed call left: write it again.
        remove_quietly(folder / DEMO_COLLECTION / item_id(tile, acq))
        item = _write_scene(tile, acq, _sample_tile(tile), folder / DEMO_COLLECTION)
        item.collection_id = DEMO_COLLECTION
        added.append(item)
    # The ItemCollection is written last and atomically: it lists only scenes whose files exist.
    everything = pystac.ItemCollection([*known, *added])
    write_json(everything.to_dict(transform_hrefs=False), collection_file)
    return collection_file, added


# AOI polygon vertices in local metres, counter-clockwise; the notch makes clip != bbox.
_AOI_OUTLINE = (
    (-7000, -3500),
    (-1500, -3800),
    (1200, -2600),
    (6700, -3300),
    (6900, 3500),
    (2600, 4000),
    (300, 1200),
    (-2800, 3500),
    (-7100, 3300),
)


#: Reference data of the demo AOI: points with their true cover (``cover``), in the registry's
#: folder; the accuracy asset assesses the demo's maps against them.
DEMO_REFERENCE = "demo_reference.geojson"
DEMO_REFERENCE_POINTS = 500


def _reference_points(n: int = DEMO_REFERENCE_POINTS, seed: int = 7) -> dict[str, Any]:
    """``n`` points drawn uniformly at random inside the AOI, each with the landscape's true
    land cover there: a simple random sample, which Olofsson et al.'s estimator accepts."""
    outline = shapely.Polygon(_AOI_OUTLINE)
    west, south, east, north = outline.bounds
    rng = np.random.default_rng(seed)
    xs: list[float] = []
    ys: list[float] = []
    while len(xs) < n:
        x, y = rng.uniform(west, east, n), rng.uniform(south, north, n)
        inside = shapely.contains_xy(outline, x, y)
        xs += x[inside].tolist()
        ys += y[inside].tolist()
    x, y = np.array(xs[:n]), np.array(ys[:n])
    classes, _ = local_landscape(x, y)
    lon, lat = _from_local(x, y, "EPSG:4326")
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"cover": DEMO_CLASSES[int(c) - 1]},
                "geometry": {
                    "type": "Point",
                    "coordinates": [round(float(a), 7), round(float(b), 7)],
                },
            }
            for c, a, b in zip(classes, lon, lat, strict=True)
        ],
    }


def save_catalog(catalog: pystac.Catalog, collection: pystac.Collection, folder: Path) -> None:
    """Finish the collection (extent, item_assets) and save a self-contained catalog in folder."""
    collection.update_extent_from_items()
    # the assets' eo/raster/classification fields are repeated in item_assets
    collection.stac_extensions = [
        EOExtension.get_schema_uri(),
        RasterExtension.get_schema_uri(),
        ClassificationExtension.get_schema_uri(),
    ]
    collection.item_assets = {
        key: pystac.ItemAssetDefinition({k: v for k, v in asset.to_dict().items() if k != "href"})
        for key, asset in next(iter(collection.get_items())).assets.items()
    }
    # a file href: pystac would take a directory name with a dot in it for a file
    catalog.normalize_hrefs(str(folder / "catalog.json"))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)


def _aoi_registry() -> dict[str, Any]:
    """GeoJSON FeatureCollection with the demo AOI (RFC 7946: lon/lat, exterior CCW)."""
    x = np.array([p[0] for p in _AOI_OUTLINE], dtype=float)
    y = np.array([p[1] for p in _AOI_OUTLINE], dtype=float)
    lon, lat = _from_local(x, y, "EPSG:4326")
    ring = [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat, strict=True)]
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": DEMO_AOI_ID,
                "properties": {
                    "id": DEMO_AOI_ID,
                    "name": "Demo AOI (synthetic landscape across the UTM 16/17 boundary, 84 W)",
                    # ground truth at random points, for the accuracy asset
                    "reference_data": DEMO_REFERENCE,
                    "reference_label": "cover",
                },
                "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]},
            }
        ],
    }


# --------------------------------------------------------------------------------------------
# Idempotence and atomic replacement.


def _demo_paths(root: Path) -> DemoPaths:
    month = date.fromisoformat(DEMO_MONTH)
    start = datetime.combine(month, time(0), tzinfo=timezone.utc)
    next_month = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    return DemoPaths(
        root=root,
        catalog=root / "catalog.json",
        aoi_registry=root / _AOI_REGISTRY,
        aoi_id=DEMO_AOI_ID,
        start=start,
        end=datetime.combine(next_month, time(0), tzinfo=timezone.utc),
        item_ids=tuple(item_id(tile, acq) for acq in DEMO_ACQUISITIONS for tile in DEMO_TILES),
    )


def _patch_record(patch: LandCoverPatch | None) -> dict[str, Any] | None:
    return None if patch is None else {**asdict(patch), "since": patch.since.isoformat()}


def _write_manifest(folder: Path, patch: LandCoverPatch | None = None) -> None:
    """Record the version, the patch and every file's size; written last, so it marks a
    complete demo."""
    files = {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    manifest = {"demo_version": DEMO_VERSION, "patch": _patch_record(patch), "files": files}
    (folder / _MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((root / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _is_complete(root: Path, patch: LandCoverPatch | None = None) -> bool:
    """True if ``root`` holds every file of a ``DEMO_VERSION`` demo with ``patch``, at its
    recorded size."""
    manifest = _read_manifest(root)
    if not isinstance(manifest, dict) or manifest.get("demo_version") != DEMO_VERSION:
        return False
    if manifest.get("patch") != _patch_record(patch):
        return False
    try:
        return all((root / name).stat().st_size == size for name, size in manifest["files"].items())
    except (OSError, KeyError, AttributeError, TypeError):
        return False


def _refuse_foreign_directory(root: Path, overwrite: bool) -> None:
    """Never replace a file, or a non-empty directory that is not a demo, unless told to."""
    if root.exists() and not root.is_dir():
        raise ConfigError(f"Demo root {root} is a file; pass build_demo() a directory path.")
    if overwrite or not root.is_dir() or (root / _MANIFEST).exists():
        return
    if any(root.iterdir()):
        raise ConfigError(
            f"Demo root {root} is a non-empty directory that holds no demo; refusing to replace "
            "it. Pass an empty or new directory, or overwrite=True to replace its contents."
        )
