"""Products on object storage (S3 and S3-compatible stores): each product uploaded as a new
version under a hidden prefix, then published by replacing one small pointer object.

An object store has neither the rename nor the symbolic link that atomic publication on a local
disk rests on (:func:`geocluster_dagster.storage.atomic_path`). So the product
``<parent>/<name>`` is stored as

* versions, ``<parent>/.<name>.versions/<version>/<name>`` (a file, or a folder of files), each
  uploaded in full before anything points at it;
* the pointer, the object ``<parent>/<name>`` itself: a small JSON document naming the current
  version. One PUT replaces it, so a reader sees the earlier version or the new one, never a
  mix of both, and an earlier good product is never replaced by a broken one.

A run killed while uploading leaves a version nothing points at: the product's next publication
removes it (:func:`publish` removes every version but the one it publishes). Two runs must not
publish one product at once; the partition's run holds the product's partition exclusively (the
run queue's per-partition limit, see docs/deployment.md).

Credentials come from the environment the SDKs read (``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance or pod role; ``AWS_ENDPOINT_URL`` for an
S3-compatible store), never from settings, metadata or logs.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import AssetReadError, ConfigError

#: URL schemes of the object stores products can be written to.
SCHEMES = ("s3",)
#: What a pointer object says it is: a document of another kind at a product's key is refused.
POINTER_FORMAT = "geocluster-pointer/1"


def is_object_url(text: str) -> bool:
    """True for a URL of an object store products can be written to (``s3://bucket/prefix``)."""
    return urlparse(str(text)).scheme in SCHEMES


@dataclass(frozen=True)
class Version:
    """A published version of a product: its id and where its bytes are."""

    id: str
    url: str
    """The version's file, or its folder (``<url>/<file>`` for each file of it)."""
    folder: bool


def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` (credentials from the environment) and the key in it.

    Listings are not cached: another process (a run, a Dask worker) may have published since."""
    import fsspec.core

    fs, key = fsspec.core.url_to_fs(url, use_listings_cache=False, skip_instance_cache=True)
    return fs, str(key).rstrip("/")


def _split(key: str) -> tuple[str, str]:
    parent, _, name = key.rpartition("/")
    if not parent or not name:
        raise ConfigError(f"{key!r} is not a product's key: it needs a bucket and a name.")
    return parent, name


def _versions_prefix(key: str) -> str:
    parent, name = _split(key)
    return f"{parent}/.{name}.versions"


def _url(url: str, key: str) -> str:
    return f"{urlparse(url).scheme}://{key}"


def publish(local: Path, url: str) -> Version:
    """Upload ``local`` (a file, or a folder of files) as a new version of the product at
    ``url`` and point the product at it; versions nothing points at any more (the one before,
    or a killed run's upload) are removed. Returns the version published."""
    fs, key = _filesystem(url)
    _, name = _split(key)
    version = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
    target = f"{_versions_prefix(key)}/{version}/{name}"
    folder = local.is_dir()
    if folder:
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            fs.put_file(str(path), f"{target}/{path.relative_to(local).as_posix()}")
    else:
        fs.put_file(str(local), target)
    pointer = {"format": POINTER_FORMAT, "version": version, "folder": folder}
    fs.pipe_file(key, json.dumps(pointer).encode())  # the one write that publishes
    _remove_versions(fs, key, keep=version)
    return Version(version, _url(url, target), folder)


def current(url: str) -> Version | None:
    """The version the product at ``url`` points at, or None when it was never published."""
    fs, key = _filesystem(url)
    try:
        data = fs.cat_file(key)
    except FileNotFoundError:
        return None
    try:
        pointer = json.loads(data)
        if pointer.get("format") != POINTER_FORMAT:
            raise ValueError(f"format {pointer.get('format')!r}")
        version, folder = str(pointer["version"]), bool(pointer["folder"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise AssetReadError(
            f"{url} is not a product pointer written by geocluster_dagster ({err}): another "
            "program wrote to the output root, or the object is damaged. Remove it and "
            "materialize the product again."
        ) from err
    _, name = _split(key)
    return Version(version, _url(url, f"{_versions_prefix(key)}/{version}/{name}"), folder)


def remove(url: str) -> bool:
    """Unpublish the product at ``url`` (its pointer first, then every version). True if it
    was published."""
    fs, key = _filesystem(url)
    published = fs.exists(key)
    if published:
        fs.rm_file(key)
    _remove_versions(fs, key, keep=None)
    return bool(published)


def versions(url: str) -> list[str]:
    """The ids of the versions stored for the product at ``url``, published or not, sorted."""
    fs, key = _filesystem(url)
    prefix = _versions_prefix(key)
    try:
        return sorted(Path(entry).name for entry in fs.ls(prefix, detail=False))
    except FileNotFoundError:
        return []


def _remove_versions(fs: Any, key: str, *, keep: str | None) -> None:
    prefix = _versions_prefix(key)
    try:
        entries = fs.ls(prefix, detail=False)
    except FileNotFoundError:
        return
    for entry in entries:
        if Path(entry).name != keep:
            fs.rm(entry, recursive=True)
