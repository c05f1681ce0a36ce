"""Products on object storage (S3 and S3-compatible stores, Azure Blob Storage): each product
uploaded as a new version under a hidden prefix, then published by replacing one small pointer
object.

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

Credentials come from the environment the SDKs read, never from settings, metadata or logs:
for ``s3://``, ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance or
pod role, and ``AWS_ENDPOINT_URL`` for an S3-compatible store; for ``az://<container>/<prefix>``,
``AZURE_STORAGE_CONNECTION_STRING`` (which also names an emulator's endpoint), or
``AZURE_STORAGE_ACCOUNT_NAME`` with ``AZURE_STORAGE_ACCOUNT_KEY`` or ``AZURE_STORAGE_SAS_TOKEN``,
or the account name alone with a managed or workload identity. GDAL, which reads the rasters,
names the account and key ``AZURE_STORAGE_ACCOUNT`` and ``AZURE_STORAGE_ACCESS_KEY``:
:func:`configure_gdal` gives it them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

from .errors import AssetReadError, ConfigError

#: URL schemes of the object stores products can be written to, and what the store is called.
STORES = {"s3": "S3", "az": "Azure Blob Storage"}
SCHEMES = tuple(STORES)
#: What a pointer object says it is: a document of another kind at a product's key is refused.
POINTER_FORMAT = "geocluster-pointer/1"


def is_object_url(text: str) -> bool:
    """True for a URL of an object store products can be written to (``s3://bucket/prefix``,
    ``az://container/prefix``)."""
    return urlparse(str(text)).scheme in SCHEMES


@dataclass(frozen=True)
class Version:
    """A published version of a product: its id and where its bytes are."""

    id: str
    url: str
    """The version's file, or its folder (``<url>/<file>`` for each file of it)."""
    folder: bool


#: The environment variables the Azure SDK (through adlfs) reads its account and credentials
#: from; GDAL's names for the same, where they differ.
AZURE_VARIABLES = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
)
_GDAL_AZURE_NAMES = {
    "AZURE_STORAGE_ACCOUNT_NAME": "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_ACCOUNT_KEY": "AZURE_STORAGE_ACCESS_KEY",
}


def _scheme(url: str) -> str:
    return urlparse(str(url)).scheme


def _options(url: str) -> dict[str, Any]:
    """How fsspec opens the store of ``url``. Listings are not cached: another process (a run,
    a Dask worker) may have published since. For S3, the endpoint the environment names is one
    of the options, so fsspec's cache of clients gives another endpoint its own client; Azure's
    account and keys are left to adlfs to read from the environment (a path object that travels
    to a Dask worker must not carry them), see :func:`_forget_stale_azure_clients`."""
    if _scheme(url) == "az":
        _forget_stale_azure_clients()
        return {"use_listings_cache": False}
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
            "A request to the object store at %s failed and is retried (%s).",
            _endpoint("s3://"),
            why,
        )


_azure_fingerprint: str | None = None


def _forget_stale_azure_clients() -> None:
    """Drop fsspec's cached Azure clients when the account or credentials in the environment
    changed since they were made (a digest is compared, the values are kept nowhere)."""
    global _azure_fingerprint
    digest = hashlib.sha256(
        "\0".join(os.environ.get(name, "") for name in AZURE_VARIABLES).encode()
    ).hexdigest()
    if digest != _azure_fingerprint:
        from adlfs import AzureBlobFileSystem

        AzureBlobFileSystem.clear_instance_cache()
        _azure_fingerprint = digest


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

    fs, key = fsspec.core.url_to_fs(url, **_options(url))
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
    located = UPath(url, **_options(url))
    return cast(Path, located)


def gdal_options(scheme: str = "s3") -> dict[str, str]:
    """GDAL's own configuration for the store of ``scheme``, where GDAL reads other variables
    than the SDKs. S3: the S3-compatible endpoint the SDKs find in ``AWS_ENDPOINT_URL`` (GDAL
    reads ``AWS_S3_ENDPOINT``, ``AWS_HTTPS`` and path-style addressing instead; nothing for AWS
    itself). Azure: the account and key under GDAL's names (a connection string has the same
    name for both)."""
    if scheme == "az":
        return {
            gdal_name: os.environ[name]
            for name, gdal_name in _GDAL_AZURE_NAMES.items()
            if os.environ.get(name)
        }
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
    """Give this process's GDAL the stores' settings of :func:`gdal_options`, where the
    environment does not already say otherwise (GDAL reads its configuration from the
    environment)."""
    for scheme in SCHEMES:
        for name, value in gdal_options(scheme).items():
            if name not in os.environ or os.environ[name] == _CONFIGURED.get(name):
                os.environ[name] = _CONFIGURED[name] = value


#: What each store calls the top level of a URL, and what a user sets to give it credentials.
_CONTAINER = {"s3": "bucket", "az": "container"}
_CREDENTIALS = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run with an "
    "instance or pod role)",
    "az": "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with "
    "AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN (or the account name alone with a "
    "managed identity)",
}
_ENDPOINT_SETTING = {
    "s3": "AWS_ENDPOINT_URL (an S3-compatible store)",
    "az": "the BlobEndpoint of AZURE_STORAGE_CONNECTION_STRING (an emulator)",
}


def check_root(url: str, setting: str) -> None:
    """Refuse, before any work, an output root on a store this process cannot use: no
    credentials, a bucket or container that does not exist, an endpoint nothing answers at,
    access denied. One line, naming ``setting`` and what to set."""
    scheme = _scheme(url)
    container = urlparse(url).netloc
    what = f"{_CONTAINER[scheme]} {container!r}"
    unreachable = ConfigError(
        f"{setting}={url!r}: nothing answers at {_endpoint(url)}: check "
        f"{_ENDPOINT_SETTING[scheme]} or the network."
    )
    if not _answers(_endpoint(url)):
        raise unreachable  # before an SDK spends a minute retrying the connection
    try:
        fs, key = _filesystem(url)
        try:
            fs.ls(key, detail=False)  # the root's own top level: a few asset folders
        except FileNotFoundError:
            if not fs.exists(container):  # else a new, empty root
                raise
    except FileNotFoundError:
        raise ConfigError(
            f"{setting}={url!r}: the {what} does not exist at {_endpoint(url)}: create it, "
            f"or name an existing {_CONTAINER[scheme]}."
        ) from None
    except Exception as err:
        name, status = type(err).__name__, getattr(err, "status_code", None)
        if isinstance(err, PermissionError) or status in (401, 403):
            first = str(err).strip().splitlines()[0] if str(err).strip() else name
            raise ConfigError(
                f"{setting}={url!r}: the store refuses these credentials for the {what} "
                f"({first}): {_CREDENTIALS[scheme]}, and check the {_CONTAINER[scheme]}'s "
                "access policy."
            ) from None
        if (
            "Credential" in name
            or "credentials" in str(err)
            or "Must provide either a connection_string" in str(err)
        ):
            raise ConfigError(
                f"{setting}={url!r}: no credentials for {STORES[scheme]}: {_CREDENTIALS[scheme]}."
            ) from None
        if "Connect" in name or "ServiceRequest" in name or isinstance(err, OSError):
            raise unreachable from None
        raise


def _endpoint(url: str) -> str:
    """The address the store of ``url`` is reached at, for messages (never a credential)."""
    if _scheme(url) == "az":
        settings = dict(
            part.split("=", 1)
            for part in os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "").split(";")
            if "=" in part
        )
        if settings.get("BlobEndpoint"):
            return settings["BlobEndpoint"].rstrip("/")
        account = settings.get("AccountName") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
        suffix = settings.get("EndpointSuffix", "core.windows.net")
        return f"https://{account}.blob.{suffix}" if account else "Azure (no account is set)"
    return (
        os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or "AWS S3 (AWS_ENDPOINT_URL is not set)"
    )


def _answers(endpoint: str, timeout: float = 5.0) -> bool:
    """Whether anything accepts a connection at ``endpoint`` (an http(s) URL); True when the
    address is not a URL (the SDK then finds its own) or a proxy stands between."""
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return True
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY")):
        return True
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False
