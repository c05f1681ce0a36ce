"""Reading real scenes over HTTP through a fault-injecting proxy in front of nginx.

Every read here is a genuine ranged HTTP read by GDAL: nginx (Debian) serves ../shared/data,
tests/servers/fault_proxy.py sits in front and misbehaves as each test programs it. Transient
faults must leave outputs identical to a local read, with the retries in the logs; permanent
faults must fail with an AssetReadError naming the URL and what was tried, and write nothing.
Each test gets a fresh proxy: GDAL caches per URL for the life of the process.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import dagster as dg
import numpy as np
import odc.stac
import planetary_computer
import pystac
import pytest
import rasterio
import rasterio.errors
import shapely
import xarray as xr
from planetary_computer import sas as pc_sas
from planetary_computer.settings import Settings as PcSettings

from geocluster_dagster.defs.assets import band_stack, mosaic, stac_items
from geocluster_dagster.defs.outputs import MOSAIC, OutputStore
from geocluster_dagster.defs.partitions import partition_key, window_of
from geocluster_dagster.defs.resources import AOIRegistry, DaskCluster, StacCatalog
from geocluster_dagster.errors import AssetReadError, GeoclusterError
from geocluster_dagster.load import LoadSettings, load_band_stack
from geocluster_dagster.preflight import check_assets
from geocluster_dagster.remote import RemoteReader, RemoteReadSettings
from geocluster_dagster.search import StacSource

from .conftest import L8_008059, L8_008059_PREFIX, S2_29RKH, SHARED_DATA, localize_item
from .servers.fault_proxy import Fault, FaultProxy
from .servers.nginx import NginxServer
from .servers.sas import SasTokenServer

pytestmark = pytest.mark.servers

#: Small delays and a 1 s timeout keep the tests fast; the bounds are what matter.
FAST = RemoteReadSettings(max_retries=2, retry_delay_s=0.05, timeout_s=1.0, attempts=3)
L8_SETTINGS = LoadSettings(resolution=450, chunk_size=128)
S2_SETTINGS = LoadSettings(bands=("blue", "green", "red", "nir"), resolution=100, chunk_size=512)
L8_BANDS = ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7", "ST_B10", "QA_PIXEL"]
RED = f"{L8_008059_PREFIX}_SR_B4.TIF"
REMOTE_LOG = "geocluster_dagster.remote"


def l8_item() -> pystac.Item:
    """USGS item of scene 008059 (plus the ST thermal asset) with local pixels."""
    sr = pystac.Item.from_file(L8_008059 / f"{L8_008059_PREFIX}_SR_stac.json")
    st = pystac.Item.from_file(L8_008059 / f"{L8_008059_PREFIX}_ST_stac.json")
    sr.assets["ST_B10.TIF"] = st.assets["ST_B10.TIF"].clone()
    files = {f"{b}.TIF": L8_008059 / f"{L8_008059_PREFIX}_{b}.TIF" for b in L8_BANDS}
    return localize_item(sr, files)


def s2_item() -> pystac.Item:
    """Earth Search item of tile 29RKH: tiled, deflate-compressed COGs with overviews."""
    item = pystac.Item.from_file(S2_29RKH / "S2A_29RKH_20200219_0_L2A.json")
    names = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "scl": "SCL"}
    return localize_item(item, {key: S2_29RKH / f"{name}.tif" for key, name in names.items()})


def served(item: pystac.Item, url_of) -> pystac.Item:
    """The item with every asset href turned into ``url_of(path relative to shared/data)``."""
    item = item.clone()
    for asset in item.assets.values():
        asset.href = url_of(Path(asset.href).relative_to(SHARED_DATA).as_posix())
    return item


def aoi_of(item: pystac.Item) -> shapely.Polygon:
    return shapely.geometry.polygon.orient(shapely.geometry.shape(item.geometry).buffer(-0.05))


@pytest.fixture(scope="module")
def nginx():
    with NginxServer(SHARED_DATA) as server:
        yield server


@pytest.fixture
def proxy(nginx):
    with FaultProxy(nginx.base_url) as server:
        yield server


@pytest.fixture(scope="module")
def clean_l8() -> xr.Dataset:
    item = l8_item()
    return load_band_stack([item], aoi_of(item), L8_SETTINGS).compute()


@pytest.fixture(scope="module")
def clean_s2() -> xr.Dataset:
    item = s2_item()
    return load_band_stack([item], aoi_of(item), S2_SETTINGS).compute()


def remote_messages(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == REMOTE_LOG)


# --- transient faults: identical outputs, retries logged --------------------------------------

TRANSIENT = {
    # GDAL retries these itself (GDAL_HTTP_MAX_RETRY); its warnings are forwarded to our logger.
    "503 burst with Retry-After while opening": (
        "l8",
        Fault.status(503, times=2, retry_after=1, path="SR_B4"),
        "status 503",
        2,
        "HTTP error code: 503",
    ),
    "429 burst on block reads": (
        "l8",
        Fault.status(429, times=2, retry_after=1, method="GET", skip=1, path="SR_B5"),
        "status 429",
        2,
        "HTTP error code: 429",
    ),
    "connection resets": ("l8", Fault.reset(times=2, path="SR_B3"), "reset", 2, "Retrying again"),
    "an answer slower than the timeout": (
        "l8",
        Fault.delay(FAST.timeout_s + 1.0, times=1, method="GET", path="QA_PIXEL"),
        "delay",
        1,
        "Retrying again",
    ),
    # A tiled COG: GDAL's multi-range read notices the short body and asks again range by range.
    "truncated tile ranges of a COG": (
        "s2",
        Fault.truncate(times=2, method="GET", skip=1, path="B04"),
        "truncate",
        2,
        "failed with response_code=206",
    ),
}


@pytest.mark.parametrize("case", list(TRANSIENT))
def test_transient_faults_leave_outputs_identical(case, proxy, clean_l8, clean_s2, caplog):
    scene, fault, outcome, fired, logged = TRANSIENT[case]
    item, settings, clean = (
        (l8_item(), L8_SETTINGS, clean_l8) if scene == "l8" else (s2_item(), S2_SETTINGS, clean_s2)
    )
    proxy.add(fault)
    with caplog.at_level(logging.WARNING):
        stack = load_band_stack([served(item, proxy.url)], aoi_of(item), settings, remote=FAST)
        xr.testing.assert_identical(stack.compute(), clean)
    assert proxy.count(outcome) == fired
    assert logged in remote_messages(caplog)


@pytest.mark.parametrize(
    "keep_fraction",
    [
        0.5,  # the header parses; the strips near its end are not there: "Read failed"
        # Not even the GeoKeys: GDAL opens a raster without a CRS and reads zeros, and rasterio
        # raises nothing; only the GDAL failures it logs say so.
        0.02,
    ],
)
def test_a_truncated_header_poisons_gdals_cache_and_is_read_again(
    keep_fraction, proxy, clean_l8, caplog
):
    """Without the preflight the header is first read in a dask task. GDAL does not retry a
    short body, and keeps the short bytes for that URL: every other task reading the file fails
    too. Each is read again with GDAL's cache bypassed."""
    item = l8_item()
    proxy.add(Fault.truncate(times=1, method="GET", path="SR_B4", keep_fraction=keep_fraction))
    settings = LoadSettings(resolution=450, chunk_size=128, preflight=False)
    with caplog.at_level(logging.WARNING):
        stack = load_band_stack([served(item, proxy.url)], aoi_of(item), settings, remote=FAST)
        xr.testing.assert_identical(stack.compute(), clean_l8)
    assert proxy.count("truncate") == 1
    retries = [m for m in remote_messages(caplog).splitlines() if "bypassing GDAL's cache" in m]
    assert retries and all(RED in m and "attempt 2 of 3" in m for m in retries)


def test_a_header_truncated_before_its_geokeys_is_read_again_by_the_preflight(proxy, caplog):
    """Short of its GeoKeys the header opens as a raster without a CRS: the preflight would
    report the asset as having none, a wrong diagnosis of a dropped connection."""
    item = served(l8_item(), proxy.url)
    proxy.add(Fault.truncate(times=1, method="GET", path="SR_B4", keep_fraction=0.02))
    with caplog.at_level(logging.WARNING):
        check_assets([item], ["SR_B4.TIF"], aoi_of(item), RemoteReader(FAST))
    assert proxy.count("truncate") == 1
    retries = [m for m in remote_messages(caplog).splitlines() if "bypassing GDAL's cache" in m]
    assert len(retries) == 1 and "IO error during reading" in retries[0], retries


def test_a_local_file_cut_short_fails_and_names_it(tmp_path):
    """A partial download: the header promises GeoKeys and strips the file does not hold.
    rasterio alone opens it without a CRS and reads zeros; the preflight called it "has no
    CRS" and odc-geo failed with a bare AssertionError. Both now name the file and GDAL's
    failure."""
    item = l8_item()
    whole = Path(item.assets["SR_B4.TIF"].href)
    cut = tmp_path / whole.name
    cut.write_bytes(whole.read_bytes()[:400])  # the IFD, not its strip offsets or GeoKeys
    item.assets["SR_B4.TIF"].href = str(cut)
    for preflight in (True, False):
        settings = LoadSettings(resolution=450, chunk_size=128, preflight=preflight)
        with pytest.raises(AssetReadError) as failure:
            load_band_stack([item], aoi_of(item), settings).compute()
        message = str(failure.value)
        assert str(cut) in message and "GDAL failed inside the read" in message
        assert "not a GeoTIFF/COG" in message


# --- permanent faults: bounded, named, nothing written ----------------------------------------


def test_a_missing_file_fails_at_once_naming_the_url(proxy):
    item = served(l8_item(), proxy.url)
    proxy.add(Fault.status(404, times=None, path="SR_B4"))
    with pytest.raises(AssetReadError) as failure:
        load_band_stack([item], aoi_of(item), L8_SETTINGS, remote=FAST)
    message = str(failure.value)
    assert item.assets["SR_B4.TIF"].href in message and "'SR_B4.TIF'" in message
    assert "tried 1 time(s)" in message and "HTTP 404" in message and "not on the server" in message
    assert proxy.count("status 404") == 1  # a 404 is not retried


def test_a_file_gone_during_the_run_fails_after_bounded_attempts(proxy):
    """The header read fine, then every block read is a 404: still a bounded failure."""
    item = served(l8_item(), proxy.url)
    proxy.add(Fault.status(404, times=None, skip=1, method="GET", path="SR_B4"))
    stack = load_band_stack([item], aoi_of(item), L8_SETTINGS, remote=FAST)
    with pytest.raises(AssetReadError) as failure:
        stack.compute(scheduler="single-threaded")
    message = str(failure.value)
    assert item.assets["SR_B4.TIF"].href in message and "tried 3 time(s)" in message
    assert proxy.count("status 404") <= 3 * FAST.attempts  # bounded, whatever GDAL does per try


def test_an_upstream_that_stays_down_fails_after_bounded_retries(proxy):
    item = served(l8_item(), proxy.url)
    proxy.upstream_down = True  # the proxy answers 502 Bad Gateway, as a real gateway does
    started = time.monotonic()
    with pytest.raises(AssetReadError) as failure:
        load_band_stack([item], aoi_of(item), L8_SETTINGS, remote=FAST)
    message = str(failure.value)
    paths = {event.path for event in proxy.log}
    assert f"{len(paths)} of {len(paths)} assets cannot be read" in message
    assert "HTTP 502" in message and "tried 3 time(s)" in message
    assert "up to 2 times by GDAL" in message
    # Per asset: 3 attempts, each a HEAD plus GDAL's 2 retries of it; with its cache bypassed
    # GDAL may look at the file twice in one attempt (measured: 3 + 3 + 6 requests). The same
    # for every asset, and never open-ended.
    per_asset = {proxy.count("upstream down", path=path) for path in paths}
    assert any(RED in path for path in paths) and len(per_asset) == 1
    assert (
        FAST.attempts * (FAST.max_retries + 1)
        <= per_asset.pop()
        <= FAST.attempts * 2 * (FAST.max_retries + 1)
    )
    assert time.monotonic() - started < 30


def test_a_server_that_is_gone_is_named(nginx):
    proxy = FaultProxy(nginx.base_url).start()
    item = served(l8_item(), proxy.url)
    proxy.stop()  # nothing listens on the port any more
    with pytest.raises(AssetReadError) as failure:
        load_band_stack([item], aoi_of(item), L8_SETTINGS, remote=FAST)
    message = str(failure.value)
    assert item.assets["SR_B4.TIF"].href in message
    assert "tried 3 time(s)" in message and "connect" in message.lower()


def test_without_signing_a_refusal_is_not_retried_and_says_so(proxy):
    item = served(l8_item(), proxy.url)
    proxy.add(Fault.status(403, times=None, path="SR_B2"))
    with pytest.raises(AssetReadError, match=r"tried 1 time\(s\).*need signing"):
        load_band_stack([item], aoi_of(item), L8_SETTINGS, remote=FAST)
    assert proxy.count("status 403") == 1


# --- on dask worker processes -----------------------------------------------------------------


def test_worker_processes_retry_with_the_same_settings_and_forward_their_logs(
    proxy, clean_l8, caplog
):
    """The driver and its settings travel in the graph; each worker process has its own GDAL
    cache, so the header is read (and truncated) in a worker. The DaskCluster resource brings
    the workers' logs back to this process, where Dagster captures them."""
    item = served(l8_item(), proxy.url)
    proxy.add(
        # skip: the preflight's read. 2 % kept: every task that opens the file fails; with half
        # the header kept, a task whose strips arrived read them without a retry (a flaky test).
        Fault.truncate(times=1, method="GET", skip=1, path="SR_B4", keep_fraction=0.02),
        Fault.status(503, times=2, method="GET", skip=1, path="SR_B6"),
    )
    cluster = DaskCluster(mode="local_cluster", n_workers=2, threads_per_worker=1, processes=True)
    with (
        cluster.yield_for_execution(dg.build_init_resource_context()),
        caplog.at_level(logging.WARNING),
    ):
        stack = load_band_stack([item], aoi_of(item), L8_SETTINGS, remote=FAST)
        xr.testing.assert_identical(stack.compute(), clean_l8)
        deadline = time.monotonic() + 60  # forwarded records arrive asynchronously
        expected = ("bypassing GDAL's cache", "HTTP error code: 503")
        while not all(text in remote_messages(caplog) for text in expected):
            assert time.monotonic() < deadline, remote_messages(caplog)
            time.sleep(0.1)
    assert proxy.count("truncate") == 1 and proxy.count("status 503") == 2


# --- through Dagster: the band_stack asset ----------------------------------------------------


def materialize_mosaic(tmp_path: Path, item: pystac.Item, out: Path, *, read_attempts=3):
    """stac_items + band_stack of scene 008059 from an ItemCollection file of ``item``."""
    catalog = tmp_path / f"items-{out.name}.json"
    catalog.write_text(json.dumps(pystac.ItemCollection([item]).to_dict()))
    registry = tmp_path / "aois.geojson"
    registry.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "id": "tumaco",
                        "properties": {},
                        "geometry": shapely.geometry.mapping(aoi_of(item)),
                    }
                ],
            }
        )
    )
    # Dagster shows python logs of the loggers its instance manages: the read retries.
    instance = dg.DagsterInstance.ephemeral(
        settings={"python_logs": {"managed_python_loggers": ["geocluster_dagster"]}}
    )
    instance.add_dynamic_partitions("aoi", ["tumaco"])
    result = dg.materialize(
        [stac_items, band_stack, mosaic],
        partition_key=partition_key("tumaco", "2019-12-01"),
        instance=instance,
        raise_on_error=False,
        run_config={
            "ops": {
                "stac_items": {
                    "config": {"collection": item.collection_id, "max_cloud_cover": None}
                },
                "band_stack": {"config": {"resolution": 450, "chunk_size": 128}},
                # The real scene is 81 % cloud, 9 % of the AOI clear: these tests are about
                # reading through faults, not about whether such a mosaic should block.
                "mosaic": {"config": {"error_clear_fraction": 0.0, "warn_clear_fraction": 0.0}},
            }
        },
        resources={
            "aoi_registry": AOIRegistry(path=str(registry)),
            "stac": StacCatalog(
                url=str(catalog),
                read_max_retries=FAST.max_retries,
                read_retry_delay_s=FAST.retry_delay_s,
                read_timeout_s=FAST.timeout_s,
                read_attempts=read_attempts,
            ),
            "dask": DaskCluster(n_workers=1, threads_per_worker=2),
            "outputs": OutputStore(base_dir=str(out)),
        },
    )
    messages = [
        entry.user_message for entry in instance.all_logs(result.run_id) if entry.user_message
    ]
    return result, messages


def mosaic_path(out: Path) -> Path:
    return OutputStore(base_dir=str(out)).path(MOSAIC, window_of("tumaco|2019-12-01"))


def read_raster(path: Path) -> tuple:
    with rasterio.open(path) as src:
        return src.descriptions, src.transform, src.read()


def test_band_stack_and_mosaic_through_faults_equal_a_clean_run(nginx, tmp_path):
    with FaultProxy(nginx.base_url) as clean_proxy:
        clean, _ = materialize_mosaic(
            tmp_path, served(l8_item(), clean_proxy.url), tmp_path / "clean"
        )
        assert clean.success and clean_proxy.count() > 0
    with FaultProxy(nginx.base_url) as proxy:
        proxy.add(
            Fault.status(503, times=2, retry_after=1, path="SR_B2"),
            Fault.reset(times=2, method="GET", skip=1, path="SR_B5"),
            Fault.status(429, times=1, method="GET", skip=1, path="QA_PIXEL"),
        )
        faulty, logs = materialize_mosaic(
            tmp_path, served(l8_item(), proxy.url), tmp_path / "faulty"
        )
        assert faulty.success
        assert proxy.count("status 503") == 2 and proxy.count("status 429") == 1
    faulty_raster = read_raster(mosaic_path(tmp_path / "faulty"))
    clean_raster = read_raster(mosaic_path(tmp_path / "clean"))
    assert faulty_raster[:2] == clean_raster[:2] and np.isfinite(clean_raster[2]).any()
    np.testing.assert_array_equal(faulty_raster[2], clean_raster[2])
    retries = [m for m in logs if "GDAL: " in m and "Retrying again" in m]
    assert any("503" in m and "SR_B2" in m for m in retries)
    assert any("429" in m and "QA_PIXEL" in m for m in retries)


def test_a_missing_file_fails_the_first_pixel_read_and_writes_nothing(nginx, tmp_path):
    with FaultProxy(nginx.base_url) as proxy:
        item = served(l8_item(), proxy.url)
        proxy.add(Fault.status(404, times=None, skip=1, method="GET", path="SR_B7"))
        result, _ = materialize_mosaic(tmp_path, item, tmp_path / "out")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    # band_stack opened every header (the 404 skips that first GET); the mosaic reads pixels.
    assert failure.step_key == "mosaic"
    message = failure.step_failure_data.error.message
    assert item.assets["SR_B7.TIF"].href in message and "tried 3 time(s)" in message
    target = mosaic_path(tmp_path / "out")
    assert not target.exists()
    assert not target.parent.exists() or not any(target.parent.iterdir())  # no temp leftovers


# --- Planetary Computer signing: tokens that expire during a long run ------------------------

BLOB_HOST = "http://pcgeocluster.blob.core.windows.net"
TOKEN_LIFETIME_S = 1.0


@pytest.fixture
def planetary_computer_storage(nginx, monkeypatch):
    """The real planetary-computer SDK, its token endpoint on loopback, Azure-like storage.

    Blob hrefs (``http://<account>.blob.core.windows.net/<container>/<blob>``; the SDK signs
    any scheme, it looks at the host) reach loopback through GDAL_HTTP_PROXY, the ordinary way
    to send GDAL through an HTTP proxy: curl hands the proxy the whole URL and never resolves
    the blob host. The proxy plays the storage: it checks the token's signature and expiry and
    forwards to nginx. Tokens die a second after issue while claiming an hour, as with a storage
    clock running ahead: the SDK's cache keeps handing out a token the storage refuses.
    """
    with (
        SasTokenServer(lifetime_s=TOKEN_LIFETIME_S, advertised_lifetime_s=3600) as token_service,
        FaultProxy(nginx.base_url, sas_key=token_service.key) as storage,
    ):
        monkeypatch.setenv("PC_SDK_SAS_URL", token_service.sas_url)
        monkeypatch.setenv("GDAL_HTTP_PROXY", storage.proxy_address)
        monkeypatch.setattr(pc_sas, "TOKEN_CACHE", {})
        PcSettings.get.cache_clear()  # the SDK reads its settings once per process
        yield token_service, storage
        PcSettings.get.cache_clear()


def test_signing_once_when_the_graph_is_built_fails_a_long_run(planetary_computer_storage):
    """What load.py did before: odc-stac's patch_url signs while building the graph."""
    token_service, storage = planetary_computer_storage
    item = served(l8_item(), lambda path: f"{BLOB_HOST}/{path}")
    lazy = odc.stac.load(
        [item],
        bands=["SR_B4.TIF"],
        crs=f"EPSG:{item.properties['proj:epsg']}",
        resolution=450,
        chunks={"x": 256, "y": 256},  # lazy: read at compute time
        patch_url=planetary_computer.sign,
    )
    time.sleep(TOKEN_LIFETIME_S + 0.2)  # the compute starts after the tokens died
    with pytest.raises(rasterio.errors.RasterioIOError, match="403"):
        lazy.compute(scheduler="single-threaded")
    assert storage.count("refused (expired)") >= 1


def test_a_long_run_re_signs_when_tokens_expire(planetary_computer_storage, clean_l8, caplog):
    token_service, storage = planetary_computer_storage
    item = served(l8_item(), lambda path: f"{BLOB_HOST}/{path}")
    signer = StacSource(str(SHARED_DATA), sign="planetary-computer").href_signer()
    # Every block read waits 50 ms (the preflight's header reads excepted): one thread reads
    # for longer than a token lives.
    storage.add(Fault.delay(0.05, times=None, method="GET", skip=8))
    with caplog.at_level(logging.WARNING):
        stack = load_band_stack([item], aoi_of(item), L8_SETTINGS, href_signer=signer, remote=FAST)
        started = time.monotonic()
        result = stack.compute(scheduler="single-threaded")
        elapsed = time.monotonic() - started
    xr.testing.assert_identical(result, clean_l8)
    assert elapsed > 2 * TOKEN_LIFETIME_S  # the reads did outlive the tokens
    refused = storage.count("refused (expired)")
    assert refused >= 1 and token_service.issued >= 2
    # GDAL reports a refused block read as "Read failed" (the 403 is in its debug output
    # only), so the reader renews the token on any failure of a signed read.
    renewals = [m for m in remote_messages(caplog).splitlines() if "freshly signed URL" in m]
    assert renewals
    # Every refused read was read again with a new token and succeeded: no attempt ran out.
    assert not any("attempt 3 of 3" in m for m in renewals)
    assert "sig=" not in caplog.text  # tokens stay out of the logs


def test_the_planetary_computer_signer_renews_only_the_rejected_token(planetary_computer_storage):
    token_service, _ = planetary_computer_storage
    signer = StacSource(str(SHARED_DATA), sign="planetary-computer").href_signer()
    href = f"{BLOB_HOST}/{Path(L8_008059.name) / RED}"
    first = signer(href)
    assert signer(href) == first and token_service.issued == 1  # the SDK caches the token
    signer.renew(f"{href}?st=x&se=y&sp=rl&sig=someone-else")  # not the cached one: kept
    assert signer(href) == first
    signer.renew(first)
    second = signer(href)
    assert second != first and token_service.issued == 2


def test_remote_read_settings_are_validated():
    with pytest.raises(GeoclusterError, match="attempts"):
        RemoteReadSettings(attempts=0)
    with pytest.raises(GeoclusterError, match="timeout_s"):
        RemoteReadSettings(timeout_s=0)
    options = FAST.gdal_options()
    assert options["GDAL_HTTP_MAX_RETRY"] == "2" and options["GDAL_HTTP_TIMEOUT"] == "1"
    if tuple(int(p) for p in rasterio.__gdal_version__.split(".")[:2]) >= (3, 10):
        assert options["GDAL_HTTP_RETRY_CODES"] == "429,500,502,503,504"  # never 403


def test_read_settings_are_part_of_the_stac_resource_not_the_run_config():
    resource = StacCatalog(read_max_retries=7, read_attempts=4)
    assert resource.read_settings() == RemoteReadSettings(max_retries=7, attempts=4)
    assert np.isclose(resource.read_settings().timeout_s, 60.0)
