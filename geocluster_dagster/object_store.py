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
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
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


def _options() -> dict[str, Any]:
    """How fsspec opens the store. Listings are not cached: another process (a run, a Dask
    worker) may have published since. The endpoint the environment names is one of the options,
    so fsspec's cache of clients gives another endpoint its own client."""
    return {
        "use_listings_cache": False,
        "endpoint_url": os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        "client_kwargs": {"region_name": os.environ.get("AWS_REGION")},
        "config_kwargs": {"retries": {"mode": "standard"}},  # 503 SlowDown and resets, retried
    }


log = logging.getLogger(__name__)


class _RetriesLogged(logging.Handler):
    """The retries of a request to the store (503 SlowDown, throttling, a dropped connection,
    a timeout), which botocore's standard retry mode and s3fs log at DEBUG only, as warnings of
    this package's logger: the run's log shows them."""

    #: The messages that say a request is retried, by the logger that writes them.
    RETRIES = {
        "botocore.retries.standard": "Retry needed, retrying request after delay of",
        "s3fs": "Retryable error",
    }

    def emit(self, record: logging.LogRecord) -> None:
        if not str(record.msg).startswith(self.RETRIES.get(record.name, "\0")):
            return  # (only the retries: the template is compared, nothing is formatted)
        args = record.args if isinstance(record.args, tuple) else ()
        if record.name == "s3fs":
            why = str(args[0]) if args else record.getMessage()
        elif args and isinstance(args[0], float):
            why = f"after {args[0]:.2f} s: an error the store may recover from"
        else:
            why = record.getMessage()
        log.warning(
            "A request to the object store at %s failed and is retried (%s).", _endpoint(), why
        )


def _log_retries() -> None:
    for name in _RetriesLogged.RETRIES:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _RetriesLogged) for h in logger.handlers):
            logger.addHandler(_RetriesLogged())
            logger.setLevel(logging.DEBUG)
            logger.propagate = False  # their other DEBUG lines stay out of the logs


def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` (credentials from the environment) and the key in it."""
    import fsspec.core

    _log_retries()

    fs, key = fsspec.core.url_to_fs(url, **_options())
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
    """Upload ``local`` as the product at ``url``.

    A file is one object: one PUT (a multipart upload shows nothing until it completes)
    replaces it whole. A folder is uploaded as a new version and the product pointed at it;
    versions nothing points at any more (the one before, or a killed run's upload) are removed.
    Returns what was published."""
    fs, key = _filesystem(url)
    _, name = _split(key)
    if not local.is_dir():
        fs.put_file(str(local), key)
        return Version("", url, False)
    version = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
    target = f"{_versions_prefix(key)}/{version}/{name}"
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.put_file(str(path), f"{target}/{path.relative_to(local).as_posix()}")
    pointer = {"format": POINTER_FORMAT, "version": version, "folder": True}
    fs.pipe_file(key, json.dumps(pointer).encode())  # the one write that publishes
    _remove_versions(fs, key, keep=version)
    return Version(version, _url(url, target), True)


def current(url: str) -> Version | None:
    """The version the folder product at ``url`` points at, or None when it was never
    published."""
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
    """Unpublish the product at ``url`` (a file; or a folder's pointer first, then every
    version). True if it was published."""
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


def exists(url: str) -> bool:
    """Whether the product (or any object) at ``url`` is published."""
    fs, key = _filesystem(url)
    return bool(fs.exists(key))


def location(url: str, *, folder: bool) -> str | None:
    """Where the bytes of the product at ``url`` are: its current version for a folder, the
    object itself for a file; None when it was never published."""
    if folder:
        version = current(url)
        return version.url if version is not None else None
    return url if exists(url) else None


def as_path(url: str) -> Path:
    """``url`` with the pathlib interface (universal_pathlib over fsspec): ``/``,
    ``read_text``, ``exists``, ``open``, ``iterdir`` and ``str()`` as the URL, which rasterio
    and GDAL open (with :func:`gdal_options`). Typed as a Path: the products take either."""
    from upath import UPath

    _log_retries()
    located = UPath(url, **_options())
    return cast(Path, located)


def gdal_options() -> dict[str, str]:
    """GDAL's own configuration for the S3-compatible endpoint the SDKs find in
    ``AWS_ENDPOINT_URL`` (GDAL reads ``AWS_S3_ENDPOINT``, ``AWS_HTTPS`` and path-style
    addressing instead); empty for AWS itself."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return {}
    parsed = urlparse(endpoint)
    return {
        "AWS_S3_ENDPOINT": parsed.netloc or parsed.path,
        "AWS_HTTPS": "NO" if parsed.scheme == "http" else "YES",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }


#: What :func:`configure_gdal` set, so that a later call may update its own values (the
#: endpoint changed) but never one the user set.
_CONFIGURED: dict[str, str] = {}


def configure_gdal() -> None:
    """Give this process's GDAL the endpoint of :func:`gdal_options`, where the environment
    does not already say otherwise (GDAL reads its configuration from the environment)."""
    for name, value in gdal_options().items():
        if name not in os.environ or os.environ[name] == _CONFIGURED.get(name):
            os.environ[name] = _CONFIGURED[name] = value


def check_root(url: str, setting: str) -> None:
    """Refuse, before any work, an output root on a store this process cannot use: no
    credentials, a bucket that does not exist, an endpoint nothing answers at, access denied.
    One line, naming ``setting`` and what to set."""
    bucket = urlparse(url).netloc
    try:
        fs, key = _filesystem(url)
        try:
            fs.ls(key, detail=False)  # the root's own top level: a few asset folders
        except FileNotFoundError:
            if not fs.exists(bucket):  # else a new, empty root
                raise
    except FileNotFoundError:
        raise ConfigError(
            f"{setting}={url!r}: the bucket {bucket!r} does not exist at "
            f"{_endpoint()}: create it, or name an existing bucket."
        ) from None
    except PermissionError as err:
        raise ConfigError(
            f"{setting}={url!r}: the store refuses these credentials for bucket {bucket!r} "
            f"({err}): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the "
            "bucket's policy."
        ) from None
    except Exception as err:
        name = type(err).__name__
        if "Credentials" in name or "credentials" in str(err):
            raise ConfigError(
                f"{setting}={url!r}: no credentials for the store: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run with an instance or pod role)."
            ) from None
        if "Connect" in name or isinstance(err, OSError):
            raise ConfigError(
                f"{setting}={url!r}: nothing answers at {_endpoint()} ({name}): check "
                "AWS_ENDPOINT_URL (an S3-compatible store) or the network."
            ) from None
        raise


def _endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL") or "AWS S3 (AWS_ENDPOINT_URL is not set)"
