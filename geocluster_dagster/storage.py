"""Writing outputs atomically: the one way this package puts a file or folder in place.

Every output is written to a temporary path beside its target and renamed into place only when
complete, so a failure (bad data, full disk, killed run) never replaces a good earlier output
with a broken one. Temporaries name their host and process, so the next write of the same
output removes those of killed runs. On object storage (an ``s3://`` output root) the
temporary path is on this machine's scratch disk, and the output is published by
:func:`geocluster_dagster.object_store.publish` when complete.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

from . import object_store
from .errors import ConfigError, GeoclusterError, OutputNotWritable, PartitionBusy


def is_remote(path: Path | str) -> bool:
    """Whether ``path`` is on object storage (an ``s3://`` or ``az://`` URL, or a path object of
    one)."""
    return object_store.is_object_url(str(path))


@contextlib.contextmanager
def atomic_path(
    target: Path | str, *, keep_existing: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """A temporary path beside ``target`` that replaces it only if the block succeeds.

    The block makes the temporary path a file or a folder. ``keep_existing(target)`` is asked
    when the block is done: True keeps what is at ``target`` (e.g. an equal copy another
    process finished meanwhile) and discards the new one.
    """
    if is_remote(target):
        with _uploaded(str(target)) as tmp:
            yield tmp
        return
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _not_writable(target, err, full=disk_full(target)) from err
    remove_stale_temporaries(target)
    tmp = target.with_name(f".{target.name}.{_owner()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if keep_existing is not None and target.exists() and keep_existing(target):
            remove_quietly(tmp)
        else:
            _replace(tmp, target)
    except OSError as err:
        # Judge the disk before the temporary file is removed and frees its space.
        storage_problem = _is_storage_problem(err, target)
        full = storage_problem and disk_full(target)
        remove_quietly(tmp)
        if storage_problem:
            raise _not_writable(target, err, full=full) from err
        raise
    except GeoclusterError:
        remove_quietly(tmp)
        raise
    except Exception as err:
        # GDAL's own write errors (rasterio's CPLE_*: "TIFFAppendToStrip:Seek error") are not
        # OSErrors and carry no errno: a disk with no block left is what they mean.
        full = disk_full(target)
        remove_quietly(tmp)
        if full:
            raise _not_writable(target, OSError(errno.ENOSPC, str(err)), full=True) from err
        raise
    except BaseException:
        remove_quietly(tmp)
        raise


def scratch_dir() -> Path:
    """Where products bound for object storage are written first: env GEOCLUSTER_SCRATCH,
    else the system's temporary folder."""
    return Path(os.environ.get("GEOCLUSTER_SCRATCH") or tempfile.gettempdir())


#: The scratch folders of uploads: ``geocluster-upload-<host>.<pid>-<random>``.
_SCRATCH_PREFIX = "geocluster-upload-"


@contextlib.contextmanager
def _uploaded(url: str) -> Iterator[Path]:
    """A temporary path on this machine (env GEOCLUSTER_SCRATCH, else the system's temporary
    folder) that is published at ``url`` only if the block succeeds, and removed either way.
    Scratch folders of killed runs of this host are removed first (a killed run cannot clean
    up, and a whole scene's products would fill the scratch disk)."""
    base = scratch_dir()
    host = socket.gethostname()
    for stale in base.glob(f"{_SCRATCH_PREFIX}{host}.*-*"):
        pid = stale.name.removeprefix(f"{_SCRATCH_PREFIX}{host}.").split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{_owner()}-", dir=base))
    try:
        tmp = scratch / url.rstrip("/").rsplit("/", 1)[-1]
        yield tmp
        object_store.publish(tmp, url)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_STORAGE_ERRNOS = (
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
)


def _is_storage_problem(err: OSError, target: Path) -> bool:
    # GDAL reports write failures as RasterioIOError without an errno: look at the disk too.
    if err.errno in _STORAGE_ERRNOS or "No space left" in str(err) or "Read-only" in str(err):
        return True
    return disk_full(target)


#: Less free than this after a failed write means the disk is full: the write that failed was
#: a block or a tile (GDAL writes up to a few hundred kB at once), not the last byte.
FULL_BELOW_BYTES = 2 * 1024 * 1024


def disk_full(target: Path) -> bool:
    if is_remote(target):  # written on this machine's scratch disk first
        target = scratch_dir() / "x"
    try:
        stats = os.statvfs(target.parent)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < FULL_BELOW_BYTES


def _owner() -> str:
    """Who writes a temporary file: host and process, so a later run can tell if it was killed."""
    return f"{socket.gethostname()}.{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete temporary siblings of ``target`` left by killed runs of this host.

    A run killed mid-write (SIGKILL, OOM killer, lost node) cannot clean up after itself; its
    temporaries name their host and process, so the next write of the same output removes those
    whose process is gone. Temporaries of live processes or other hosts are left alone.
    """
    recover_interrupted(target)
    removed = []
    live = current_version(target)
    for sibling in _dead_siblings(target):
        if live is not None and sibling == live:
            continue  # the version the product's link points to, written by a finished run
        remove_quietly(sibling)
        removed.append(sibling)
    return removed


def _dead_siblings(target: Path) -> list[Path]:
    """Temporaries of ``target`` whose writing process (on this host) is gone."""
    prefix = f".{target.name}.{socket.gethostname()}."
    dead = []
    for sibling in sorted(target.parent.glob(f".{glob.escape(target.name)}.*")):
        rest = sibling.name[len(prefix) :] if sibling.name.startswith(prefix) else ""
        pid = rest.split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            dead.append(sibling)
    return dead


def recover_interrupted(target: Path) -> Path | None:
    """Put back the earlier copy of a folder whose replacement was killed between its two
    renames (old aside, new in): ``target`` is then missing and its ``.old`` copy complete.
    Returns the copy put back, if any."""
    if target.exists():
        return None
    for sibling in _dead_siblings(target):
        if sibling.name.endswith(".old") and sibling.is_dir():
            os.replace(sibling, target)
            return sibling
    return None


def _replace(tmp: Path, target: Path) -> None:
    if not tmp.is_dir():
        if target.is_dir() and not target.is_symlink():
            raise OutputNotWritable(
                f"{target} is a folder, where this output is a file: move or delete the folder "
                "(nothing in it was touched), then run again."
            )
        os.replace(tmp, target)
        return
    # Two folders cannot be swapped in one rename, but two links can: a folder product is a
    # link to a hidden version folder beside it, and replacing it renames a new link over the
    # old one. A kill at any moment leaves the earlier version or the new one, never neither.
    version = target.with_name(f".{target.name}.{_owner()}-{uuid.uuid4().hex[:8]}.v")
    os.replace(tmp, version)
    link = target.with_name(f".{target.name}.{_owner()}-{uuid.uuid4().hex[:8]}.link")
    os.symlink(version.name, link)
    previous = current_version(target)
    try:
        if target.exists() and not target.is_symlink():
            # A folder written before products were links: it moves aside once (the last
            # two-rename swap it will need), then the link takes its place.
            old = target.with_name(f".{target.name}.{_owner()}-{uuid.uuid4().hex[:8]}.old")
            os.replace(target, old)
            try:
                os.replace(link, target)
            except OSError:
                os.replace(old, target)
                raise
            remove_quietly(old)
        else:
            os.replace(link, target)
    except OSError:
        remove_quietly(link)
        remove_quietly(version)
        raise
    if previous is not None:
        remove_quietly(previous)


def current_version(target: Path) -> Path | None:
    """The version folder a folder product's link points to (None: not a link)."""
    if not target.is_symlink():
        return None
    return target.parent / os.readlink(target)


def link_or_copy(source: Path, target: Path) -> None:
    """Put the file ``source`` (a product) at ``target``, a new path on this machine, without
    decoding it: a hard link when both are on one filesystem (no byte is copied, and since
    products are replaced by a rename, never rewritten in place, the link keeps these bytes
    when ``source`` is remade), else a byte copy (another filesystem, object storage)."""
    if not is_remote(source):
        try:
            os.link(source, target)
            return
        except OSError:  # another filesystem, or one without hard links
            pass
    with source.open("rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, 16 << 20)


def reference_from(folder: Path, target: Path | str) -> str:
    """How a product written at ``folder`` names another file it was made of: relative to
    ``folder`` when both are on a disk (the output root can then be moved or sent whole),
    the URL itself on object storage, "" for no file."""
    if not str(target):
        return ""
    if is_remote(target) or is_remote(folder):
        return str(target)
    return Path(os.path.relpath(Path(target).absolute(), Path(folder).absolute())).as_posix()


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file (hex), read a megabyte at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def retire(folder: Path) -> None:
    """Remove a folder product an earlier run left that must no longer be published (a
    change of maps since remade, an assessment of reference data no longer registered): on a
    disk, renamed first so that no reader meets it half removed."""
    if is_remote(folder):
        remove_quietly(folder)
    elif folder.exists():
        retired = folder.with_name(f".{folder.name}.retired")
        folder.rename(retired)
        remove_quietly(retired)


def remove_quietly(path: Path) -> None:
    """Best-effort cleanup: it must never mask the error that made cleanup necessary. A folder
    product's link goes with the version folder it points to."""
    if is_remote(path):
        with contextlib.suppress(Exception):  # best effort, whatever the store answers
            object_store.remove(str(path))
        return
    if path.is_symlink():
        version = current_version(path)
        with contextlib.suppress(OSError):
            path.unlink()
        if version is not None and version.parent == path.parent:
            shutil.rmtree(version, ignore_errors=True)
        return
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):  # e.g. EROFS for a file that was never created
            path.unlink()


def _file_in_the_way(target: Path) -> Path | None:
    """The first of ``target``'s parents that exists and is not a folder, if any."""
    for parent in reversed(target.parents):
        if not parent.exists():
            return None
        if not parent.is_dir():
            return parent
    return None


def _not_writable(target: Path, err: OSError, *, full: bool = False) -> OutputNotWritable:
    blocker = _file_in_the_way(target) if err.errno in (errno.EEXIST, errno.ENOTDIR) else None
    if blocker is not None:
        return OutputNotWritable(
            f"Cannot write {target}: {blocker} is a file where a folder of the output root "
            f"belongs. Move or delete that file, or point the output root (env "
            "GEOCLUSTER_OUTPUT, or `base_dir` of the `outputs` resource) elsewhere. Earlier "
            "outputs were left untouched."
        )
    full = full or err.errno == errno.ENOSPC or "No space left" in str(err)
    reason = {
        errno.EDQUOT: "the disk quota is exceeded",
        errno.ENOTDIR: "a parent of it is a file",
    }.get(err.errno or 0, "the disk is full" if full else "it is not writable")
    return OutputNotWritable(
        f"Cannot write {target}: {reason} ({err.strerror or err}). Free space or fix permissions "
        "there, or point the output root (env GEOCLUSTER_OUTPUT, or `base_dir` of the `outputs` "
        "resource) at a writable location. Earlier outputs were left untouched."
    )


def write_json(obj: object, target: Path | str) -> Path:
    return write_text_atomically(
        location(target), json.dumps(obj, indent=2, sort_keys=True, default=str)
    )


def write_text_atomically(target: Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return target


#: A URL's scheme (``s3:``, ``az:``, ``gs:``, ``https:``), which a path setting must not take for a
#: folder: ``s3://bucket/out`` would become a local folder ``s3:/bucket/out``. Two letters at
#: least, so that a Windows drive (``C:/``) is still a path.
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:(?=/)")


def output_location(text: str, setting: str) -> Path:
    """The output root a user gave: an object store URL (``s3://bucket/prefix``,
    ``az://container/prefix``), or a folder (:func:`expand_path`)."""
    if not is_remote(text):
        return expand_path(text, setting)
    scheme, rest = text.split("://", 1)
    if not rest.split("/", 1)[0]:
        top = "container" if scheme == "az" else "bucket"
        raise ConfigError(f"{setting}={text!r} names no {top}: write {scheme}://<{top}>/<prefix>.")
    object_store.configure_gdal()  # rasterio reads the products back through GDAL
    return object_store.as_path(text.rstrip("/"))


def location(path: str | os.PathLike[str]) -> Path:
    """``path`` as a path object: a local Path, or an object store's (:func:`object_store.as_path`).
    ``str()`` of either is what rasterio and GDAL open."""
    if is_remote(str(path)):
        return object_store.as_path(str(path)) if isinstance(path, str) else cast(Path, path)
    return Path(path)


def check_writable(root: Path | str, setting: str) -> None:
    """Refuse, before any work, an output root on an object store this process cannot use
    (:func:`geocluster_dagster.object_store.check_root`); a folder is judged when written."""
    if is_remote(root):
        object_store.check_root(str(root), setting)


def published(folder: Path) -> Path:
    """Where a folder product just written at ``folder`` can be read: ``folder`` itself on a
    disk (a link to its version), its current version on object storage."""
    if not is_remote(folder):
        return folder
    located = object_store.location(str(folder), folder=True)
    if located is None:
        raise OutputNotWritable(f"{folder} was written but cannot be found in the store.")
    return object_store.as_path(located)


def local_state(root: Path) -> Path:
    """Where this machine keeps what belongs to it rather than to the products of ``root``
    (locks, the CLI's Dagster instance, the demo's input catalog): under ``root`` on a disk;
    for an object store, env GEOCLUSTER_STATE, else ``~/.cache/geocluster/<bucket and prefix>``."""
    if not is_remote(root):
        return root
    base = os.environ.get("GEOCLUSTER_STATE") or os.path.join(
        os.path.expanduser("~"), ".cache", "geocluster"
    )
    return Path(base) / re.sub(r"[^A-Za-z0-9._-]+", "_", str(root).split("://", 1)[1])


def expand_path(text: str, setting: str) -> Path:
    """A path a user wrote, with ``~`` and ``$VARS`` expanded as a shell would, made absolute.

    Refused when a variable is not set: ``$DATA/out`` must not become a folder named ``$DATA``.
    ``setting`` names where the path came from, for the message.
    """
    scheme = _URL_SCHEME.match(text)
    if scheme:
        raise ConfigError(
            f"{setting}={text!r} is a URL ({scheme.group(0)}//), and this setting takes a folder "
            "or file on this machine. Give a local path (or mount the store and give its mount "
            "point); only the output root can be an object store: s3:// (S3 and S3-compatible "
            "stores) or az:// (Azure Blob Storage)."
        )
    expanded = os.path.expanduser(os.path.expandvars(text))
    if "$" in expanded:
        raise ConfigError(
            f"{setting}={text!r} names an environment variable that is not set "
            f"(left: {expanded!r}): set it, or write the path out in full."
        )
    # Absolute, but not resolved: a folder product is a link to its current version, and a path
    # resolved through it would name a version the next write removes.
    return Path(os.path.abspath(expanded))


@contextlib.contextmanager
def exclusive_lock(
    path: Path,
    *,
    what: str,
    holder: str,
    timeout_s: float,
    on_wait: Callable[[str], None],
    poll_s: float = 0.5,
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block, waiting up to ``timeout_s`` for it.

    ``flock`` locks belong to the open file and the kernel drops them when the process dies,
    so a killed run never leaves a partition locked. The file says who holds it, for the
    message of whoever waits (``what`` names the thing locked, ``holder`` this process).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+", encoding="utf-8")
    except OSError as err:
        raise _not_writable(path, err, full=disk_full(path)) from err
    with handle:
        deadline = time.monotonic() + timeout_s
        announced = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                other = handle.read().strip() or "another process"
                if time.monotonic() >= deadline:
                    raise PartitionBusy(
                        f"{what} is still being written by {other} after {timeout_s:.0f} s: "
                        "wait for that run to finish (or cancel it in the UI's Runs page), or "
                        "raise `lock_timeout_s` of the `outputs` resource."
                    ) from None
                if not announced:
                    on_wait(f"{what} is being written by {other}: waiting for it to finish.")
                    announced = True
                time.sleep(poll_s)
        handle.seek(0)
        handle.truncate()
        since = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        handle.write(f"{holder} (pid {os.getpid()} on {socket.gethostname()}, since {since})")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)


#: The file at an output root that records which kind of date window its products are keyed by.
ROOT_RECORD = "geocluster_root.json"


def claim_output_root(root: Path, date_windows: str) -> None:
    """Record that the products under ``root`` are keyed by ``date_windows`` windows, or refuse
    a run with another kind: a month and its first half-month share the key 2023-06-01, so the
    run would overwrite the products of one window with another's, with nothing to tell them
    apart. A root without the record (new, or written by an earlier version) takes this kind."""
    record = root / ROOT_RECORD
    try:
        recorded = json.loads(record.read_text()).get("date_windows")
    except FileNotFoundError:
        recorded = None
    except (OSError, ValueError, AttributeError) as err:
        raise ConfigError(
            f"{record} cannot be read ({err}): it records which date windows the products under "
            f"{root} are keyed by. Restore it, or delete it if every product there is of "
            f"GEOCLUSTER_DATE_WINDOWS={date_windows}."
        ) from err
    if recorded is None:
        root.mkdir(parents=True, exist_ok=True)
        write_json({"date_windows": date_windows}, record)
        return
    if recorded != date_windows:
        raise ConfigError(
            f"The output root {root} holds products keyed by {recorded} windows, but "
            f"GEOCLUSTER_DATE_WINDOWS={date_windows}: their keys share paths (2023-06-01 is a "
            f"month, a half-month, a quarter and a year), so this run would overwrite them with "
            f"another window's products. Set GEOCLUSTER_DATE_WINDOWS={recorded} where the code "
            f"location runs, or give {date_windows} windows another output root (--output, env "
            "GEOCLUSTER_OUTPUT)."
        )
