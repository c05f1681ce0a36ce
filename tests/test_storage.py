"""The one atomic write: a folder is replaced whole or not at all."""

from __future__ import annotations

import errno
import json
import os

import pytest

from geocluster_dagster import storage
from geocluster_dagster.errors import OutputNotWritable, PartitionBusy
from geocluster_dagster.storage import atomic_path, current_version


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
    # The product is a link to its one version folder; the earlier folder and the temporaries
    # are gone.
    assert target.is_symlink() and current_version(target).is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["clusters", current_version(target).name]
    )
    with atomic_path(target) as tmp:  # replaced again: one rename of the link
        _folder(tmp, "newer")
    assert (target / "a.txt").read_text() == "newer"
    assert len(list(tmp_path.iterdir())) == 2


def test_a_kill_at_any_moment_of_a_folder_swap_leaves_a_whole_product(tmp_path, monkeypatch):
    """Every rename of the swap, interrupted in turn: the product is there, old or new."""
    import os as os_module

    from geocluster_dagster import storage

    target = tmp_path / "clusters"
    with atomic_path(target) as tmp:
        _folder(tmp, "old")
    real_replace = os_module.replace
    for step in range(1, 4):
        calls = {"n": 0}

        def dies(src, dst, _step=step, _calls=calls):
            _calls["n"] += 1
            if _calls["n"] == _step:
                raise KeyboardInterrupt  # the process stops here; nothing after runs
            return real_replace(src, dst)

        monkeypatch.setattr(storage.os, "replace", dies)
        try:
            with atomic_path(target) as tmp:
                _folder(tmp, "new")
        except KeyboardInterrupt:
            pass
        monkeypatch.setattr(storage.os, "replace", real_replace)
        assert (target / "a.txt").read_text() in ("old", "new"), step


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


def test_a_second_holder_waits_for_the_lock_and_is_told_who_holds_it(tmp_path):
    import threading

    lock = tmp_path / ".locks" / "demo" / "2023-06-01.lock"
    said: list[str] = []
    with storage.exclusive_lock(
        lock, what="Partition demo|2023-06-01", holder="run A", timeout_s=5, on_wait=said.append
    ):
        with pytest.raises(PartitionBusy) as busy:
            with storage.exclusive_lock(
                lock,
                what="Partition demo|2023-06-01",
                holder="run B",
                timeout_s=0.3,
                on_wait=said.append,
                poll_s=0.05,
            ):
                pytest.fail("two holders at once")
    assert len(said) == 1, "the wait is announced once"
    assert said[0].startswith(
        f"Partition demo|2023-06-01 is being written by run A (pid {os.getpid()}"
    )
    assert said[0].endswith(": waiting for it to finish.")
    assert "still being written by run A" in str(busy.value)
    assert "lock_timeout_s" in str(busy.value)

    order: list[str] = []
    release = threading.Event()

    def first() -> None:
        with storage.exclusive_lock(lock, what="p", holder="A", timeout_s=5, on_wait=print):
            order.append("A in")
            release.wait(5)
            order.append("A out")

    thread = threading.Thread(target=first)
    thread.start()
    while not order:
        pass
    threading.Timer(0.3, release.set).start()
    with storage.exclusive_lock(
        lock, what="p", holder="B", timeout_s=5, on_wait=print, poll_s=0.05
    ):
        order.append("B in")
    thread.join()
    assert order == ["A in", "A out", "B in"]


def test_a_killed_holder_leaves_the_lock_free(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    lock = tmp_path / "p.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path; from geocluster_dagster import storage\n"
            f"with storage.exclusive_lock(Path({str(lock)!r}), what='p', holder='victim', "
            "timeout_s=1, on_wait=print):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    start = time.monotonic()
    with storage.exclusive_lock(lock, what="p", holder="next", timeout_s=2, on_wait=print):
        assert time.monotonic() - start < 1


def test_a_folder_swap_killed_between_its_renames_gets_its_earlier_copy_back(tmp_path):
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)  # fmt: skip
    dead_pid = int(gone.stdout)
    target = tmp_path / "clusters" / "2023-06-01"
    target.parent.mkdir(parents=True)
    # What a kill between "old aside" and "new in" of a real folder (as products were before
    # they were links, and still are until their first rewrite) leaves: no target, a complete old copy and
    # the complete new one, both named after the dead writer.
    old = target.with_name(f".{target.name}.{socket.gethostname()}.{dead_pid}-abcd1234.old")
    new = target.with_name(f".{target.name}.{socket.gethostname()}.{dead_pid}-abcd1234.tmp")
    for folder, text in ((old, "earlier"), (new, "newer")):
        folder.mkdir()
        (folder / "model.json").write_text(text)
    with atomic_path(target) as tmp:  # the next write first puts the earlier copy back
        assert (target / "model.json").read_text() == "earlier"
        tmp.mkdir()
        (tmp / "model.json").write_text("next")
    assert (target / "model.json").read_text() == "next"
    # what a folder written before products were links leaves: now a link and its version
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(
        [target.name, current_version(target).name]
    )


def test_a_folder_where_a_file_goes_is_named_and_left_alone(tmp_path):
    from geocluster_dagster.errors import OutputNotWritable

    target = tmp_path / "2023-06-01.tif"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(
        OutputNotWritable, match=r"2023-06-01\.tif is a folder, where this output is a file"
    ):
        with atomic_path(target) as tmp:
            tmp.write_text("pixels")
    assert (target / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2023-06-01.tif"]  # no temporary left


def test_an_output_root_records_its_kind_of_date_window_and_refuses_another(tmp_path):
    from geocluster_dagster.errors import ConfigError
    from geocluster_dagster.storage import ROOT_RECORD, claim_output_root

    root = tmp_path / "out"
    claim_output_root(root, "month")  # a new root takes the deployment's kind
    assert json.loads((root / ROOT_RECORD).read_text()) == {"date_windows": "month"}
    claim_output_root(root, "month")  # the same kind again: fine
    with pytest.raises(
        ConfigError,
        match=r"keyed by month windows, but GEOCLUSTER_DATE_WINDOWS=quarter.*GEOCLUSTER_DATE_WINDOWS=month.*another output root",
    ):
        claim_output_root(root, "quarter")
    (root / ROOT_RECORD).write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be read"):
        claim_output_root(root, "month")


@pytest.mark.parametrize("depth", [1, 2], ids=["the folder of the AOI", "the asset's folder"])
def test_a_file_where_a_folder_belongs_is_named_as_such(tmp_path, depth):
    """A file at clusters/<aoi> (mkdir says 'File exists') or at clusters/ (it says 'Not a
    directory'): both were once told to free space or fix permissions."""
    target = tmp_path / "clusters" / "demo" / "2023-06-01"
    blocker = target.parents[depth - 1]
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    with pytest.raises(
        OutputNotWritable,
        match=f"{blocker} is a file where a folder of the output root belongs. Move or delete that file",
    ):
        with storage.atomic_path(target) as tmp:
            tmp.mkdir()
    assert blocker.read_text() == "not a folder"  # left as it was


@pytest.mark.parametrize(
    "url", ["s3://bucket/demo", "az://container/out", "gs://bucket", "https://host/out"]
)
def test_a_url_given_for_a_folder_is_refused_not_made_a_local_folder(url, tmp_path, monkeypatch):
    """s3://bucket/demo must never become the local folder s3:/bucket/demo."""
    from geocluster_dagster.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"outputs.base_dir=.* is a URL .*mount"):
        storage.expand_path(url, "outputs.base_dir")
    assert list(tmp_path.iterdir()) == []
    assert storage.expand_path("C:/data/out", "x").name == "out"  # a drive letter is a path


def test_the_command_refuses_an_object_store_output_in_one_line(tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "DAGSTER_"))}
    done = subprocess.run(
        [sys.executable, "-m", "geocluster_dagster", "--output", "s3://bucket/demo", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--output (env GEOCLUSTER_OUTPUT)='s3://bucket/demo'" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no s3: folder, no instance, nothing written
