"""Shared fixtures: paths to the real data in ../shared/data and STAC items that point at it."""

from __future__ import annotations

import json
from pathlib import Path

import pystac
import pytest
import rasterio
import shapely
from rasterio.warp import transform_geom

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

L8_008059 = SHARED_DATA / "landsat8_c2l2_008059_20191201_downsampled"
L8_008059_PREFIX = "LC08_L2SP_008059_20191201_20200825_02_T1"
S2_29RKH = SHARED_DATA / "sentinel2_l2a_29RKH_20200219_downsampled"
L7_LABELED = SHARED_DATA / "landsat7_sr_022049_labeled_opengeotutorial"
BRUMADINHO = SHARED_DATA / "landsat8_c2l2_218074_brumadinho_crop"
STAC_DIR = SHARED_DATA / "stac"


def pytest_configure(config):
    if not SHARED_DATA.is_dir():
        raise pytest.UsageError(
            f"The real test data is missing: expected {SHARED_DATA} (the shared/ folder beside the "
            "repository checkout)."
        )


def localize_item(item: pystac.Item, files: dict[str, Path]) -> pystac.Item:
    """A copy of a real provider item whose assets point at local files.

    The real items describe full-resolution scenes; the shared rasters are downsampled, so the
    projection metadata and footprint are rewritten from the files themselves.
    """
    item = item.clone()
    first = None
    for key, path in files.items():
        item.assets[key].href = str(path)
        with rasterio.open(path) as src:
            if first is None:
                first = (src.crs, src.transform, src.shape, src.bounds)
            rb = item.assets[key].extra_fields.get("raster:bands")
            if rb and isinstance(rb[0], dict):
                rb[0]["spatial_resolution"] = abs(src.transform.a)
    for key in list(item.assets):
        if key not in files:
            del item.assets[key]
    crs, transform, shape, bounds = first
    item.properties["proj:epsg"] = crs.to_epsg()
    item.properties.pop("proj:code", None)
    item.properties["proj:transform"] = list(transform)[:6]
    item.properties["proj:shape"] = list(shape)
    footprint = transform_geom(crs, "EPSG:4326", shapely.geometry.mapping(shapely.box(*bounds)))
    item.geometry = footprint
    item.bbox = list(shapely.geometry.shape(footprint).bounds)
    return item


@pytest.fixture
def l8_008059_item() -> pystac.Item:
    """The real USGS SR item of scene 008059 (plus the ST item's thermal asset), local pixels."""
    sr = pystac.Item.from_file(L8_008059 / f"{L8_008059_PREFIX}_SR_stac.json")
    st = pystac.Item.from_file(L8_008059 / f"{L8_008059_PREFIX}_ST_stac.json")
    sr.assets["ST_B10.TIF"] = st.assets["ST_B10.TIF"].clone()
    names = ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7", "ST_B10", "QA_PIXEL"]
    files = {f"{name}.TIF": L8_008059 / f"{L8_008059_PREFIX}_{name}.TIF" for name in names}
    return localize_item(sr, files)


@pytest.fixture
def s2_29rkh_item() -> pystac.Item:
    """The real Earth Search v0 item of tile 29RKH with local (downsampled) COGs."""
    item = pystac.Item.from_file(S2_29RKH / "S2A_29RKH_20200219_0_L2A.json")
    files = {key: S2_29RKH / f"{name}.tif" for key, name in
             {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "scl": "SCL"}.items()}
    return localize_item(item, files)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
