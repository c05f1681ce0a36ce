"""Shared fixtures: paths to the real data in ../shared/data and STAC items that point at it."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pystac
import pytest
import rasterio
import shapely
from rasterio.warp import transform_geom

from geocluster_dagster.defs.resources import DaskCluster
from geocluster_dagster.demo import build_demo
from geocluster_dagster.export import open_cog
from geocluster_dagster.load import LoadSettings, load_band_stack
from geocluster_dagster.products.mosaic import write_mosaic

from .servers.fixtures import *  # noqa: F401,F403
from .servers.ports import ServerUnavailable
from .stac_items import localize_item  # noqa: F401  (re-exported for the tests)

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


@functools.cache
def _can_mount() -> bool:
    """Whether this process may mount file systems (root with CAP_SYS_ADMIN): try a tiny tmpfs."""
    folder = tempfile.mkdtemp(prefix="geocluster-mount-probe-")
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", folder], capture_output=True
        )
        if mounted.returncode == 0:
            subprocess.run(["umount", folder], check=True)
        return mounted.returncode == 0
    finally:
        os.rmdir(folder)


@contextlib.contextmanager
def _missing_requirements_skip() -> Iterator[None]:
    """A server that is not installed, or a `mount` without the right to mount, is a skip that
    says what the test needs (scripts/test.sh, run as root, provides both), not an error."""
    try:
        yield
    except ServerUnavailable as error:
        pytest.skip(str(error))
    except subprocess.CalledProcessError as error:
        if not (isinstance(error.cmd, list) and error.cmd[0] == "mount") or _can_mount():
            raise
        who = "root without CAP_SYS_ADMIN" if os.geteuid() == 0 else f"uid {os.geteuid()}"
        pytest.skip(
            f"needs the right to mount file systems ({who} cannot): run scripts/test.sh as root"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with _missing_requirements_skip():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with _missing_requirements_skip():
        return (yield)


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
    files = {
        key: S2_29RKH / f"{name}.tif"
        for key, name in {
            "blue": "B02",
            "green": "B03",
            "red": "B04",
            "nir": "B08",
            "scl": "SCL",
        }.items()
    }
    return localize_item(item, files)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


# Brumadinho crops: no georeferencing in the files; the README gives the transform origins
# rebuilt from the MTL (UL pixel centre minus half a pixel).
BRUMADINHO_ORIGINS = {"20190114": (583485.0, -2222685.0), "20190130": (584385.0, -2222685.0)}
BRUMADINHO_CLOUD = {"20190114": 9.86, "20190130": 1.07}
BRUMADINHO_BANDS = {
    "blue": "SR_B2",
    "green": "SR_B3",
    "red": "SR_B4",
    "nir08": "SR_B5",
    "swir16": "SR_B6",
    "swir22": "SR_B7",
}


def brumadinho_item(date: str, out_dir: Path) -> pystac.Item:
    """A Planetary-Computer-shaped item over a georeferenced copy (in out_dir) of one crop."""
    from datetime import datetime, timezone

    from affine import Affine

    src_dir = BRUMADINHO / date
    out_dir.mkdir(parents=True, exist_ok=True)
    x0, y0 = BRUMADINHO_ORIGINS[date]
    transform = Affine(30.0, 0.0, x0, 0.0, -30.0, y0)
    item_id = f"LC08_L2SP_218074_{date}_20200829_02_T1"
    assets = {}
    for key, band in BRUMADINHO_BANDS.items():
        src_path = next(src_dir.glob(f"*_{band}.TIF"))
        dst_path = out_dir / f"{item_id}_{band}.TIF"
        with rasterio.open(src_path) as src:
            data = src.read(1)
        with rasterio.open(
            dst_path,
            "w",
            driver="GTiff",
            width=data.shape[1],
            height=data.shape[0],
            count=1,
            dtype=data.dtype,
            crs="EPSG:32623",
            transform=transform,
            nodata=0,
            tiled=True,
            blockxsize=128,
            blockysize=128,
        ) as dst:
            dst.write(data, 1)
        assets[key] = pystac.Asset(
            href=str(dst_path),
            media_type="image/tiff; application=geotiff; profile=cloud-optimized",
            roles=["data"],
            extra_fields={
                "eo:bands": [{"name": band, "common_name": key}],
                "raster:bands": [
                    {
                        "scale": 2.75e-05,
                        "offset": -0.2,
                        "nodata": 0,
                        "data_type": "uint16",
                        "spatial_resolution": 30,
                    }
                ],
            },
        )
        shape = data.shape
    west, south, east, north = rasterio.transform.array_bounds(shape[0], shape[1], transform)
    footprint = transform_geom(
        "EPSG:32623", "EPSG:4326", shapely.geometry.mapping(shapely.box(west, south, east, north))
    )
    item = pystac.Item(
        id=item_id,
        geometry=footprint,
        bbox=list(shapely.geometry.shape(footprint).bounds),
        datetime=datetime.strptime(date, "%Y%m%d").replace(hour=12, minute=50, tzinfo=timezone.utc),
        properties={
            "platform": "landsat-8",
            "eo:cloud_cover": BRUMADINHO_CLOUD[date],
            "proj:epsg": 32623,
            "proj:shape": list(shape),
            "proj:transform": list(transform)[:6],
        },
        collection="landsat-c2-l2",
    )
    item.assets.update(assets)
    return item


@pytest.fixture
def brumadinho_items(tmp_path) -> list[pystac.Item]:
    return [brumadinho_item(d, tmp_path / d) for d in BRUMADINHO_ORIGINS]


# --- fixtures the test modules share -----------------------------------------------------------


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    return build_demo(tmp_path_factory.mktemp("demo") / "catalog")


@pytest.fixture(scope="session")
def dask_cluster():
    return DaskCluster()


@pytest.fixture(scope="module")
def brumadinho(tmp_path_factory):
    """Both dates composited on the one 30 m grid of an AOI covering both crops."""
    root = tmp_path_factory.mktemp("brumadinho")
    items = {d: brumadinho_item(d, root / d) for d in BRUMADINHO_ORIGINS}
    aoi = shapely.union_all([shapely.geometry.shape(i.geometry) for i in items.values()])
    images = {}
    for date, item in items.items():
        # The crops have no QA band: nothing is masked, so the 14th's clouds stay in.
        stack = load_band_stack(
            [item],
            aoi.buffer(-0.001),
            LoadSettings(
                mask_clouds=False, bands=("blue", "green", "red", "nir", "swir16", "swir22")
            ),
        )
        write_mosaic(stack, aoi.buffer(-0.001), root / f"{date}.tif", where=date)
        images[date] = open_cog(root / f"{date}.tif")
    return root, images


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """An S3-compatible server on loopback, its endpoint and keys in this process's
    environment (and GDAL's endpoint settings of earlier tests cleared) for the test."""
    from geocluster_dagster import object_store

    from .servers.s3 import S3Server

    monkeypatch.setattr(object_store, "_CONFIGURED", {})
    for name in ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING"):
        monkeypatch.delenv(name, raising=False)
    with S3Server(tmp_path / "s3") as server:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        yield server


@pytest.fixture
def azure(tmp_path, monkeypatch):
    """Azure Blob Storage on loopback (Azurite), its connection string in this process's
    environment for the test, and no AWS or other Azure settings of the machine."""
    from geocluster_dagster import object_store

    from .servers.azurite import Azurite

    monkeypatch.setattr(object_store, "_CONFIGURED", {})
    for name in [
        *object_store.AZURE_VARIABLES,
        "AZURE_STORAGE_ACCOUNT",
        "AZURE_STORAGE_ACCESS_KEY",
    ]:
        monkeypatch.delenv(name, raising=False)
    with Azurite(tmp_path / "azurite") as server:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        yield server
