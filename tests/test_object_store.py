"""Products on a real S3-compatible server on loopback: a version behind a pointer, so an
earlier good product stays readable whatever happens to the upload of the next."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from geocluster_dagster import object_store
from geocluster_dagster.demo import DEMO_MONTH
from geocluster_dagster.errors import AssetReadError

from .helpers import item_file, numbers
from .servers.s3 import S3Server

pytestmark = pytest.mark.servers


def _folder(path, files: dict[str, bytes]):
    path.mkdir(parents=True)
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def _read(version: object_store.Version, name: str) -> bytes:
    import fsspec

    with fsspec.open(f"{version.url}/{name}", "rb", skip_instance_cache=True) as handle:
        return handle.read()


def test_a_published_folder_is_read_through_its_pointer_and_replaced_whole(s3, tmp_path):
    url = s3.bucket("outputs") + "/prefix/clusters/demo/2023-06-01"
    assert object_store.current(url) is None
    first = object_store.publish(
        _folder(tmp_path / "a", {"model.json": b"1", "x/y.csv": b"a"}), url
    )
    assert object_store.current(url) == first and first.folder
    assert _read(first, "x/y.csv") == b"a"
    second = object_store.publish(_folder(tmp_path / "b", {"model.json": b"2"}), url)
    assert object_store.current(url) == second and _read(second, "model.json") == b"2"
    assert object_store.versions(url) == [second.id]  # the one before is removed
    # The store holds the pointer and one version, nothing at the product's own prefix.
    bucket = s3.root / "outputs" / "prefix" / "clusters" / "demo"
    assert sorted(p.name for p in bucket.iterdir()) == [".2023-06-01.versions", "2023-06-01"]
    assert json.loads((bucket / "2023-06-01").read_text())["version"] == second.id
    assert object_store.remove(url) and object_store.current(url) is None
    assert object_store.versions(url) == []


def test_a_published_file_keeps_its_name(s3, tmp_path):
    url = s3.bucket("outputs") + "/mosaic/demo/2023-06-01.tif"
    (tmp_path / "m.tif").write_bytes(b"II*\x00")
    version = object_store.publish(tmp_path / "m.tif", url)
    assert not version.folder and version.url.endswith("/2023-06-01.tif")
    import fsspec

    with fsspec.open(version.url, "rb", skip_instance_cache=True) as handle:
        assert handle.read() == b"II*\x00"


def test_a_pointer_another_program_wrote_is_refused_with_what_to_do(s3):
    url = s3.bucket("outputs") + "/geotiff/demo/2023-06-01"
    (s3.root / "outputs" / "geotiff" / "demo").mkdir(parents=True)
    (s3.root / "outputs" / "geotiff" / "demo" / "2023-06-01").write_text("not a pointer")
    with pytest.raises(AssetReadError, match="not a product pointer .* Remove it"):
        object_store.current(url)


_UPLOAD = """
import sys
from pathlib import Path
from geocluster_dagster import object_store
object_store.publish(Path(sys.argv[1]), sys.argv[2])
"""


def test_a_kill_during_an_upload_leaves_the_earlier_version_and_the_next_run_clean(s3, tmp_path):
    url = s3.bucket("outputs") + "/geotiff/demo/2023-06-01"
    good = object_store.publish(_folder(tmp_path / "good", {"bands.tif": b"good"}), url)
    # A new version of 400 files of 256 kB: killed while its files are still going up.
    big = _folder(tmp_path / "big", {f"part_{i:03d}.bin": os.urandom(1 << 18) for i in range(400)})
    upload = subprocess.Popen([sys.executable, "-c", _UPLOAD, str(big), url], env=os.environ)
    versions = s3.root / "outputs" / "geotiff" / "demo" / ".2023-06-01.versions"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        uploaded = list(versions.rglob("part_*.bin"))
        if len(uploaded) >= 5:
            break
        assert upload.poll() is None, "the upload ended before it could be killed"
        time.sleep(0.02)
    upload.send_signal(signal.SIGKILL)
    upload.wait()
    assert 5 <= len(list(versions.rglob("part_*.bin"))) < 400
    # The product is still the good version, whole; the killed upload is an orphan version.
    assert object_store.current(url) == good and _read(good, "bands.tif") == b"good"
    assert len(object_store.versions(url)) == 2
    # The next publication removes it.
    again = object_store.publish(_folder(tmp_path / "again", {"bands.tif": b"again"}), url)
    assert object_store.versions(url) == [again.id] and _read(again, "bands.tif") == b"again"


def test_the_demo_graph_materializes_into_the_bucket(s3, demo, dask_cluster, tmp_path, monkeypatch):
    """Every asset of a demo partition on an s3:// output root: the products are in the
    bucket, nothing of them on this machine, and they read back as the local run's."""
    from .helpers import assert_loads_as_on_disk, in_store_and_on_disk, materialization

    root = s3.bucket("outputs") + "/prefix"
    result, _ = in_store_and_on_disk(
        root,
        tmp_path,
        monkeypatch,
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=dask_cluster,
    )
    stored = s3.root / "outputs" / "prefix"
    for product in ("stac_items", "band_stack", "mosaic", "geotiff", "clusters", "diagnostics"):
        assert (stored / product / "demo").is_dir(), product
    metadata = materialization(result, "clusters").metadata
    assert metadata["cluster_map_path"].value.startswith("s3://outputs/prefix/clusters/demo/")
    item = json.loads(item_file(stored, "demo", DEMO_MONTH).read_text())
    local_item = json.loads(item_file(tmp_path / "local", "demo", DEMO_MONTH).read_text())
    assert sorted(item["assets"]) == sorted(local_item["assets"])
    for key in ("bands", "indices", "cluster_map"):
        assert item["assets"][key]["file:size"] > 0
    assert_loads_as_on_disk(
        f"{root}/stac/demo/{DEMO_MONTH[:4]}/{DEMO_MONTH}.json",
        item_file(tmp_path / "local", "demo", DEMO_MONTH),
    )


def _command(output: str, env: dict[str, str], cwd) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "DAGSTER_", "AWS_"))
    }
    # No credentials from the machine's files or an instance role: only what the test gives.
    clean.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    )
    return subprocess.run(
        [sys.executable, "-m", "geocluster_dagster", "--output", output, "demo"],
        env={**clean, "GEOCLUSTER_STATE": str(cwd / "state"), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_store_the_run_cannot_use_is_refused_in_one_line_before_any_work(tmp_path):
    with S3Server(tmp_path / "s3") as server:
        server.bucket("outputs")
        cases = {
            "does not exist": ("s3://nosuch/demo", server.environment()),
            "refuses these credentials": (
                "s3://outputs/demo",
                {**server.environment(), "AWS_SECRET_ACCESS_KEY": "wrong"},
            ),
            "no credentials": (
                "s3://outputs/demo",
                {
                    k: v
                    for k, v in server.environment().items()
                    if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")
                },
            ),
        }
        for problem, (output, env) in cases.items():
            done = _command(output, env, tmp_path)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2 and len(lines) == 1, (problem, done.stderr)
            assert lines[0].startswith(f"Error: --output (env GEOCLUSTER_OUTPUT)={output!r}: ")
            assert problem in lines[0], lines[0]
        assert sorted(p.name for p in (tmp_path / "s3").iterdir()) == ["outputs"]
        assert not list((tmp_path / "s3" / "outputs").iterdir())  # nothing written


def test_change_between_two_dates_in_the_bucket_along_the_cli(s3, tmp_path):
    """The CLI's path on an s3:// output root: two half-month dates, then the AOI's reference
    model and the second date again: the change is found through the pointers, and is true
    (the demo's ground is the same on both dates)."""
    from .helpers import invoke

    root = s3.bucket("outputs") + "/demo"
    env = {"GEOCLUSTER_DATE_WINDOWS": "half_month", "GEOCLUSTER_STATE": str(tmp_path / "state")}
    for date in ("2023-06-01", "2023-06-16"):
        done = invoke(root, "materialize", "--aoi", "demo", "--date", date, env=env)
        assert done.exit_code == 0, done.output
    done = invoke(root, "reference", "--aoi", "demo", env=env)
    assert done.exit_code == 0, done.output
    done = invoke(root, "materialize", "--aoi", "demo", "--date", "2023-06-16", env=env)
    assert done.exit_code == 0, done.output
    change = object_store.current(f"{root}/cluster_change/demo/2023-06-16")
    assert change is not None
    stored = s3.root / change.url.removeprefix("s3://")
    summary = json.loads((stored / "summary.json").read_text())
    assert summary["model"]["how"] in ("reference", "shared") and summary["changed_share"] <= 0.01
    item = json.loads(item_file(s3.root / "outputs" / "demo", "demo", "2023-06-16").read_text())
    assert "change_map" in item["assets"]
    assert object_store.current(f"{root}/cluster_model/demo") is not None
    assert not list(tmp_path.glob("*.tif")) and not (tmp_path / "demo").exists()


def test_a_run_killed_while_it_uploads_leaves_the_bucket_readable_and_the_next_run_equal(
    s3, tmp_path
):
    """SIGKILL the command while a folder product is going up: the partition's products stay
    the earlier run's (whole, behind their pointers); the next run is clean and equal."""
    root = s3.bucket("outputs") + "/demo"
    env = {"GEOCLUSTER_STATE": str(tmp_path / "state")}
    from .helpers import invoke

    first = invoke(root, "demo", env=env)
    assert first.exit_code == 0, first.output
    scores = [line for line in first.output.splitlines() if line.startswith("Scores: ")]
    pointer = s3.root / "outputs" / "demo" / "diagnostics" / "demo" / DEMO_MONTH
    published = json.loads(pointer.read_text())["version"]

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "DAGSTER_"))}
    command = [sys.executable, "-m", "geocluster_dagster", "--output", root, "demo"]
    running = subprocess.Popen(
        command, env={**clean, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    versions = pointer.parent / f".{DEMO_MONTH}.versions"
    deadline = time.monotonic() + 300
    # A second version of the diagnostics appears when its upload starts: kill then.
    while time.monotonic() < deadline and running.poll() is None:
        if versions.is_dir() and len(list(versions.iterdir())) > 1:
            break
        time.sleep(0.01)
    assert running.poll() is None, "the run ended before its upload could be killed"
    running.send_signal(signal.SIGKILL)
    running.wait()
    # The diagnostics are still the first run's, whole.
    assert json.loads(pointer.read_text())["version"] == published
    assert object_store.current(f"{root}/diagnostics/demo/{DEMO_MONTH}").id == published
    # The next run is clean (the killed upload reaped) and equal.
    again = invoke(root, "demo", env=env)
    assert again.exit_code == 0, again.output
    assert [line for line in again.output.splitlines() if line.startswith("Scores: ")] == scores
    # One version holds objects: the published one. (The test's store keeps a folder on its
    # disk until its last object is gone; a folder left empty holds nothing any client sees.)
    holding = [v.name for v in versions.iterdir() if any(f.is_file() for f in v.rglob("*"))]
    current = object_store.current(f"{root}/diagnostics/demo/{DEMO_MONTH}")
    assert current is not None and holding == [current.id], (holding, list(versions.iterdir()))


def test_the_scratch_of_a_killed_upload_is_removed_by_the_next(s3, tmp_path, monkeypatch):
    """A run killed while its product waited on the scratch disk leaves it there: the next
    upload on this host removes it, and leaves a live process's alone."""
    import socket

    from geocluster_dagster.storage import atomic_path

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("GEOCLUSTER_SCRATCH", str(scratch))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host = socket.gethostname()
    killed = scratch / f"geocluster-upload-{host}.{int(dead.stdout)}-abc"
    alive = scratch / f"geocluster-upload-{host}.{os.getpid()}-def"
    for folder in (killed, alive):
        (folder / "bands.tif").parent.mkdir(parents=True)
        (folder / "bands.tif").write_bytes(b"x" * 1000)
    with atomic_path(s3.bucket("outputs") + "/mosaic/demo/2023-06-01.tif") as tmp:
        tmp.write_bytes(b"II*\x00")
    assert not killed.exists() and alive.exists()
    assert sorted(p.name for p in scratch.iterdir()) == [alive.name]  # its own removed too


def test_scenes_whose_assets_are_s3_hrefs_are_read_through_the_store(
    s3, demo, dask_cluster, tmp_path, monkeypatch
):
    """Items whose asset hrefs are s3:// URLs (as Earth Search's and USGS's Landsat items
    are): the pixels are read from the bucket, and the partition equals the one read from
    the files themselves."""
    import shutil

    import pystac

    from .helpers import run

    monkeypatch.setenv("GEOCLUSTER_STATE", str(tmp_path / "state"))
    s3.bucket("scenes")
    items = []
    for path in sorted(demo.catalog.parent.rglob("*.json")):
        if json.loads(path.read_text()).get("type") != "Feature":
            continue
        item = pystac.Item.from_file(str(path))
        for asset in item.assets.values():
            source = asset.get_absolute_href()
            assert source is not None
            name = source.rsplit("/", 1)[-1]
            (s3.root / "scenes" / item.id).mkdir(parents=True, exist_ok=True)
            shutil.copy(source, s3.root / "scenes" / item.id / name)
            asset.href = f"s3://scenes/{item.id}/{name}"
        items.append(item)
    catalog = tmp_path / "items.json"
    catalog.write_text(json.dumps(pystac.ItemCollection(items).to_dict(transform_hrefs=False)))
    args = {"registry": demo.aoi_registry, "dask_cluster": dask_cluster}
    from_bucket = run(tmp_path / "a", catalog=str(catalog), **args)
    assert from_bucket.success
    from_files = run(tmp_path / "b", catalog=str(demo.catalog), **args)
    assert from_files.success
    assert (tmp_path / "a" / "mosaic" / "demo" / f"{DEMO_MONTH}.tif").stat().st_size > 0
    for asset in ("mosaic", "clusters"):
        assert numbers(from_bucket, asset) == numbers(from_files, asset), asset


def test_a_requester_pays_bucket_is_read_with_the_requester_paying():
    """GDAL's AWS_REQUEST_PAYER for USGS's bucket (always requester-pays) and, with the
    setting, any bucket; never for http(s) hrefs."""
    from geocluster_dagster.remote import RemoteReader, RemoteReadSettings

    usgs = "s3://usgs-landsat/collection02/level-2/standard/oli-tirs/2023/SR_B4.TIF"
    other = "s3://my-bucket/scene/SR_B4.TIF"
    reader = RemoteReader()
    assert reader._options(usgs, fresh=False)["AWS_REQUEST_PAYER"] == "requester"
    assert "AWS_REQUEST_PAYER" not in reader._options(other, fresh=False)
    paying = RemoteReader(RemoteReadSettings(requester_pays=True))
    assert paying._options(other, fresh=False)["AWS_REQUEST_PAYER"] == "requester"
    assert "AWS_REQUEST_PAYER" not in paying._options("https://host/scene/SR_B4.TIF", fresh=False)
    # A retry bypasses GDAL's cache of an s3 href as of an http one.
    assert reader._options(other, fresh=True)["CPL_VSIL_CURL_NON_CACHED"] == f"/vsis3/{other}"


def test_throttling_and_a_dropped_connection_are_retried_with_a_log_line(
    s3, tmp_path, monkeypatch, caplog
):
    """503 SlowDown answers and a connection reset on the upload of a product: retried by the
    client, each retried answer a warning in the run's log, and the product published whole.
    (A dropped keep-alive connection is reopened by aiohttp itself, without a log line.)"""
    from .servers.fault_proxy import Fault, FaultProxy

    url = s3.bucket("outputs") + "/geotiff/demo/2023-06-01"
    with FaultProxy(s3.endpoint, keep_host=True) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.base_url)
        proxy.add(
            Fault.status(503, times=2, method="PUT", path="bands.tif"),
            Fault.reset(times=1, method="PUT", path="indices.tif"),
        )
        folder = tmp_path / "geotiff"
        folder.mkdir()
        (folder / "bands.tif").write_bytes(b"bands")
        (folder / "indices.tif").write_bytes(b"indices")
        with caplog.at_level("WARNING", logger="geocluster_dagster.object_store"):
            version = object_store.publish(folder, url)
            outcomes = proxy.outcomes()
    assert outcomes["status 503"] == 2 and outcomes["reset"] == 1, outcomes
    retried = [r for r in caplog.records if "is retried" in r.getMessage()]
    assert len(retried) == 2, [r.getMessage() for r in caplog.records]
    assert all(proxy.base_url in r.getMessage() for r in retried)
    stored = s3.root / version.url.removeprefix("s3://")
    assert (stored / "bands.tif").read_bytes() == b"bands"
    assert (stored / "indices.tif").read_bytes() == b"indices"
