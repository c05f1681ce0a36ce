"""Helpers the test modules share; the shared fixtures are in conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import rasterio
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
from dagster._core.launcher import DefaultRunLauncher

from geocluster_dagster.defs.assets import PIPELINE_ASSETS
from geocluster_dagster.defs.outputs import OutputStore
from geocluster_dagster.defs.partitions import partition_key
from geocluster_dagster.defs.resources import AOIRegistry, StacCatalog
from geocluster_dagster.demo import DEMO_MONTH

from .conftest import BRUMADINHO_ORIGINS, SHARED_DATA
from .servers.ports import installed

# --- the demo graph, materialized in-process ---------------------------------------------------

KEY = partition_key("demo", DEMO_MONTH)


def run(
    out: Path,
    *,
    registry: Path,
    catalog: str,
    dask_cluster,
    selection=None,
    run_config=None,
    aoi_ids=("demo",),
    key=KEY,
    instance=None,
    tags=None,
):
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("aoi", list(aoi_ids))
    return dg.materialize(
        PIPELINE_ASSETS,
        selection=selection,
        partition_key=key,
        instance=instance,
        run_config=run_config or {},
        tags=tags,
        raise_on_error=False,
        resources={
            "aoi_registry": AOIRegistry(path=str(registry)),
            "stac": StacCatalog(url=catalog),
            "dask": dask_cluster,
            "outputs": OutputStore(base_dir=str(out)),
        },
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The failure as the UI shows it: the error and its chain of causes."""
    assert not result.success
    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def materialization(result, asset):
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key.to_user_string() == asset:
            return mat
    raise AssertionError(f"{asset} was not materialized")


def run_refused_aoi(demo, dask_cluster, tmp_path: Path, geometry: dict) -> tuple[Path, str]:
    """The demo partition of an AOI 'bad' with ``geometry``: the output root and the failure."""
    out = tmp_path / "out"
    result = run(
        out,
        registry=write_registry(tmp_path, geometry),
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
        aoi_ids=("bad",),
        key=partition_key("bad", DEMO_MONTH),
    )
    return out, failure_message(result)


def write_registry(tmp_path: Path, geometry: dict, aoi_id: str = "bad") -> Path:
    path = tmp_path / "aois.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "id": aoi_id,
                        "properties": {"name": aoi_id},
                        "geometry": geometry,
                    }
                ],
            }
        )
    )
    return path


def item_file(out: Path, aoi_id: str, date: str) -> Path:
    """The partition's STAC Item in the output catalog under ``out``."""
    return out / "stac" / aoi_id / date[:4] / f"{date}.json"


def numbers(result, asset: str) -> dict:
    """The numbers of ``asset``'s materialization in a run's result."""
    metadata = materialization(result, asset).metadata
    return {k: v.value for k, v in metadata.items() if isinstance(v.value, int | float)}


def in_store_and_on_disk(root: str, tmp_path: Path, monkeypatch, **args):
    """The demo partition with its output root in an object store (this machine's scratch and
    state under ``tmp_path``), then on a local disk: both succeed, every temporary upload is
    removed, no raster stays on the machine, and the two give the same numbers. The results."""
    monkeypatch.setenv("GEOCLUSTER_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("GEOCLUSTER_SCRATCH", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    stored = run(root, **args)
    assert stored.success
    assert list((tmp_path / "scratch").iterdir()) == []  # every temporary upload removed
    assert not list((tmp_path / "state").rglob("*.tif"))
    local = run(tmp_path / "local", **args)
    assert local.success
    for asset in ("clusters", "diagnostics"):
        assert numbers(stored, asset) == numbers(local, asset), asset
    return stored, local


def assert_loads_as_on_disk(item_url: str, local_item: Path) -> None:
    """The Item read back from an object store loads with odc-stac, pixel for pixel as the
    same partition's Item on a local disk."""
    import odc.stac
    import pystac

    from geocluster_dagster import object_store

    object_store.configure_gdal()
    document = json.loads(object_store.as_path(item_url).read_text())
    bands = ["red", "nir", "ndvi"]
    loaded = odc.stac.load([pystac.read_dict(document, href=item_url)], bands=bands)
    local_loaded = odc.stac.load([pystac.Item.from_file(str(local_item))], bands=bands)
    for band in bands:
        np.testing.assert_array_equal(loaded[band].values, local_loaded[band].values)


# --- the real Landsat 7 LEDAPS stacks ----------------------------------------------------------

DATA = SHARED_DATA
LANDSAT7 = DATA / "landsat7_sr_022049_labeled_opengeotutorial"
STACK_1999 = LANDSAT7 / "LE70220491999322EDC01_stack.gtif"
STACK_2002 = LANDSAT7 / "LE70220492002106EDC00_stack.gtif"
REFLECTANCE = ["blue", "green", "red", "nir", "swir16", "swir22"]
FMASK_SHADOW, FMASK_CLOUD = 2, 4


def landsat7_dataset(path: Path, *, mask_clouds: bool = False, chunks: int | None = 64):
    """Float32 reflectance (bands 1-5 and 7 of ETM+, stored x10000) plus brightness temperature
    (kelvin x10) as ``lwir``; NaN at nodata and, optionally, at Fmask cloud/shadow pixels."""
    with rasterio.open(path) as src:
        stack = src.read()
        descriptions = src.descriptions
        transform, crs, nodata = src.transform, src.crs, src.nodata
    assert descriptions[5] == "band 7 reflectance" and descriptions[6] == "band 6 temperature"
    invalid = (
        (stack[:7] == nodata).any(axis=0) if nodata is not None else np.zeros(stack.shape[1:], bool)
    )
    if mask_clouds:
        invalid |= np.isin(stack[7], [FMASK_SHADOW, FMASK_CLOUD])
    values = {name: stack[i] / np.float32(10_000) for i, name in enumerate(REFLECTANCE)}
    values["lwir"] = stack[6] / np.float32(10)
    height, width = stack.shape[1:]
    x = transform.c + transform.a * (np.arange(width) + 0.5)
    y = transform.f + transform.e * (np.arange(height) + 0.5)
    ds = xr.Dataset(
        {
            name: (("y", "x"), np.where(invalid, np.nan, band).astype(np.float32))
            for name, band in values.items()
        },
        coords={"x": x, "y": y},
    ).rio.write_crs(crs)
    return ds.chunk({"y": chunks, "x": chunks}) if chunks else ds


# --- DN encodings ------------------------------------------------------------------------------

LANDSAT_SR = (2.75e-5, -0.2)
LANDSAT_ST = (0.00341802, 149.0)


def loaded(dn: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """What the loader makes of DNs: float32 arithmetic with float32 scale and offset."""
    return dn.astype("float32") * np.float32(scale) + np.float32(offset)


# --- the Brumadinho pair -----------------------------------------------------------------------

BEFORE, AFTER = sorted(BRUMADINHO_ORIGINS)  # 2019-01-14 and 2019-01-30, the dam broke on the 25th


def stable_overlap(images, before, after):
    """Pixels of both dates, outside what changed: the mudflow (NDVI fell by more than 0.3,
    vegetation buried by tailings) and either date's clouds (blue reflectance above 0.12)."""
    ndvi = {d: ((i.nir - i.red) / (i.nir + i.red)).values for d, i in images.items()}
    blue = {d: images[d].blue.values for d in images}
    both = (before > 0) & (after > 0)
    mudflow = both & (ndvi[BEFORE] - ndvi[AFTER] > 0.3)
    cloud = (blue[BEFORE] > 0.12) | (blue[AFTER] > 0.12)
    return both & ~mudflow & ~cloud, mudflow


# --- the command, as a user runs it ------------------------------------------------------------


class CommandRun:
    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.exit_code, self.output = done.returncode, done.stdout + done.stderr


def invoke(output: Path, *args: str, env: dict[str, str] | None = None) -> CommandRun:
    """The command in its own process, as a user runs it (no DAGSTER_HOME: the command keeps
    its instance under the output root; no registry or catalog: the demo's), plus ``env``."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "DAGSTER_"))},
        **(env or {}),
    }
    command = [sys.executable, "-m", "geocluster_dagster", "--output", str(output), *args]
    return CommandRun(subprocess.run(command, env=env, capture_output=True, text=True, timeout=600))


def gdalinfo_json(path, *options: str) -> dict:
    """What GDAL itself reports (Debian gdal-bin, as .ci/run installs it)."""
    tool = installed("gdalinfo", "gdal-bin")
    return json.loads(subprocess.run([tool, "-json", *options, str(path)], check=True, capture_output=True, text=True).stdout)  # fmt: skip


def qgis_render(paths, folder: Path) -> dict:
    """What QGIS draws of each raster when a user opens it with no style: its renderer, the
    paletted classes and the shares of the rendered colours (tests/qgis_render.py, run by
    Debian's python3 with its python3-qgis, as .ci/run installs them)."""
    from .servers.ports import ServerUnavailable

    python = "/usr/bin/python3"
    probe = subprocess.run([python, "-c", "import qgis.core"], capture_output=True)
    if probe.returncode != 0:
        raise ServerUnavailable("PyQGIS (Debian's python3-qgis)")
    out = folder / "qgis.json"
    script = Path(__file__).with_name("qgis_render.py")
    subprocess.run(
        [python, str(script), str(out), str(folder), *map(str, paths)],
        check=True, capture_output=True, text=True, timeout=300,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )  # fmt: skip
    return json.loads(out.read_text())


class WatchingRunLauncher(DefaultRunLauncher):
    """A run launcher that, like Kubernetes' (a pod per run), checks each run's own worker
    under run monitoring."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True
