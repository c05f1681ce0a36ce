"""The one atomic write: a folder is replaced whole or not at all."""

from __future__ import annotations

import errno
import os

import pytest

from geocluster_dagster import storage
from geocluster_dagster.errors import OutputNotWritable
from geocluster_dagster.storage import atomic_path


def _folder(path, text: str) -> None:
    path.mkdir()
    (path / "a.txt").write_text(text)


def test_a_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "clusters"
    _folder(target, "old")
    (target / "only_in_old.txt").write_text("x")
    with atomic_path(target) as tmp:
        _folder(tmp, "new")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert (target / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["clusters"]  # no temporaries left


def test_keep_existing_discards_the_new_copy(tmp_path):
    target = tmp_path / "demo"
    _folder(target, "first")
    with atomic_path(target, keep_existing=lambda path: (path / "a.txt").exists()) as tmp:
        _folder(tmp, "second")
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_the_old_folder_comes_back_when_the_new_one_cannot_take_its_place(tmp_path, monkeypatch):
    target = tmp_path / "diagnostics"
    _folder(target, "old")
    real_replace = os.replace

    def replace(source, destination):
        if ".tmp" in os.fspath(source):  # the new folder moving in
            raise OSError(errno.EIO, "I/O error")
        real_replace(source, destination)

    monkeypatch.setattr(storage.os, "replace", replace)
    with pytest.raises(OSError, match="I/O error"), atomic_path(target) as tmp:
        _folder(tmp, "new")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["diagnostics"]


def test_a_full_disk_is_reported_in_the_users_terms(tmp_path):
    with pytest.raises(OutputNotWritable, match="disk is full") as refused:
        with atomic_path(tmp_path / "plot.png"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert "GEOCLUSTER_OUTPUT" in str(refused.value)
    assert list(tmp_path.iterdir()) == []
