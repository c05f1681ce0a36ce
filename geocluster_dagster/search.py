"""STAC search with one set of filter semantics over an API, a static catalog or an ItemCollection.

Every source kind applies the same filters: collection id, footprint intersects the AOI geometry,
item time in ``[start, end)`` (UTC), and ``eo:cloud_cover <= max_cloud_cover``. Results are sorted
by (datetime, id), asset hrefs are absolute and NOT signed: signing happens at read time through
:meth:`StacSource.href_signer`, so no short-lived token is ever stored. An empty result raises
:class:`NoItemsFound` saying which filter to relax, found by re-querying with relaxed filters.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

import pystac
import shapely
from pystac.stac_io import DefaultStacIO
from pystac.utils import is_absolute_href, make_absolute_href
from pystac_client import Client
from pystac_client.conformance import ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry
from urllib3 import Retry

from geocluster_dagster.errors import AssetReadError, ConfigError, NoItemsFound
from geocluster_dagster.fields import described

PLANETARY_COMPUTER_STAC = "https://planetarycomputer.microsoft.com/api/stac/v1"

SourceKind = Literal["api", "static_catalog", "item_collection"]
SignMode = Literal["auto", "planetary-computer", "none"]

_PLANETARY_COMPUTER_HOST = "planetarycomputer.microsoft.com"
_RETRY_STATUSES = (429, 500, 502, 503, 504)
_STATIC_CATALOG_NAMES = ("catalog.json", "collection.json")
# Relaxed re-queries only explain an empty result, so a bounded sample is enough.
_DIAGNOSIS_LIMIT = 500
#: What pystac-client raises when an API cannot answer a request (beyond its own retries).
_SEARCH_ERRORS = (APIError, NotImplementedError, ValueError, pystac.STACError)

log = logging.getLogger(__name__)


class _LoggedRetry(Retry):
    """urllib3's retry policy, logging each retry (which request, why, which attempt, the wait)
    through this package's logger, which a run's log shows (urllib3 logs them at DEBUG only)."""

    def increment(  # type: ignore[override]  # the same parameters, typed loosely
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        why = (
            f"HTTP {response.status}"
            if response is not None
            else f"{type(error).__name__}: {error}"
        )
        attempt = len(retry.history)
        log.warning(
            f"STAC request {method} {url} failed ({why}): retry {attempt} of "
            f"{attempt + (retry.total or 0)} in {retry.get_backoff_time():.1f} s"
        )
        return retry


#: The collection searched when none is configured (run config, sensor and demo alike).
DEFAULT_COLLECTION = "landsat-c2-l2"


@dataclass(frozen=True)
class SearchSettings:
    """What to search for in a partition's AOI and time window."""

    collection: str = described(
        DEFAULT_COLLECTION,
        "STAC collection: 'landsat-c2-l2' or 'sentinel-2-l2a' (provider ids work too).",
    )
    max_cloud_cover: float | None = described(
        60.0, "Keep scenes with eo:cloud_cover at most this (percent); None = no limit."
    )
    max_items: int | None = described(
        None, "Keep at most this many items (the first ones in time order); None = all."
    )


def is_url(text: str) -> bool:
    """True for http(s) and file URLs; anything else is a local path."""
    return urlparse(text).scheme in ("http", "https", "file")


@dataclass(frozen=True)
class StacSource:
    """Where to search for STAC items, and how to talk to it."""

    url: str
    """STAC API root URL (http/https), a local static catalog (catalog.json / collection.json),
    or a local ItemCollection / FeatureCollection (or single Item) JSON file."""
    sign: SignMode = "auto"
    """Asset href signing at read time; "auto" signs when the URL is the Planetary Computer."""
    max_retries: int = 5
    """Retries per API request on connection errors and HTTP 429/500/502/503/504."""
    backoff_factor: float = 0.5
    """Exponential backoff between retries, in seconds (urllib3 ``Retry.backoff_factor``)."""
    timeout_s: float = 60.0
    """Timeout per request (connect and read), in seconds: a source that never answers fails
    after at most :attr:`give_up_after_s` seconds."""
    page_size: int = 100
    """Items requested per API page (``limit``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.strip():
            raise ConfigError("StacSource.url is empty: give a STAC API URL or a local file path.")
        if self.sign not in ("auto", "planetary-computer", "none"):
            raise ConfigError(
                f"StacSource.sign is {self.sign!r}: use 'auto', 'planetary-computer' or 'none'."
            )
        if self.max_retries < 0 or self.backoff_factor < 0:
            raise ConfigError("StacSource.max_retries and backoff_factor must be >= 0.")
        if self.timeout_s <= 0 or self.page_size < 1:
            raise ConfigError("StacSource.timeout_s must be > 0 and page_size >= 1.")

    @property
    def give_up_after_s(self) -> float:
        """The longest a request to a source that never answers takes to fail: every attempt
        times out, with urllib3's backoff between them (the first retry waits none)."""
        waits = sum(
            min(self.backoff_factor * 2 ** (n - 1), 120.0) for n in range(2, self.max_retries + 1)
        )
        return float((self.max_retries + 1) * self.timeout_s + waits)

    def retry(self) -> Retry:
        """The retry policy of every request to the source (searches are POSTs that change
        nothing on the server, so they are retried too)."""
        return _LoggedRetry(
            total=self.max_retries,
            backoff_factor=self.backoff_factor,
            status_forcelist=_RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "POST"}),
            respect_retry_after_header=True,
            raise_on_status=False,  # hand the last error response on, with its body
        )

    @property
    def kind(self) -> SourceKind:
        """ "api" for http(s) URLs but those of a JSON document (a static catalog or an
        ItemCollection served over HTTP); else "static_catalog" or "item_collection" by content."""
        parsed = urlparse(self.url)
        if parsed.scheme in ("http", "https"):
            if not parsed.path.endswith(".json"):
                return "api"
            name = Path(parsed.path).name
            return "static_catalog" if name in _STATIC_CATALOG_NAMES else "item_collection"
        path = self.local_path
        if path.name in _STATIC_CATALOG_NAMES:
            return "static_catalog"
        try:
            document_type = json.loads(path.read_text(encoding="utf-8")).get("type")
        except (OSError, ValueError, AttributeError):
            return "item_collection"  # search_items reports why the file cannot be read
        return "static_catalog" if document_type in ("Catalog", "Collection") else "item_collection"

    @property
    def local_path(self) -> Path:
        """The URL as a local path (``file://`` URLs are accepted)."""
        parsed = urlparse(self.url)
        return Path(parsed.path if parsed.scheme == "file" else self.url).expanduser()

    def href_signer(self) -> Callable[[str], str] | None:
        """A Planetary Computer signer (SDK-cached SAS tokens, renewed on a 403) if signing
        applies, else None; the reader calls it at read time (geocluster_dagster.remote)."""
        pc_url = urlparse(self.url).hostname == _PLANETARY_COMPUTER_HOST
        if self.sign == "planetary-computer" or (self.sign == "auto" and pc_url):
            from geocluster_dagster.remote import PlanetaryComputerSigner

            return PlanetaryComputerSigner()
        return None


def search_items(
    source: StacSource,
    *,
    collection: str,
    geometry: BaseGeometry,
    start: datetime,
    end: datetime,
    max_cloud_cover: float | None = None,
    max_items: int | None = None,
) -> pystac.ItemCollection:
    """Items of ``collection`` whose footprint intersects ``geometry`` (lon/lat) in [start, end).

    Naive datetimes are taken as UTC. Items with a ``start_datetime``/``end_datetime`` range match
    when the range overlaps the window. ``max_cloud_cover`` (percent) keeps items with
    ``eo:cloud_cover <= max_cloud_cover``; a local source keeps items that have no
    ``eo:cloud_cover`` at all, while an API drops them server-side (CQL2 ``filter`` when it
    conforms to it, else the ``query`` extension, else the filter is applied locally).
    ``max_items`` keeps the first items in (datetime, id) order; an API that does not conform to
    the sort extension returns its first ``max_items`` in its own order.

    Raises NoItemsFound naming the filter to relax, AssetReadError when the source cannot be read.
    """
    window_start = _as_utc(_checked_datetime(start, "start"))
    window_end = _as_utc(_checked_datetime(end, "end"))
    if window_start >= window_end:
        raise ConfigError(
            f"start ({start}) must be before end ({end}): the window is [start, end)."
        )
    if max_items is not None and max_items < 1:
        raise ConfigError(f"max_items is {max_items}: use a positive number or None for all.")
    query = _Query(
        collection=_checked_collection(collection),
        geometry=_checked_geometry(geometry),
        start=window_start,
        end=window_end,
        max_cloud_cover=_checked_cloud_cover(max_cloud_cover),
    )
    catalog: _Catalog = _ApiCatalog(source) if source.kind == "api" else _LocalCatalog(source)
    items = catalog.find(query, max_items)
    if not items:
        message = _explain_empty(catalog, query, geometry, window_start, window_end)
        raise NoItemsFound(message)
    return pystac.ItemCollection(items, clone_items=False)


@dataclass(frozen=True)
class _Query:
    """Search filters; None means "not filtered on" (used by the relaxed diagnosis queries)."""

    collection: str
    geometry: BaseGeometry | None
    start: datetime | None
    end: datetime | None
    max_cloud_cover: float | None


class _Catalog(Protocol):
    location: str

    def find(self, query: _Query, limit: int | None) -> list[pystac.Item]: ...

    def has_collection(self, collection: str) -> bool: ...

    def collection_ids(self) -> list[str]: ...


class _LocalCatalog:
    """A static catalog or ItemCollection file read once and filtered in memory with shapely."""

    def __init__(self, source: StacSource) -> None:
        remote = is_url(source.url) and urlparse(source.url).scheme != "file"
        # abspath, not resolve(): the demo catalog is a folder product (a link to its version)
        location = source.url if remote else os.path.abspath(source.local_path)
        self.location = location
        stac_io = _BoundedStacIO(source)
        try:
            document = json.loads(stac_io.read_text(location))
            self.entries, collections = _read_local_document(document, location, stac_io)
        except (OSError, ValueError, KeyError, TypeError, pystac.STACError) as err:
            where = "STAC document" if remote else "local STAC source"
            bound = (
                f" (each request retried {source.max_retries} times with a {source.timeout_s:g} s "
                f"timeout: at most {source.give_up_after_s:.0f} s)"
                if remote
                else ""
            )
            raise AssetReadError(
                f"Cannot read the {where} {location}{bound}: {type(err).__name__}: {err}. Tried "
                "to read it as a STAC catalog/collection or an ItemCollection JSON file; give an "
                "existing catalog.json, collection.json or FeatureCollection of STAC Items."
            ) from err
        self._collections = sorted(collections | {c for c, _ in self.entries if c})

    def find(self, query: _Query, limit: int | None) -> list[pystac.Item]:
        found = [item for collection, item in self.entries if _matches(item, collection, query)]
        return sorted(found, key=_sort_key)[:limit]

    def has_collection(self, collection: str) -> bool:
        return collection in self._collections

    def collection_ids(self) -> list[str]:
        return self._collections


class _ApiCatalog:
    """A STAC API searched with pystac-client; results are re-checked with the local filters."""

    def __init__(self, source: StacSource) -> None:
        self.location = source.url
        self.source = source
        self.client = _open_api_client(source)

    def find(self, query: _Query, limit: int | None) -> list[pystac.Item]:
        parameters = _api_search_parameters(self.client, query, self.source.page_size, limit)
        try:
            items = list(self.client.search(**parameters).items())
        except _SEARCH_ERRORS as err:
            raise AssetReadError(
                f"STAC search at {self.source.url} failed ({type(err).__name__}: {err}); tried "
                f"POST /search for collection {query.collection!r} with "
                f"{self.source.max_retries} retries (at most {self.source.give_up_after_s:.0f} s "
                "in all): check that the URL is a STAC API root with "
                "item search, or raise StacSource.max_retries / timeout_s."
            ) from err
        # The server's datetime interval is closed; re-checking applies the exclusive end.
        found = [item for item in items if _matches(item, query.collection, query)]
        for item in found:
            _make_asset_hrefs_absolute(item, base=self.source.url)
        return sorted(found, key=_sort_key)[:limit]

    def has_collection(self, collection: str) -> bool:
        try:
            return self.client.get_collection(collection) is not None
        except _SEARCH_ERRORS:
            return True  # cannot tell: let the other diagnoses speak

    def collection_ids(self) -> list[str]:
        try:
            return sorted(c.id for c in self.client.get_collections())
        except _SEARCH_ERRORS:
            return []


def _open_api_client(source: StacSource) -> Client:
    stac_io = StacApiIO(max_retries=source.retry(), timeout=source.timeout_s)
    try:
        # Client.open resets the stac_io timeout to its own argument, so pass it here too.
        client = Client.open(source.url, stac_io=stac_io, timeout=source.timeout_s)
    except (APIError, OSError, ValueError, pystac.STACError) as err:
        raise AssetReadError(
            f"Cannot open the STAC API at {source.url} ({type(err).__name__}: {err}); tried GET "
            f"of the landing page with {source.max_retries} retries (backoff "
            f"{source.backoff_factor} s) and a {source.timeout_s} s timeout, giving up after at "
            f"most {source.give_up_after_s:.0f} s: check the URL and "
            "the network or proxy, or use a local static catalog / ItemCollection file."
        ) from err
    _recognise_later_api_versions(client)
    return client


def _recognise_later_api_versions(client: Client) -> None:
    """Let pystac-client see search extensions the API declares for STAC API v1.1+.

    pystac-client 0.9 only recognises ``https://api.stacspec.org/v1.0.*`` conformance URIs, but
    stac-fastapi-pgstac 7 declares sort as ``v1.1.0/item-search#sort``: unrecognised, no sortby
    is sent and ``max_items`` keeps the server's default order (newest first).
    """
    declared = client.get_conforms_to()
    for conformance in (
        ConformanceClasses.SORT,
        ConformanceClasses.FILTER,
        ConformanceClasses.QUERY,
    ):
        later = re.compile(
            r"https://api\.stacspec\.org/v1\.[1-9][0-9]*\.[^/]*"
            + re.escape(conformance.value)
            + "$"
        )
        if not client.conforms_to(conformance) and any(later.match(uri) for uri in declared):
            client.add_conforms_to(conformance.name)


def _api_search_parameters(
    client: Client, query: _Query, page_size: int, limit: int | None
) -> dict[str, Any]:
    parameters: dict[str, Any] = {
        "collections": [query.collection],
        "limit": page_size,
        "max_items": limit,
    }
    if query.geometry is not None:
        parameters["intersects"] = mapping(query.geometry)
    if query.start is not None:
        parameters["datetime"] = [query.start, query.end]
    if query.max_cloud_cover is not None:
        if client.conforms_to(ConformanceClasses.FILTER):
            parameters["filter"] = {
                "op": "<=",
                "args": [{"property": "eo:cloud_cover"}, query.max_cloud_cover],
            }
            parameters["filter_lang"] = "cql2-json"
        elif client.conforms_to(ConformanceClasses.QUERY):
            parameters["query"] = {"eo:cloud_cover": {"lte": query.max_cloud_cover}}
        # else: no server-side cloud filter; _matches applies it to the results.
    if limit is not None and client.conforms_to(ConformanceClasses.SORT):
        parameters["sortby"] = [
            {"field": "properties.datetime", "direction": "asc"},
            {"field": "id", "direction": "asc"},
        ]
    return parameters


class _BoundedStacIO(DefaultStacIO):
    """pystac's reader, with the source's timeout and logged retries for documents over HTTP
    (pystac's own waits for ever on a server that never answers)."""

    def __init__(self, source: StacSource) -> None:
        import urllib3

        super().__init__()
        # One pool for the catalog's every document: its connections are reused.
        self._http = urllib3.PoolManager(retries=source.retry(), timeout=source.timeout_s)

    def read_text_from_href(self, href: str) -> str:
        if urlparse(href).scheme not in ("http", "https"):
            return super().read_text_from_href(href)
        import urllib3

        try:
            response = self._http.request("GET", href, headers={"User-Agent": "geocluster_dagster"})
        except urllib3.exceptions.HTTPError as err:
            raise OSError(f"GET {href} failed: {err}") from err
        if response.status >= 400:
            raise OSError(f"GET {href} answered HTTP {response.status}")
        return str(response.data.decode("utf-8"))


def _read_local_document(
    document: Any, path: str, stac_io: pystac.StacIO
) -> tuple[list[tuple[str | None, pystac.Item]], set[str]]:
    """(collection id, item) pairs and the collection ids of a STAC JSON document read from
    ``path`` (a file, or a URL)."""
    document_type = document.get("type") if isinstance(document, dict) else None
    if document_type in ("Catalog", "Collection"):
        return _read_static_catalog(path, stac_io)
    if document_type == "FeatureCollection":
        items = pystac.ItemCollection.from_dict(document, preserve_dict=False).items
    elif document_type == "Feature":
        items = [pystac.Item.from_dict(document, preserve_dict=False)]
    else:
        raise ValueError(
            f"JSON type {document_type!r} is neither a Catalog, Collection, FeatureCollection "
            "nor Feature"
        )
    for item in items:
        _make_asset_hrefs_absolute(item, base=str(path))
    return [(item.collection_id, item) for item in items], set()


def _read_static_catalog(
    path: str, stac_io: pystac.StacIO
) -> tuple[list[tuple[str | None, pystac.Item]], set[str]]:
    root = pystac.read_file(path, stac_io=stac_io)
    if not isinstance(root, pystac.Catalog):
        raise ValueError(f"{path} is a {type(root).__name__}, not a Catalog or Collection")
    entries: list[tuple[str | None, pystac.Item]] = []
    collections: set[str] = set()
    for node, _children, items in root.walk():
        parent_collection = node.id if isinstance(node, pystac.Collection) else None
        if parent_collection:
            collections.add(parent_collection)
        for item in items:
            item.make_asset_hrefs_absolute()  # relative to the item's own self href
            entries.append((item.collection_id or parent_collection, item))
    return entries, collections


def _make_asset_hrefs_absolute(item: pystac.Item, *, base: str) -> None:
    # Per STAC, relative hrefs resolve against the item's self link; without one, the file.
    anchor = item.get_self_href() or base
    for asset in item.assets.values():
        if not is_absolute_href(asset.href):
            asset.href = make_absolute_href(asset.href, anchor)


def _matches(item: pystac.Item, collection: str | None, query: _Query) -> bool:
    if collection != query.collection:
        return False
    if query.geometry is not None:
        footprint = _footprint(item)
        if footprint is None or not footprint.intersects(query.geometry):
            return False
    if query.start is not None and query.end is not None:
        span = _time_span(item)
        if span is None or not (span[0] < query.end and span[1] >= query.start):
            return False
    if query.max_cloud_cover is not None:
        cover = item.properties.get("eo:cloud_cover")
        if cover is not None and cloud_cover(item) is None:
            raise AssetReadError(
                f"Item {item.id!r} has eo:cloud_cover {cover!r}, which is not a number (the eo "
                "extension makes it a percentage, 0-100), so the cloud filter cannot judge it: "
                "fix the catalog, or search without the filter (stac_items max_cloud_cover: null)."
            )
        value = cloud_cover(item)
        if value is not None and value > query.max_cloud_cover:
            return False
    return True


def cloud_cover(item: pystac.Item) -> float | None:
    """The item's eo:cloud_cover as a number; None when it has none or it is not a number."""
    value = item.properties.get("eo:cloud_cover")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _footprint(item: pystac.Item) -> BaseGeometry | None:
    if item.geometry:
        footprint = shape(item.geometry)
        return footprint if footprint.is_valid else shapely.make_valid(footprint)
    if item.bbox:
        half = len(item.bbox) // 2  # 2D or 3D bbox
        return box(item.bbox[0], item.bbox[1], item.bbox[half], item.bbox[half + 1])
    return None


def _time_span(item: pystac.Item) -> tuple[datetime, datetime] | None:
    start = item.common_metadata.start_datetime or item.datetime
    end = item.common_metadata.end_datetime or item.datetime
    if start is None or end is None:
        return None
    return _as_utc(start), _as_utc(end)


def acquired(item: pystac.Item) -> datetime:
    """When an item was acquired (UTC): its datetime, else the start of its range.

    Every item :func:`search_items` returns has one or the other.
    """
    moment = item.datetime or item.common_metadata.start_datetime
    if moment is None:
        raise ConfigError(f"STAC item {item.id!r} has neither datetime nor start_datetime.")
    return _as_utc(moment)


def _sort_key(item: pystac.Item) -> tuple[datetime, str]:
    span = _time_span(item)
    return (span[0] if span else datetime.min.replace(tzinfo=timezone.utc), item.id)


def _explain_empty(
    catalog: _Catalog, query: _Query, geometry: BaseGeometry, start: datetime, end: datetime
) -> str:
    min_x, min_y, max_x, max_y = geometry.bounds
    cloud = (
        ""
        if query.max_cloud_cover is None
        else f" with eo:cloud_cover <= {query.max_cloud_cover:g}"
    )
    return (
        f"No STAC items in collection {query.collection!r} at {catalog.location} for the AOI with "
        f"bbox ({min_x:.4f}, {min_y:.4f}, {max_x:.4f}, {max_y:.4f}) in the window "
        f"[{start.isoformat()}, {end.isoformat()}){cloud}: {_diagnose(catalog, query)}."
    )


def _diagnose(catalog: _Catalog, query: _Query) -> str:
    if isinstance(catalog, _LocalCatalog) and not catalog.entries:
        return (
            f"{catalog.location} holds no STAC items at all: point the STAC source "
            "(GEOCLUSTER_STAC_URL, resource stac.url) at a catalog or ItemCollection with items"
        )
    if not catalog.has_collection(query.collection):
        available = ", ".join(catalog.collection_ids()) or "(none)"
        return (
            f"there is no collection {query.collection!r} at {catalog.location}; available: "
            f"{available}. Set collection to one of these"
        )
    any_cloud = replace(query, max_cloud_cover=None)
    if query.max_cloud_cover is not None:
        cloudy = catalog.find(any_cloud, _DIAGNOSIS_LIMIT)
        covers = [c for c in map(cloud_cover, cloudy) if c is not None]
        if covers:
            least = min(covers)  # printed in full: a rounded-down limit would still exclude it
            return (
                f"{_count(cloudy)} item(s) match without the cloud filter; the least cloudy has "
                f"{least} %: raise max_cloud_cover (stac_items) to at least {least}, or use longer "
                "date windows to find clearer scenes"
            )
    any_time = catalog.find(replace(any_cloud, start=None, end=None), _DIAGNOSIS_LIMIT)
    if any_time:
        dates = sorted({_sort_key(item)[0].date().isoformat() for item in any_time})
        shown = ", ".join(dates) if len(dates) <= 4 else f"{dates[0]}, ..., {dates[-1]}"
        return (
            f"{_count(any_time)} item(s) intersect the AOI but none in the date window "
            f"(dated {shown}): process the window(s) holding those dates (in the graph, their "
            "date partitions), or a longer window (GEOCLUSTER_DATE_WINDOWS=quarter or year)"
        )
    anywhere = catalog.find(replace(any_cloud, geometry=None), _DIAGNOSIS_LIMIT)
    if anywhere:
        footprints = [f for f in (_footprint(item) for item in anywhere) if f is not None]
        if not footprints:
            return (
                f"{_count(anywhere)} item(s) are in the window but none has a footprint "
                "(geometry), so none can intersect the AOI: the catalog's items need their "
                "geometry"
            )
        if query.geometry is not None:
            swapped = shapely.transform(query.geometry, lambda xy: xy[:, ::-1])
            mirrored = catalog.find(replace(any_cloud, geometry=swapped), _DIAGNOSIS_LIMIT)
            if mirrored:
                return (
                    f"{_count(anywhere)} item(s) are in the window but none intersect the AOI, "
                    f"while {_count(mirrored)} intersect it with its axes swapped: its "
                    "positions look like [lat, lon]; write each as [lon, lat] (RFC 7946)"
                )
        lon0, lat0, lon1, lat1 = shapely.union_all(footprints).bounds
        return (
            f"{_count(anywhere)} item(s) are in the window but none intersect the AOI (they "
            f"cover lon {lon0:.2f}..{lon1:.2f}, lat {lat0:.2f}..{lat1:.2f}): check the AOI "
            "coordinates ([lon, lat] order, location) or use a collection that covers it"
        )
    return (
        "the collection has no items intersecting the AOI in this window, nor any in the window "
        "elsewhere: process other dates (other date partitions, or a longer window) or check "
        "the AOI"
    )


def _count(items: list[pystac.Item]) -> str:
    return f"at least {len(items)}" if len(items) >= _DIAGNOSIS_LIMIT else str(len(items))


def _as_utc(moment: datetime) -> datetime:
    return (
        moment.replace(tzinfo=timezone.utc)
        if moment.tzinfo is None
        else moment.astimezone(timezone.utc)
    )


def _checked_datetime(value: Any, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise ConfigError(
            f"{name} must be a datetime (naive = UTC), got {value!r}: e.g. datetime(2025, 7, 1)."
        )
    return value


def _checked_collection(collection: Any) -> str:
    if not isinstance(collection, str) or not collection:
        raise ConfigError(
            f"collection must be a STAC collection id such as 'landsat-c2-l2', got {collection!r}."
        )
    return collection


def _checked_geometry(geometry: Any) -> BaseGeometry:
    if not isinstance(geometry, BaseGeometry) or geometry.is_empty:
        raise ConfigError(
            f"geometry must be a non-empty shapely geometry in lon/lat (e.g. AOI.geometry), "
            f"got {type(geometry).__name__}."
        )
    min_x, min_y, max_x, max_y = geometry.bounds
    if min(min_x, -max_x) < -180 or min(min_y, -max_y) < -90:
        raise ConfigError(
            f"geometry bounds {geometry.bounds} are not lon/lat: reproject it to EPSG:4326."
        )
    return geometry


def _checked_cloud_cover(max_cloud_cover: Any) -> float | None:
    if max_cloud_cover is None:
        return None
    if not isinstance(max_cloud_cover, (int, float)) or not 0 <= max_cloud_cover <= 100:
        raise ConfigError(
            f"max_cloud_cover is {max_cloud_cover!r}: give a percentage in [0, 100] or None."
        )
    return float(max_cloud_cover)
