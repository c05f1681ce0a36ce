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
from geocluster_dagster.errors import AssetReadError

from .servers.s3 import S3Server

pytestmark = pytest.mark.servers


@pytest.fixture
def s3(tmp_path, monkeypatch):
    with S3Server(tmp_path / "s3") as server:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        yield server


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
