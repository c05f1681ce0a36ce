"""The real test data's manifest (tests/test_data.json), the script that fetches it from its
public repositories and the one that checks a copy, as a newcomer uses them before the tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SHARED_DATA

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "verify-test-data.py"
MANIFEST = SCRIPT.parents[1] / "tests" / "test_data.json"


def _verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_the_shared_data_is_the_manifests(tmp_path):
    done = _verify(str(SHARED_DATA))
    assert done.returncode == 0, done.stderr
    assert "50 files" in done.stdout


def test_a_changed_or_missing_file_is_named_with_where_it_comes_from(tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(SHARED_DATA, copy)
    (copy / "landsat8_sr_labeled_samples_spyndex" / "spectral.json").write_text("{}")
    (copy / "stac" / "pc_landsat-c2-l2_collection.json").unlink()
    done = _verify(str(copy))
    assert done.returncode == 1
    assert "wrong size: landsat8_sr_labeled_samples_spyndex/spectral.json" in done.stderr
    assert "awesome-spectral-indices/spyndex at commit 82914d2" in done.stderr
    assert "missing: stac/pc_landsat-c2-l2_collection.json" in done.stderr
    absent = _verify(str(tmp_path / "nowhere"))
    assert absent.returncode == 1 and "compgeolab/xlandsat" in absent.stderr


FETCH = SCRIPT.with_name("fetch-test-data.py")


def _mirror(root: Path) -> None:
    """A tree laid out like raw.githubusercontent.com (<owner>/<repo>/<commit>/<path>) with
    every file of the manifest where its recipe says, built from the shared copy: plain files,
    the members of .tar.gz archives, and the response bodies of recorded cassettes."""
    import io
    import tarfile

    import yaml

    manifest = json.loads(MANIFEST.read_text())
    archives: dict[Path, list[tuple[str, bytes]]] = {}
    cassettes: dict[Path, dict[int, str]] = {}
    for name, entry in manifest["files"].items():
        source = entry["from"]
        url_path = root / source["repo"] / source["commit"] / source["path"]
        content = (SHARED_DATA / name).read_bytes()
        if "member" in source:
            archives.setdefault(url_path, []).append((source["member"], content))
        elif "interaction" in source:
            cassettes.setdefault(url_path, {})[source["interaction"]] = content.decode()
        else:
            url_path.parent.mkdir(parents=True, exist_ok=True)
            url_path.write_bytes(content)
    for path, members in archives.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w:gz") as archive:
            for member, content in members:
                info = tarfile.TarInfo(member)
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    for path, bodies in cassettes.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        interactions = [
            {"request": {"uri": f"https://example.test/{i}"},
             "response": {"status": {"code": 200}, "body": {"string": bodies.get(i, "{}")}}}
            for i in range(max(bodies) + 1)
        ]  # fmt: skip
        path.write_text(yaml.safe_dump({"interactions": interactions, "version": 1}))


@pytest.fixture
def mirror(tmp_path):
    """The mirror served over HTTP on loopback: its base URL and its root folder."""
    import functools
    import http.server
    import threading

    root = tmp_path / "raw"
    _mirror(root)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def _fetch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FETCH), *args], capture_output=True, text=True)


def test_the_fetch_script_downloads_every_file_and_the_copy_verifies(mirror, tmp_path):
    """From each file's repository, commit and path (and archive member, or cassette
    interaction), served over HTTP: the folder it fills is the shared copy, byte for byte."""
    base_url, _ = mirror
    target = tmp_path / "data"
    done = _fetch(str(target), "--base-url", base_url)
    assert done.returncode == 0, done.stderr
    assert "50 files" in done.stdout and "licence: MIT" in done.stdout
    assert _verify(str(target)).returncode == 0
    # run again with the mirror gone: every file is there and equal, nothing is fetched
    again = _fetch(str(target), "--base-url", "http://127.0.0.1:9")
    assert again.returncode == 0, again.stderr


def test_a_file_the_source_serves_changed_is_named_and_not_written(mirror, tmp_path):
    base_url, root = mirror
    manifest = json.loads(MANIFEST.read_text())
    source = manifest["files"]["landsat8_sr_labeled_samples_spyndex/spectral.json"]["from"]
    (root / source["repo"] / source["commit"] / source["path"]).write_text("{}")
    target = tmp_path / "data"
    done = _fetch(str(target), "--base-url", base_url)
    assert done.returncode == 1
    assert "landsat8_sr_labeled_samples_spyndex/spectral.json from http" in done.stderr
    assert "not the file the tests expect" in done.stderr
    assert not (target / "landsat8_sr_labeled_samples_spyndex" / "spectral.json").exists()
    assert (target / "stac" / "pc_landsat-c2-l2_collection.json").exists()  # the others are
