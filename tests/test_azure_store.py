"""Products on Azure Blob Storage (``az://container/prefix``), against Azurite, Microsoft's
emulator, on loopback: the same versions behind a pointer as on S3, the graph's products read
back through GDAL's /vsiaz/, and a store the run cannot use refused before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from geocluster_dagster import object_store
from geocluster_dagster.demo import DEMO_MONTH

from .servers.ports import free_port

pytestmark = pytest.mark.servers


def _listing(url: str) -> list[str]:
    import fsspec

    fs, key = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(key, detail=False))


def test_a_folder_is_published_behind_a_pointer_in_a_container(azure, tmp_path):
    url = azure.container("outputs") + "/clusters/demo/2023-06-01"
    assert object_store.current(url) is None
    first_folder = tmp_path / "a"
    (first_folder / "x").mkdir(parents=True)
    (first_folder / "model.json").write_bytes(b"1")
    (first_folder / "x" / "y.csv").write_bytes(b"a")
    first = object_store.publish(first_folder, url)
    assert object_store.current(url) == first and first.url.startswith("az://outputs/")
    second_folder = tmp_path / "b"
    second_folder.mkdir()
    (second_folder / "model.json").write_bytes(b"2")
    second = object_store.publish(second_folder, url)
    assert object_store.current(url) == second
    assert object_store.versions(url) == [second.id]  # the one before is removed
    assert _listing("az://outputs/clusters/demo") == [".2023-06-01.versions", "2023-06-01"]
    assert object_store.location(url, folder=True) == second.url
    assert object_store.as_path(second.url).joinpath("model.json").read_bytes() == b"2"
    assert object_store.remove(url) and object_store.current(url) is None


def test_the_demo_graph_materializes_into_a_container_and_reads_back(
    azure, demo, dask_cluster, tmp_path, monkeypatch
):
    """Every asset of a demo partition on an az:// output root, the Dask workers reading the
    products back through GDAL's /vsiaz/ with the credentials of their own environment: the
    same numbers as on a local disk, and the Item read from the container loads with
    odc-stac."""
    from .helpers import assert_loads_as_on_disk, in_store_and_on_disk, item_file, materialization

    root = azure.container("outputs") + "/prefix"
    result, _ = in_store_and_on_disk(
        root,
        tmp_path,
        monkeypatch,
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
    )
    stored = _listing(root)
    for product in ("stac_items", "band_stack", "mosaic", "geotiff", "clusters", "diagnostics"):
        assert product in stored, product
    assert {f".{DEMO_MONTH}.versions", DEMO_MONTH} <= set(_listing(f"{root}/clusters/demo"))
    metadata = materialization(result, "clusters").metadata
    assert metadata["cluster_map_path"].value.startswith("az://outputs/prefix/clusters/demo/")
    url = f"{root}/stac/demo/{DEMO_MONTH[:4]}/{DEMO_MONTH}.json"
    document = json.loads(object_store.as_path(url).read_text())
    cluster_map = document["assets"]["cluster_map"]["href"]
    assert not cluster_map.startswith(("/", "az://"))  # relative: the catalog moves with it
    assert_loads_as_on_disk(url, item_file(tmp_path / "local", "demo", DEMO_MONTH))


def _command(output: str, env: dict[str, str], cwd) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GEOCLUSTER_", "DAGSTER_", "AWS_", "AZURE_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "geocluster_dagster", "--output", output, "demo"],
        env={**clean, "GEOCLUSTER_STATE": str(cwd / "state"), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_container_the_run_cannot_use_is_refused_in_one_line_before_any_work(azure, tmp_path):
    root = azure.container("outputs") + "/demo"
    wrong_key = azure.connection_string(key="QUFB" + azure.key[4:])
    closed = azure.connection_string().replace(f":{azure.port}/", f":{free_port()}/")
    cases = {
        "does not exist": ("az://nosuch/demo", azure.environment()),
        "refuses these credentials": (root, {"AZURE_STORAGE_CONNECTION_STRING": wrong_key}),
        "no credentials for Azure Blob Storage": (root, {}),
        "nothing answers at http://127.0.0.1:": (
            root,
            {"AZURE_STORAGE_CONNECTION_STRING": closed},
        ),
    }
    for problem, (output, env) in cases.items():
        done = _command(output, env, tmp_path)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (problem, done.stderr)
        assert lines[0].startswith(f"Error: --output (env GEOCLUSTER_OUTPUT)={output!r}: ")
        assert problem in lines[0], lines[0]
        assert azure.key not in done.stderr and "AccountKey" not in done.stderr
    assert _listing("az://outputs") == []  # nothing written
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").rglob("*.tif"))


def test_gdal_is_given_the_account_and_key_under_its_own_names(monkeypatch):
    """The Azure SDK reads AZURE_STORAGE_ACCOUNT_NAME/_KEY, GDAL AZURE_STORAGE_ACCOUNT and
    AZURE_STORAGE_ACCESS_KEY: the products' rasters are read by GDAL with the same account."""
    monkeypatch.setattr(object_store, "_CONFIGURED", {})
    for name in ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "myaccount")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "c2VjcmV0")
    assert object_store.gdal_options("az") == {
        "AZURE_STORAGE_ACCOUNT": "myaccount",
        "AZURE_STORAGE_ACCESS_KEY": "c2VjcmV0",
    }
    assert object_store.gdal_options("s3") == {}
    object_store.configure_gdal()
    assert os.environ["AZURE_STORAGE_ACCOUNT"] == "myaccount"
    # A value the user set for GDAL is kept.
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "theirs")
    object_store.configure_gdal()
    assert os.environ["AZURE_STORAGE_ACCOUNT"] == "theirs"
