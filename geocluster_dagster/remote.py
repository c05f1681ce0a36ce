"""Reading rasters over HTTP(S) that survives flaky servers and expiring signed URLs.

Two layers of bounded retries, both logged to the ``geocluster_dagster.remote`` logger:

1. GDAL retries each HTTP request itself (``GDAL_HTTP_MAX_RETRY``, ``GDAL_HTTP_RETRY_DELAY``,
   which GDAL roughly doubles per retry, ``GDAL_HTTP_RETRY_CODES``) on those status codes and on
   timeouts and connection resets. It does not honour ``Retry-After``. Its "Retrying again"
   warnings arrive through rasterio's logger and are forwarded here.
2. :class:`RemoteReader` retries a whole read (open + read) for what GDAL does not: a truncated
   body (GDAL accepts the short answer and libtiff then fails, at times only in GDAL's log:
   :class:`SwallowedGdalError` turns those into failures), errors that outlast GDAL's
   retries, and a 403 from an expired SAS token. A signed read that fails gets a freshly signed
   URL (a refused block read surfaces only as "Read failed": the 403 stays in GDAL's debug
   output). GDAL caches failures and short bodies per URL for the life of the process, so every
   later attempt runs with ``CPL_VSIL_CURL_NON_CACHED``, which makes GDAL fetch again and drop
   what it cached. A 404 (and other statuses that will not change) fails at once.

Signing happens at read time, so a token is never older than the read that uses it, however
long the run. :class:`RetryingRioDriver` plugs this into odc-stac's dask tasks (``driver=``);
it pickles, so it works on threads, on a distributed LocalCluster and on separate processes.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np
import rasterio
import rasterio.errors
from odc.geo.geobox import GeoBox
from odc.loader import RasterLoadParams, RasterSource, RioDriver, RioReader
from odc.loader.types import ReaderSubsetSelection

from . import object_store
from .errors import AssetReadError, ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP status codes that will not change on a retry: fail at once.
PERMANENT_STATUSES = frozenset({400, 401, 404, 405, 410, 416})
#: GDAL's own default list; 403 is left out on purpose, a retry needs a new signature first.
DEFAULT_RETRY_CODES = (429, 500, 502, 503, 504)
#: GDAL_HTTP_RETRY_CODES exists from GDAL 3.10 on.
_GDAL_HAS_RETRY_CODES = tuple(int(p) for p in rasterio.__gdal_version__.split(".")[:2]) >= (3, 10)
_MAX_BACKOFF_S = 30.0
_VSI_PREFIXES = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/"}
#: Buckets whose objects are always requester-pays (USGS's Landsat Collection 2 archive).
REQUESTER_PAYS_BUCKETS = frozenset({"usgs-landsat"})
_STATUS = re.compile(r"(?:HTTP (?:response|error) code: |response_code=)(\d{3})")
_URL_QUERY = re.compile(r"(https?://[^\s'\"?]+)\?[^\s'\"]*")
#: The last HTTP error status GDAL logged in this thread (reset before each attempt).
_last_status = threading.local()
_install_lock = threading.Lock()


@dataclass(frozen=True)
class RemoteReadSettings:
    """Bounded retries and timeouts of pixel reads over HTTP(S)."""

    max_retries: int = 5
    """GDAL_HTTP_MAX_RETRY: retries of one HTTP request on ``retry_codes``, timeouts, resets."""
    retry_delay_s: float = 1.0
    """GDAL_HTTP_RETRY_DELAY, doubled by GDAL per retry; also the base of our own backoff."""
    timeout_s: float = 60.0
    """GDAL_HTTP_TIMEOUT: seconds one HTTP request may take before it is retried."""
    retry_codes: tuple[int, ...] = DEFAULT_RETRY_CODES
    """GDAL_HTTP_RETRY_CODES (GDAL >= 3.10): statuses GDAL retries by itself."""
    attempts: int = 3
    """Whole-read attempts per asset (fresh signature, GDAL cache bypassed) before failing."""
    requester_pays: bool = False
    """Read ``s3://`` hrefs of requester-pays buckets, paying for the transfer with the
    credentials of the environment. USGS's ``s3://usgs-landsat`` always is one."""

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.attempts < 1:
            raise ConfigError(
                f"read retries: max_retries must be >= 0 and attempts >= 1, got "
                f"{self.max_retries} and {self.attempts}."
            )
        if self.retry_delay_s < 0 or self.timeout_s <= 0:
            raise ConfigError(
                f"read retries: retry_delay_s must be >= 0 and timeout_s > 0, got "
                f"{self.retry_delay_s} and {self.timeout_s}."
            )

    def gdal_options(self) -> dict[str, str]:
        options = {
            "GDAL_HTTP_MAX_RETRY": str(self.max_retries),
            "GDAL_HTTP_RETRY_DELAY": f"{self.retry_delay_s:g}",
            "GDAL_HTTP_TIMEOUT": f"{self.timeout_s:g}",
            # Assets are single files: no directory listing of the bucket on open.
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        }
        if _GDAL_HAS_RETRY_CODES and self.retry_codes:
            options["GDAL_HTTP_RETRY_CODES"] = ",".join(str(c) for c in self.retry_codes)
        return options

    def describe(self) -> str:
        codes = ", ".join(str(c) for c in self.retry_codes)
        return (
            f"each HTTP request retried up to {self.max_retries} times by GDAL on status "
            f"{codes}, timeouts and resets, {self.timeout_s:g} s timeout"
        )


class PlanetaryComputerSigner:
    """Signs Azure Blob hrefs with the planetary-computer SDK's cached SAS tokens, at read time.

    The SDK renews a cached token only when it has less than 60 s left by its own clock, so a
    token the storage already refuses (clock skew, revocation) would be handed out again;
    :meth:`renew` drops it from the SDK's cache (``planetary_computer.sas.TOKEN_CACHE``; the
    SDK has no call to force a renewal). Settings such as ``PC_SDK_SAS_URL`` and
    ``PC_SDK_SUBSCRIPTION_KEY`` are the SDK's own.
    """

    def __call__(self, href: str) -> str:
        import planetary_computer  # lazily: only Planetary Computer reads need it

        signed: str = planetary_computer.sign(href)
        return signed

    def renew(self, rejected_url: str) -> None:
        """Forget the cached token carried by ``rejected_url``: the next call fetches a new one."""
        from planetary_computer import sas
        from planetary_computer.settings import Settings
        from planetary_computer.utils import parse_blob_url

        parsed = urlparse(rejected_url)
        if not parsed.query or not parsed.netloc.endswith(sas.BLOB_STORAGE_DOMAIN):
            return
        account, container = parse_blob_url(parsed)
        key = f"{Settings.get().sas_url}/{account}/{container}"
        cached = sas.TOKEN_CACHE.get(key)
        # Only the rejected token: another thread may already have stored a fresh one.
        if cached is not None and cached.token in parsed.query:
            sas.TOKEN_CACHE.pop(key, None)


class SwallowedGdalError(Exception):
    """GDAL reported a failed read of bytes in a call that still returned.

    GDAL accepts a body shorter than its Content-Length (a connection dropped mid-answer) and
    caches it; libtiff then reads a header without its GeoKeys ("IO error during reading of
    GeoKeyDirectory; tag ignored": a raster without a CRS) or without its strip offsets (a
    CE_Failure inside a read that returns zeros). rasterio raises for neither: it logs
    warnings, and CE_Failures at INFO, since some GDAL calls fail inside and still succeed.
    """

    def __init__(self, messages: list[str]) -> None:
        more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
        super().__init__(f"GDAL failed inside the read: {messages[0]}{more}")
        self.messages = messages


#: rasterio's wording for a CE_Failure it did not raise, and libtiff's for a short read.
_SWALLOWED = ("GDAL signalled an error", "IO error during reading")
_failures_here = threading.local()


class _NoteGdalFailures(logging.Filter):
    """On rasterio's GDAL loggers: notes each swallowed failure in the thread GDAL signalled it
    from (the record is made there, holding the GIL), and lets through only what the logger's
    own level did before it was lowered to INFO to see the CE_Failures."""

    def __init__(self, passes_from: int) -> None:
        super().__init__()
        self.passes_from = passes_from

    def filter(self, record: logging.LogRecord) -> bool:
        noted = getattr(_failures_here, "messages", None)
        if noted is not None:
            message = record.getMessage()
            if any(text in message for text in _SWALLOWED):
                noted.append(redact(message))
        return record.levelno >= self.passes_from


@contextmanager
def _gdal_failures() -> Iterator[list[str]]:
    """The swallowed GDAL failures this thread signals inside the block, as they come (the
    loggers' filter is installed by :func:`forward_gdal_retry_logs`)."""
    outer = getattr(_failures_here, "messages", None)
    noted: list[str] = []
    _failures_here.messages = noted
    try:
        yield noted
    finally:
        _failures_here.messages = outer


class RemoteReader:
    """Runs a read of one href with signing at read time and bounded, logged retries."""

    def __init__(
        self,
        settings: RemoteReadSettings = RemoteReadSettings(),
        signer: Callable[[str], str] | None = None,
    ) -> None:
        self.settings = settings
        self.signer = signer

    def read(self, href: str, action: Callable[[str], T]) -> T:
        """``action(url)`` with ``url`` the (signed) href; AssetReadError once attempts run out."""
        forward_gdal_retry_logs()
        attempts = self.settings.attempts if _is_remote(href) else 1
        started = time.monotonic()
        failures: list[str] = []
        status: int | None = None
        for attempt in range(1, attempts + 1):
            url = self.signer(href) if self.signer else href
            _last_status.value = None
            try:
                with (
                    rasterio.Env(**self._options(url, fresh=attempt > 1)),
                    _gdal_failures() as swallowed,
                ):
                    try:
                        result = action(url)
                    except Exception as err:
                        if swallowed and not isinstance(err, rasterio.errors.RasterioError):
                            # e.g. odc-geo's assertion on a header GDAL read without its CRS
                            raise SwallowedGdalError(swallowed) from err
                        raise
                if swallowed:
                    raise SwallowedGdalError(swallowed)
                return result
            except (rasterio.errors.RasterioError, SwallowedGdalError) as err:
                status = _http_status(err) or _last_status.value
                failures.append(_describe(err, status))
                can_renew = hasattr(self.signer, "renew")
                if attempt == attempts or status in PERMANENT_STATUSES:
                    break
                if status == 403 and not can_renew:
                    break
                # A block read refused with 403 surfaces only as "Read failed": GDAL keeps the
                # status to its debug output. So an unexplained failure renews the token too.
                renew = can_renew and status in (403, None)
                if renew:
                    self.signer.renew(url)  # type: ignore[union-attr]
                # A refused token is replaced at once; anything else may need the server to recover.
                delay = (
                    0.0
                    if status == 403
                    else min(self.settings.retry_delay_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
                )
                log.warning(
                    "Read of %s failed (%s); attempt %d of %d in %.1f s%s, bypassing GDAL's "
                    "cache of it.",
                    redact(href),
                    _short(failures[-1]),
                    attempt + 1,
                    attempts,
                    delay,
                    " with a freshly signed URL" if renew else "",
                )
                time.sleep(delay)
        raise AssetReadError(self._failure_message(href, failures, status, started))

    def _options(self, url: str, *, fresh: bool) -> dict[str, str]:
        options = self.settings.gdal_options()
        parsed = urlparse(url)
        if parsed.scheme == "s3":
            # The endpoint of an S3-compatible store (AWS_ENDPOINT_URL), as GDAL names it.
            options.update(object_store.gdal_options("s3"))
            # A bucket lists a scene's folder in one request, which gives GDAL every file's
            # size: then a store that answers a ranged GET with 200 instead of 206 (rclone's)
            # is read right too.
            options.pop("GDAL_DISABLE_READDIR_ON_OPEN", None)
            if self.settings.requester_pays or parsed.netloc in REQUESTER_PAYS_BUCKETS:
                options["AWS_REQUEST_PAYER"] = "requester"
        prefix = _VSI_PREFIXES.get(parsed.scheme)
        if fresh and prefix:
            # GDAL splits this list on ':' so an http URL covers every /vsicurl/http file of
            # this thread while the attempt runs; that only costs re-downloads.
            options["CPL_VSIL_CURL_NON_CACHED"] = prefix + url
        return options

    def _failure_message(
        self, href: str, failures: list[str], status: int | None, started: float
    ) -> str:
        tried = "; ".join(f"attempt {i}: {_short(f)}" for i, f in enumerate(failures, 1))
        return (
            f"Cannot read {redact(href)}: tried {len(failures)} time(s) in "
            f"{time.monotonic() - started:.1f} s ({self.settings.describe()}): {tried}. "
            f"{self._hint(href, status)}"
        )

    def _hint(self, href: str, status: int | None) -> str:
        if not _is_remote(href):
            return (
                "The file is missing or is not a GeoTIFF/COG: check the file, and the asset href "
                "in the catalog that points at it."
            )
        if status in (404, 410):
            return (
                "The file is not on the server: fix the item's asset href in the catalog, or "
                "drop the item (e.g. a smaller date window or max_cloud_cover)."
            )
        if status in (401, 403):
            if self.signer is None:
                return (
                    "Access was refused: Planetary Computer hrefs need signing (`sign: "
                    "planetary-computer` on the stac resource), private buckets credentials."
                )
            return (
                "Access was refused even with a freshly signed URL: check the token endpoint "
                "(PC_SDK_SAS_URL) and subscription key (PC_SDK_SUBSCRIPTION_KEY)."
            )
        if status in PERMANENT_STATUSES:
            return "The server rejects this request: check the href in the catalog."
        return (
            "The server kept failing: retry later, or raise read_attempts, read_max_retries or "
            "read_timeout_s on the stac resource."
        )


class RetryingRioDriver(RioDriver):
    """odc-stac's rasterio driver, reading every source through a :class:`RemoteReader`.

    odc-stac captures this driver's GDAL environment into the dask graph and restores it in
    each task, so the retry settings reach every worker, thread or process.
    """

    def __init__(self, reader: RemoteReader) -> None:
        super().__init__()
        self.reader = reader

    def capture_env(self) -> dict[str, Any]:
        return {**super().capture_env(), **self.reader.settings.gdal_options()}

    def open(self, src: RasterSource, ctx: Any) -> _RetryingRioReader:
        return _RetryingRioReader(src, ctx, self.reader)


class _RetryingRioReader(RioReader):
    """A RioReader per attempt, on the href signed at that moment."""

    def __init__(self, src: RasterSource, ctx: Any, reader: RemoteReader) -> None:
        super().__init__(src, ctx)  # sets self._src and self._ctx
        self._reader = reader

    def read(
        self,
        cfg: RasterLoadParams,
        dst_geobox: GeoBox,
        *,
        dst: np.ndarray | None = None,
        selection: ReaderSubsetSelection | None = None,
    ) -> tuple[tuple[slice, slice], np.ndarray]:
        # fail_on_error must be on (load.py sets it): otherwise odc logs and swallows the error.
        return self._reader.read(
            self._src.uri,
            lambda url: RioReader(self._src.patch(uri=url), self._ctx).read(
                cfg, dst_geobox, dst=dst, selection=selection
            ),
        )


class _GdalHttpLog(logging.Handler):
    """Re-logs GDAL's HTTP retries and failed requests (which come through rasterio's loggers)
    on ours, and notes the last failing status per thread: a failed block read raises only
    "Read failed", the 404 behind it is in a warning."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        # GDAL's wording: "HTTP error code: 503 - <url>. Retrying again in 1.0 secs" (cpl_http)
        # and "Request for 0-16383 failed with response_code=503" (multi-range reads of a COG,
        # which GDAL then requests again range by range).
        if "Retrying again" in message or "failed with response_code" in message:
            log.warning("GDAL: %s", redact(message))
            found = _STATUS.search(message)
            if found and int(found.group(1)) >= 400:
                _last_status.value = int(found.group(1))


class _RedactQueries(logging.Filter):
    """Keeps SAS tokens (URL queries) out of odc-loader's failure messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def forward_gdal_retry_logs() -> None:
    """Install, once per process (dask worker processes call this too), the forwarding of
    GDAL's retries and the noting of the failures rasterio swallows (:func:`_gdal_failures`)."""
    with _install_lock:
        for name in ("rasterio._env", "rasterio._err"):  # GDAL messages come through either
            gdal_log = logging.getLogger(name)
            if not any(isinstance(h, _GdalHttpLog) for h in gdal_log.handlers):
                gdal_log.addHandler(_GdalHttpLog(level=logging.WARNING))
            if not any(isinstance(f, _NoteGdalFailures) for f in gdal_log.filters):
                gdal_log.addFilter(_NoteGdalFailures(gdal_log.getEffectiveLevel()))
                gdal_log.setLevel(min(gdal_log.getEffectiveLevel(), logging.INFO))
        odc_log = logging.getLogger("odc.loader._rio")
        if not any(isinstance(f, _RedactQueries) for f in odc_log.filters):
            odc_log.addFilter(_RedactQueries())


def _is_remote(href: str) -> bool:
    scheme = urlparse(href).scheme
    return len(scheme) > 1 and scheme != "file"  # one letter: a Windows drive


def _http_status(err: BaseException) -> int | None:
    """The HTTP status GDAL reported for this error or one it chained, if any."""
    seen: BaseException | None = err
    for _ in range(10):  # rasterio chains the GDAL errors of the call; a few are enough
        if seen is None:
            break
        found = _STATUS.search(str(seen))
        if found:
            return int(found.group(1))
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(err: BaseException, status: int | None) -> str:
    """'HTTP 503', or rasterio's message with the GDAL error that caused it."""
    if status is not None:
        return f"HTTP {status}"
    chain = [err]
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    message = str(err) if len(chain) == 1 else f"{err} ({chain[-1]})"
    return redact(message)


def redact(text: str) -> str:
    """URLs without their query: it may hold a SAS token."""
    return _URL_QUERY.sub(r"\1?<redacted>", text)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
