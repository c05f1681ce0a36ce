"""Before any pixel is read: every asset opens, touches the AOI, and is where its item says.

odc-stac plans its reads from the items' ``proj:`` metadata (CRS, transform, shape) and reads
pixels with the file's own georeferencing. When the two disagree, pixels land in the wrong
place or are skipped as "outside the source", and nothing fails: a catalog whose ``proj:epsg``
says zone 23 for a zone 22 file loses a tenth of the AOI without a word. So each asset's header
is opened once (headers only, in parallel) and compared with what its item promises.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pystac
import rasterio
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.warp import transform_geom
from shapely.geometry.base import BaseGeometry

from .errors import AssetReadError, NoOverlap
from .remote import RemoteReader

#: How far a file's origin may sit from its item's ``proj:transform``, in pixels. Catalogs
#: round coordinates to centimetres; a hundredth of a 10-30 m pixel is well above that.
ORIGIN_TOLERANCE_PX = 0.01


@dataclass(frozen=True)
class Header:
    """What a raster file says about its own grid."""

    crs: CRS | None
    transform: Affine
    shape: tuple[int, int]

    @property
    def footprint(self) -> BaseGeometry | None:
        """The raster's footprint in lon/lat, None without a CRS."""
        if self.crs is None:
            return None
        height, width = self.shape
        corners = shapely.box(*rasterio.transform.array_bounds(height, width, self.transform))
        lonlat = transform_geom(self.crs, "EPSG:4326", shapely.geometry.mapping(corners))
        return shapely.geometry.shape(lonlat)


def read_header(url: str) -> Header:
    with rasterio.open(url) as src:
        crs = CRS.from_user_input(src.crs.to_wkt()) if src.crs else None
        return Header(crs, src.transform, (src.height, src.width))


def _proj_field(item: pystac.Item, asset: pystac.Asset, name: str) -> Any:
    """A ``proj:`` field of the asset, else of the item (assets override their item)."""
    return asset.extra_fields.get(name, item.properties.get(name))


def promised_crs(item: pystac.Item, asset: pystac.Asset) -> CRS | None:
    epsg = _proj_field(item, asset, "proj:epsg")
    if epsg is not None:
        return CRS.from_epsg(int(epsg))
    code = _proj_field(item, asset, "proj:code")
    return CRS.from_user_input(code) if code else None


def disagreements(item: pystac.Item, key: str, header: Header) -> list[str]:
    """How the file of asset ``key`` differs from its item's ``proj:`` metadata, in numbers."""
    asset = item.assets[key]
    found: list[str] = []
    crs = promised_crs(item, asset)
    if crs is not None and header.crs is not None and not crs.equals(header.crs):
        found.append(f"CRS {header.crs.to_string()} in the file, {crs.to_string()} in proj:")
    shape = _proj_field(item, asset, "proj:shape")
    if shape is not None and tuple(int(v) for v in shape) != header.shape:
        found.append(f"shape {list(header.shape)} in the file, {list(shape)} in proj:")
    transform = _proj_field(item, asset, "proj:transform")
    if transform is not None:
        promised = Affine(*[float(v) for v in transform[:6]])
        pixel = max(abs(header.transform.a), abs(header.transform.e)) or 1.0
        offset = max(abs(promised.c - header.transform.c), abs(promised.f - header.transform.f))
        scale = max(
            abs(promised.a - header.transform.a),
            abs(promised.b - header.transform.b),
            abs(promised.d - header.transform.d),
            abs(promised.e - header.transform.e),
        )
        if offset > ORIGIN_TOLERANCE_PX * pixel or scale > 1e-6 * pixel:
            found.append(
                f"transform {list(header.transform)[:6]} in the file, {list(promised)[:6]} in "
                f"proj: (origin {offset / pixel:.2f} px apart)"
            )
    return found


def check_assets(
    items: Sequence[pystac.Item],
    asset_keys: Sequence[str],
    aoi: BaseGeometry,
    reader: RemoteReader,
) -> None:
    """Open each asset header (in parallel): a raster, where its item says, touching the AOI."""

    def probe(job: tuple[pystac.Item, str]) -> str | bool:
        """Whether the asset touches the AOI, or what is wrong with it."""
        item, key = job
        href = item.assets[key].get_absolute_href() or item.assets[key].href
        try:
            header = reader.read(href, read_header)
        except AssetReadError as err:
            return f"asset {key!r} of item {item.id!r}: {err}"
        footprint = header.footprint
        if footprint is None:
            return f"asset {key!r} of item {item.id!r} ({href}) has no CRS"
        if differences := disagreements(item, key, header):
            raise AssetReadError(
                f"Asset {key!r} of item {item.id!r} ({href}) is not where its STAC item says: "
                + "; ".join(differences)
                + ". Read as it is, its pixels would be placed or clipped wrongly. Fix the "
                "item's proj: fields (or remove them, so the file's own georeferencing is used)."
            )
        return bool(footprint.intersects(aoi))

    jobs = [(item, key) for item in items for key in asset_keys]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(probe, jobs))
    errors = [result for result in results if isinstance(result, str)]
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise AssetReadError(
            f"{len(errors)} of {len(jobs)} assets cannot be read as GeoTIFF/COG: "
            + " | ".join(errors[:3])
            + more
        )
    if not any(results):
        raise NoOverlap(
            f"None of the {len(items)} items' rasters overlap the AOI (bounds "
            f"{tuple(round(v, 4) for v in aoi.bounds)} lon/lat), although their STAC footprints do. "
            "The item geometries disagree with the files: fix the catalog, or check the AOI."
        )
