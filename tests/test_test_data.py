"""The real test data's manifest (tests/test_data.json) and its checker, a copy of which a
newcomer can verify before running the tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import SHARED_DATA

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "verify-test-data.py"


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
