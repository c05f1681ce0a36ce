"""Real provider STAC items pointed at other files or URLs, for tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pystac
import rasterio
import shapely
from rasterio.warp import transform_geom


def localize_item(
    item: pystac.Item, files: dict[str, Path], href_of: Callable[[Path], str] = str
) -> pystac.Item:
    """A copy of a real provider item whose assets are ``href_of(file)`` (paths or URLs).

    The real items describe full-resolution scenes; the shared rasters are downsampled, so the
    projection metadata, footprint and resolution are rewritten from the files themselves.
    Assets without a file are dropped.
    """
    item = item.clone()
    grid = None
    for key, path in files.items():
        asset = item.assets[key]
        asset.href = href_of(path)
        with rasterio.open(path) as src:
            grid = grid or (src.crs, src.transform, src.shape, src.bounds)
            if "proj:shape" in asset.extra_fields or "proj:transform" in asset.extra_fields:
                asset.extra_fields["proj:shape"] = list(src.shape)
                asset.extra_fields["proj:transform"] = list(src.transform)[:6]
            raster_bands = item.assets[key].extra_fields.get("raster:bands")
            if raster_bands and isinstance(raster_bands[0], dict):
                raster_bands[0]["spatial_resolution"] = abs(src.transform.a)
    for key in list(item.assets):
        if key not in files:
            del item.assets[key]
    crs, transform, shape, bounds = grid
    item.properties["proj:epsg"] = crs.to_epsg()
    item.properties.pop("proj:code", None)
    item.properties["proj:transform"] = list(transform)[:6]
    item.properties["proj:shape"] = list(shape)
    footprint = transform_geom(crs, "EPSG:4326", shapely.geometry.mapping(shapely.box(*bounds)))
    item.geometry = footprint
    item.bbox = list(shapely.geometry.shape(footprint).bounds)
    return item
