"""The live stack for the tests: nginx serving the real scenes, and a STAC API that lists them.

``stac_stack()`` brings it all up (``scripts/stac_stack.py`` uses it too); the session-scoped
pytest fixtures below build the same pieces one by one so each stops in its own finalizer, even
when a test fails.

The served folder holds a symlink ``shared`` -> the real data in ``../shared/data`` and ``demo``,
the embedded demo catalog built by ``build_demo``. The API (stac-fastapi-pgstac) holds:

1. the real provider documents from ``shared/data/stac/`` as they are: the Planetary Computer
   ``landsat-c2-l2`` collection and its 10-item page, the PC ``sentinel-2-l2a`` collection, its
   33-item search and single item, and the USGS ``landsat-c2l2-sr`` item;
2. items whose asset hrefs are nginx URLs of real pixels: Landsat 8 scene 008059 (the USGS SR
   item with the ST item's ``ST_B10``), the Earth Search Sentinel-2 item of tile 29RKH, and the
   demo catalog's 4 items.

Collections without a real document (``landsat-c2l2-sr``) get a minimal synthesized one: see
``synthesized_collection``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pystac
import pytest
import shapely

from geocluster_dagster.demo import DemoPaths, build_demo

from ..stac_items import localize_item
from .nginx import NginxServer
from .stac_api import StacApiServer

__all__ = ["served_folder", "nginx_shared", "stac_api"]

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
STAC_DIR = SHARED_DATA / "stac"
L8_008059 = SHARED_DATA / "landsat8_c2l2_008059_20191201_downsampled"
L8_008059_PREFIX = "LC08_L2SP_008059_20191201_20200825_02_T1"
S2_29RKH = SHARED_DATA / "sentinel2_l2a_29RKH_20200219_downsampled"

REAL_COLLECTION_FILES = (
    STAC_DIR / "pc_landsat-c2-l2_collection.json",
    STAC_DIR / "pc_sentinel-2-l2a_collection.json",
)
REAL_ITEM_FILES = (
    STAC_DIR / "pc_landsat-c2-l2_items_page_LC09_path084.json",
    STAC_DIR / "pc_search_sentinel-2-l2a_20190101_33items.json",
    STAC_DIR / "pc_sentinel-2-l2a_item_S2B_MSIL2A_20190629T212529_R043_T06VVN.json",
    STAC_DIR / "usgs_landsat-c2l2-sr_item_LC08_L2SP_028030_20200114.json",
)
# Links the API writes itself; stale copies would point at the provider or at local files.
API_LINK_RELS = {"self", "root", "parent", "collection", "items"}


@dataclass(frozen=True)
class ServedFolder:
    """The folder nginx serves: real data (symlinked) plus generated files."""

    root: Path
    """Folder root; nginx's worker (user nobody) must be able to read everything below it."""
    demo: DemoPaths
    """The demo catalog built under ``root / "demo"`` (also usable as a local STAC source)."""

    def relative(self, path: Path) -> str:
        """``path`` (a file of the shared data or below root) as a path relative to root."""
        path = Path(path).absolute()
        shared = SHARED_DATA.resolve()
        if path.resolve().is_relative_to(shared):
            return f"shared/{path.resolve().relative_to(shared).as_posix()}"
        return path.relative_to(self.root).as_posix()


@dataclass(frozen=True)
class StacStack:
    """Everything ``stac_stack()`` started."""

    files: NginxServer
    api: StacApiServer
    folder: ServedFolder


def make_served_folder(root: Path) -> ServedFolder:
    """Fill ``root`` (created if missing) with the shared-data symlink and the demo catalog."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "shared").symlink_to(SHARED_DATA.resolve(), target_is_directory=True)
    demo = build_demo(root / "demo")
    # nginx's workers run as nobody; mkdtemp and build_demo's staging dirs are private (0700).
    _make_world_readable(root)
    return ServedFolder(root=root.absolute(), demo=demo)


def real_collections() -> list[dict[str, Any]]:
    """The real collection documents, as they are."""
    return [_read_json(path) for path in REAL_COLLECTION_FILES]


def real_items() -> list[dict[str, Any]]:
    """The real item documents (single items and FeatureCollection pages), as they are."""
    items: list[dict[str, Any]] = []
    for path in REAL_ITEM_FILES:
        document = _read_json(path)
        items.extend(
            document["features"] if document["type"] == "FeatureCollection" else [document]
        )
    return items


def served_items(folder: ServedFolder, url_of: Callable[[str], str]) -> list[dict[str, Any]]:
    """Items whose asset hrefs are URLs (``url_of(relative path)``) of the real scenes and demo."""
    l8_sr = pystac.Item.from_file(str(L8_008059 / f"{L8_008059_PREFIX}_SR_stac.json"))
    l8_st = pystac.Item.from_file(str(L8_008059 / f"{L8_008059_PREFIX}_ST_stac.json"))
    l8_sr.assets["ST_B10.TIF"] = l8_st.assets["ST_B10.TIF"].clone()
    l8_names = ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7", "ST_B10", "QA_PIXEL"]
    l8_files = {f"{n}.TIF": L8_008059 / f"{L8_008059_PREFIX}_{n}.TIF" for n in l8_names}

    s2 = pystac.Item.from_file(str(S2_29RKH / "S2A_29RKH_20200219_0_L2A.json"))
    s2_bands = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "scl": "SCL"}
    s2_files = {key: S2_29RKH / f"{name}.tif" for key, name in s2_bands.items()}

    items = [
        publish_item(l8_sr, l8_files, lambda p: url_of(folder.relative(p))),
        publish_item(s2, s2_files, lambda p: url_of(folder.relative(p))),
    ]
    demo_catalog = pystac.Catalog.from_file(str(folder.demo.catalog))
    for item in demo_catalog.get_items(recursive=True):
        # The demo's projection metadata already describes its own files: only hrefs change.
        item = item.clone()
        for asset in item.assets.values():
            asset.href = url_of(folder.relative(Path(asset.get_absolute_href())))
        items.append(_api_ready(item))
    return items


def publish_item(
    item: pystac.Item, files: dict[str, Path], href_of: Callable[[Path], str]
) -> dict[str, Any]:
    """A real provider item whose assets are ``href_of(file)`` (URLs), as a dict for the API."""
    return _api_ready(localize_item(item, files, href_of))


def synthesized_collection(collection_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A minimal STAC Collection for ``collection_id``, SYNTHESIZED here (not a real document).

    pgstac needs a collection row before it accepts items; the USGS ``landsat-c2l2-sr`` items
    come without their collection document, so this one only carries an id, a description
    saying it is synthetic, and an extent computed from ``items``.
    """
    boxes = [shapely.box(*item["bbox"][:2], *item["bbox"][-2:]) for item in items]
    times = sorted(_item_time(item) for item in items)
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": collection_id,
        "description": (
            f"Synthesized by the geocluster tests: no real {collection_id} collection document "
            "is in the shared data, and pgstac needs one to hold the real items."
        ),
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [list(shapely.union_all(boxes).bounds)]},
            "temporal": {"interval": [[_iso(times[0]), _iso(times[-1])]]},
        },
        "links": [],
    }


def load_stac_api(api: StacApiServer, files: NginxServer, folder: ServedFolder) -> None:
    """Load the real documents and the nginx-served items (see the module docstring)."""
    items = real_items() + served_items(folder, files.url)
    collections = real_collections()
    known = {collection["id"] for collection in collections}
    for collection_id in sorted({item["collection"] for item in items} - known):
        members = [item for item in items if item["collection"] == collection_id]
        collections.append(synthesized_collection(collection_id, members))
    api.load_collections(collections)
    api.load_items(items)


@contextlib.contextmanager
def stac_stack(root: Path | None = None) -> Iterator[StacStack]:
    """nginx + PostgreSQL + stac-fastapi-pgstac, loaded; everything is stopped and deleted on exit.

    ``root`` is the served folder (default: a new temporary one, deleted on exit).
    """
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="geocluster-served-"))
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        folder = make_served_folder(root)
        files = stack.enter_context(NginxServer(folder.root))
        api = stack.enter_context(StacApiServer())
        load_stac_api(api, files, folder)
        yield StacStack(files=files, api=api, folder=folder)


# --- pytest fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def served_folder() -> Iterator[ServedFolder]:
    """The folder ``nginx_shared`` serves: ``shared/`` (real data) and ``demo/`` (demo catalog)."""
    root = Path(tempfile.mkdtemp(prefix="geocluster-served-"))
    try:
        yield make_served_folder(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def nginx_shared(served_folder: ServedFolder) -> Iterator[NginxServer]:
    """nginx with byte ranges over ``served_folder``: ``nginx_shared.url("shared/...")``."""
    with NginxServer(served_folder.root) as server:
        yield server


@pytest.fixture(scope="session")
def stac_api(nginx_shared: NginxServer, served_folder: ServedFolder) -> Iterator[StacApiServer]:
    """stac-fastapi-pgstac loaded with the real documents and the nginx-served items."""
    with StacApiServer() as api:
        load_stac_api(api, nginx_shared, served_folder)
        yield api


# --- helpers -----------------------------------------------------------------------------------


def _api_ready(item: pystac.Item) -> dict[str, Any]:
    document = item.to_dict(include_self_link=False, transform_hrefs=False)
    document["links"] = [
        link for link in document.get("links", []) if link.get("rel") not in API_LINK_RELS
    ]
    return document


def _make_world_readable(root: Path) -> None:
    # Symlinks (the shared data) are skipped: chmod would change their read-only targets.
    os.chmod(root, 0o755)
    for directory, subdirectories, names in os.walk(root):
        for name, mode in [(n, 0o755) for n in subdirectories] + [(n, 0o644) for n in names]:
            path = Path(directory) / name
            if not path.is_symlink():
                os.chmod(path, mode)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _item_time(item: dict[str, Any]) -> datetime:
    properties = item["properties"]
    value = properties.get("datetime") or properties["start_datetime"]
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
