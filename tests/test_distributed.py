"""The graph on a real Dask cluster: `dask scheduler` and two `dask worker` processes on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import rasterio

from geocluster_dagster.defs.assets import PIPELINE_ASSETS
from geocluster_dagster.defs.outputs import OutputStore
from geocluster_dagster.defs.partitions import partition_key
from geocluster_dagster.defs.resources import AOIRegistry, DaskCluster, StacCatalog
from geocluster_dagster.demo import DEMO_MONTH, build_demo

from .servers.ports import wait_for_port

pytestmark = pytest.mark.servers

DASK = str(Path(sys.executable).with_name("dask"))


@pytest.fixture
def dask_processes(tmp_path):
    """A scheduler and two single-threaded worker processes, stopped at the end."""
    with _dask_processes(tmp_path) as started:
        yield started


def _scheduler_address(scheduler_file: Path, process, log: Path, timeout: float = 60.0) -> str:
    """The address the scheduler wrote into its scheduler file, once it listens there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"dask scheduler exited with code {process.returncode}: {log.read_text()[-2000:]}"
            )
        if scheduler_file.exists():
            with contextlib.suppress(ValueError):
                address = json.loads(scheduler_file.read_text())["address"]
                wait_for_port(int(address.rsplit(":", 1)[1]), process=process)
                return address
        time.sleep(0.1)
    raise TimeoutError(
        f"dask scheduler wrote no address after {timeout} s: {log.read_text()[-2000:]}"
    )


@contextlib.contextmanager
def _dask_processes(tmp_path, *, env=None, cwd=None):
    """A scheduler and two single-threaded worker processes (in ``cwd``, with ``env``)."""
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    # The scheduler binds a port of its own choosing (port 0) and writes its address into a
    # scheduler file once it listens: a port picked beforehand can be taken before it binds.
    scheduler_file = tmp_path / "scheduler.json"
    procs = [
        subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                ":0",
                "--scheduler-file",
                str(scheduler_file),
            ],
            stdout=(logs / "scheduler.log").open("w"),
            stderr=subprocess.STDOUT,
        )
    ]
    try:
        address = _scheduler_address(scheduler_file, procs[0], logs / "scheduler.log")
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        DASK,
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--memory-limit",
                        "2GiB",
                        "--name",
                        f"worker-{i}",
                        "--no-dashboard",
                        "--local-directory",
                        str(tmp_path / f"w{i}"),
                    ],
                    stdout=(logs / f"worker-{i}.log").open("w"),
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                )
            )
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address, logs
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _materialize(demo, out, dask_resource):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("aoi", ["demo"])
    return dg.materialize(
        PIPELINE_ASSETS,
        partition_key=partition_key("demo", DEMO_MONTH),
        instance=instance,
        resources={
            "aoi_registry": AOIRegistry(path=str(demo.aoi_registry)),
            "stac": StacCatalog(url=str(demo.catalog)),
            "dask": dask_resource,
            "outputs": OutputStore(base_dir=str(out)),
        },
    )


def test_a_partition_on_scheduler_and_two_workers_equals_the_local_run(dask_processes, tmp_path):
    address, logs = dask_processes
    demo = build_demo(tmp_path / "demo")
    remote = _materialize(demo, tmp_path / "remote", DaskCluster(scheduler_address=address))
    assert remote.success
    local = _materialize(demo, tmp_path / "local", DaskCluster())
    assert local.success

    for relative in (
        f"mosaic/demo/{DEMO_MONTH}.tif",
        f"geotiff/demo/{DEMO_MONTH}/bands.tif",
        f"geotiff/demo/{DEMO_MONTH}/indices.tif",
        f"clusters/demo/{DEMO_MONTH}/cluster_map.tif",
    ):
        with (
            rasterio.open(tmp_path / "remote" / relative) as a,
            rasterio.open(tmp_path / "local" / relative) as b,
        ):
            assert (a.crs, a.transform, a.descriptions) == (b.crs, b.transform, b.descriptions)
            np.testing.assert_array_equal(a.read(), b.read())
    remote_sig = (
        tmp_path / "remote" / "clusters" / "demo" / DEMO_MONTH / "signatures.csv"
    ).read_text()
    assert (
        remote_sig
        == (tmp_path / "local" / "clusters" / "demo" / DEMO_MONTH / "signatures.csv").read_text()
    )
    # The work really ran on both workers, not in the Dagster process.
    from distributed import Client

    with Client(address) as client:
        transitions = client.run(lambda dask_worker: len(dask_worker.state.log))
    assert len(transitions) == 2 and all(n > 0 for n in transitions.values()), transitions
    # One key, one task: a scheduler given two different tasks under one key can deadlock
    # (dask/dask#9888), which block-by-block computes used to cause.
    assert "Detected different `run_spec`" not in (logs / "scheduler.log").read_text()


@pytest.mark.parametrize("store", ["s3", "azure"])
def test_workers_that_cannot_see_the_output_root_write_a_partition_into_the_store(
    store, request, tmp_path, monkeypatch
):
    """The output root only in an object store (S3-compatible, or Azure Blob): workers in
    another folder, with the store's endpoint and keys in their environment and nothing else,
    read and compute every product; the outputs equal the local run's, pixel for pixel."""
    from geocluster_dagster import object_store

    demo = build_demo(tmp_path / "demo")
    monkeypatch.setenv("GEOCLUSTER_STATE", str(tmp_path / "state"))
    server = request.getfixturevalue(store)
    top = server.bucket("outputs") if store == "s3" else server.container("outputs")
    root = top + "/prefix"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The workers' environment: the store's, without GDAL's own endpoint settings (the
    # resource's worker plugin gives them), nothing of the output root.
    worker_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING")
        and not k.startswith("GEOCLUSTER_")
    }
    with _dask_processes(tmp_path, env=worker_env, cwd=elsewhere) as (address, logs):
        remote = _materialize(demo, root, DaskCluster(scheduler_address=address))
        assert remote.success
        from distributed import Client

        with Client(address) as client:
            transitions = client.run(lambda dask_worker: len(dask_worker.state.log))
    assert len(transitions) == 2 and all(n > 0 for n in transitions.values()), transitions
    local = _materialize(demo, tmp_path / "local", DaskCluster())
    assert local.success
    object_store.configure_gdal()
    for asset, name in (
        ("mosaic", ""),
        ("geotiff", "bands.tif"),
        ("geotiff", "indices.tif"),
        ("clusters", "cluster_map.tif"),
    ):
        suffix = ".tif" if asset == "mosaic" else ""
        url = f"{root}/{asset}/demo/{DEMO_MONTH}{suffix}"
        located = object_store.location(url, folder=not suffix)
        assert located is not None, url
        remote_file = f"{located}/{name}" if name else located
        local_file = tmp_path / "local" / asset / "demo" / f"{DEMO_MONTH}{suffix}" / name
        with rasterio.open(remote_file) as a, rasterio.open(local_file) as b:
            assert (a.crs, a.transform, a.descriptions) == (b.crs, b.transform, b.descriptions)
            np.testing.assert_array_equal(a.read(), b.read())
    assert not list(elsewhere.iterdir())  # the workers wrote nothing where they ran
