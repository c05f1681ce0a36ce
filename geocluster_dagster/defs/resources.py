"""Resources: where AOIs and imagery come from, where outputs go, and the Dask cluster.

A deployment says where things are with environment variables (GEOCLUSTER_STAC_URL, ...), or
with the resources' fields in the launchpad or run config. The fields default to None and are
resolved when a run uses them, not when the code location loads: run config that sets one field
of a resource (say `stac.timeout_s`) would otherwise replace the values the environment gave the
others, and the run would quietly fall back to the embedded demo. The demo is used only when
nothing at all names a source.
"""

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field

from ..aoi import AOI, load_registry
from ..errors import ConfigError, InvalidAOI
from ..remote import RemoteReadSettings, redact
from ..search import StacSource, is_url
from ..storage import expand_path, local_state, output_location

if TYPE_CHECKING:
    from distributed import Client

    from ..demo import DemoPaths

log = logging.getLogger(__name__)

DEMO = "demo"

ENV_OUTPUT = "GEOCLUSTER_OUTPUT"
ENV_AOI_REGISTRY = "GEOCLUSTER_AOI_REGISTRY"
ENV_STAC_URL = "GEOCLUSTER_STAC_URL"
ENV_STAC_SIGN = "GEOCLUSTER_STAC_SIGN"
ENV_DASK_SCHEDULER = "GEOCLUSTER_DASK_SCHEDULER"
ENV_PUBLIC_URL = "GEOCLUSTER_PUBLIC_URL"
#: The output root when nothing names one: a folder of the working directory.
DEFAULT_OUTPUT = "geocluster_output"


@dataclass(frozen=True)
class Setting:
    """A deployment setting's value and where it came from, for the run's log and metadata."""

    value: str
    origin: str

    def __str__(self) -> str:
        return f"{self.value} ({self.origin})"


def deployment_setting(configured: str | None, field: str, env: str, default: str) -> Setting:
    """``configured`` when the resource field is set, else env ``env``, else ``default``."""
    if configured:
        return Setting(configured, f"resource config {field}")
    if os.environ.get(env):
        return Setting(os.environ[env], f"env {env}")
    return Setting(default, f"default; set env {env} or {field}")


def at_load(env: str, unset: str) -> str:
    """What runs use when neither their run config nor the resource sets the field, as this
    code location sees it when it loads, for the launchpad: Dagster shows a resource's and a
    field's description beside its config, and reads them once, when the code location loads
    (a URL's query, which may hold a token, left out)."""
    value = os.environ.get(env)
    shown = f"{redact(value)} (env {env})" if value else unset
    return f" Runs of this code location use, unless their run config sets it: {shown}."


def output_root() -> Path:
    """Where outputs live: env GEOCLUSTER_OUTPUT (a folder, s3://bucket/prefix or
    az://container/prefix), else ./geocluster_output."""
    return output_location(os.environ.get(ENV_OUTPUT) or DEFAULT_OUTPUT, ENV_OUTPUT)


def demo_paths() -> "DemoPaths":
    """Build (once) and return the embedded demo: a synthetic scene made from real spectra."""
    from ..demo import build_demo

    return build_demo(local_state(output_root()) / "demo_catalog")


def default_of(settings_class: type, name: str) -> Any:
    """The default of field ``name`` of a plain settings dataclass: a resource field that feeds
    it takes its default from there, so each default has one source."""
    return {f.name: f.default for f in dataclasses.fields(settings_class)}[name]


_AOIS_AT_LOAD = at_load(ENV_AOI_REGISTRY, "the demo AOI")
_STAC_AT_LOAD = at_load(ENV_STAC_URL, "the demo catalog")


class AOIRegistry(dg.ConfigurableResource):  # type: ignore[type-arg]
    # The docstring, with where runs read the AOIs: the launchpad shows it above the fields.
    __doc__ = (
        "The areas of interest: a folder of GeoJSON files or one FeatureCollection file."
        + _AOIS_AT_LOAD
    )

    path: str | None = Field(
        default=None,
        description="Folder of *.geojson files or one FeatureCollection file; 'demo' = the embedded "
        "demo AOI. Unset: env GEOCLUSTER_AOI_REGISTRY, else the demo." + _AOIS_AT_LOAD,
    )
    auto_orient: bool = Field(
        default=False,
        description="Re-orient rings to RFC 7946 winding instead of refusing clockwise exteriors.",
    )

    def setting(self) -> Setting:
        return deployment_setting(self.path, "aoi_registry.path", ENV_AOI_REGISTRY, DEMO)

    def resolved_path(self) -> Path:
        path = self.setting().value
        return demo_paths().aoi_registry if path == DEMO else expand_path(path, "aoi_registry.path")

    def load(self) -> dict[str, AOI]:
        return load_registry(self.resolved_path(), auto_orient=self.auto_orient)

    def get(self, aoi_id: str) -> AOI:
        """The AOI ``aoi_id``; a malformed other entry of the registry does not stop it."""
        invalid: dict[str, InvalidAOI] = {}
        aois = load_registry(self.resolved_path(), auto_orient=self.auto_orient, invalid=invalid)
        if aoi_id in aois:
            return aois[aoi_id]
        if aoi_id in invalid:
            raise invalid[aoi_id]
        broken = f"; malformed entries: {', '.join(sorted(invalid))}" if invalid else ""
        raise InvalidAOI(
            f"AOI {aoi_id!r} is a partition but is not in the registry {self.resolved_path()} "
            f"(it has {sorted(aois)}{broken}). Restore it there, or delete the partition."
        )


class StacCatalog(dg.ConfigurableResource):  # type: ignore[type-arg]
    # The docstring, with where runs search: the launchpad shows it above the fields.
    __doc__ = (
        "Where to search for imagery: a STAC API, a static catalog, or an ItemCollection file."
        + _STAC_AT_LOAD
    )

    url: str | None = Field(
        default=None,
        description=(
            "STAC API root (e.g. https://planetarycomputer.microsoft.com/api/stac/v1), a local "
            "catalog.json / collection.json, an ItemCollection JSON file, or 'demo'. Unset: env "
            "GEOCLUSTER_STAC_URL, else the demo." + _STAC_AT_LOAD
        ),
    )
    sign: str | None = Field(
        default=None,
        description="'auto' signs Planetary Computer hrefs; 'planetary-computer' always; 'none' "
        "never. Unset: env GEOCLUSTER_STAC_SIGN, else 'auto'.",
    )
    max_retries: int = Field(
        default=default_of(StacSource, "max_retries"),
        description="Retries of a failed STAC API request (429/5xx).",
    )
    backoff_factor: float = Field(
        default=default_of(StacSource, "backoff_factor"),
        description="Exponential backoff factor between retries, seconds.",
    )
    timeout_s: float = Field(
        default=default_of(StacSource, "timeout_s"),
        description="Timeout of one STAC API request, seconds.",
    )
    page_size: int = Field(
        default=default_of(StacSource, "page_size"),
        description="Items per page of STAC API results.",
    )
    # Pixel reads: how to fetch the assets the catalog points at. They live here, not in the
    # run config, because they describe the servers, not the science: they never change outputs.
    read_max_retries: int = Field(
        default=default_of(RemoteReadSettings, "max_retries"),
        description="GDAL_HTTP_MAX_RETRY: GDAL's retries of one HTTP request on 429/5xx, timeouts, resets.",
    )
    read_retry_delay_s: float = Field(
        default=default_of(RemoteReadSettings, "retry_delay_s"),
        description="GDAL_HTTP_RETRY_DELAY: first delay between those retries, doubled each time; seconds.",
    )
    read_timeout_s: float = Field(
        default=default_of(RemoteReadSettings, "timeout_s"),
        description="GDAL_HTTP_TIMEOUT: seconds one HTTP request of a read may take.",
    )
    read_attempts: int = Field(
        default=default_of(RemoteReadSettings, "attempts"),
        description="Attempts per asset read (fresh signed URL, GDAL cache bypassed) for failures GDAL does not retry, e.g. truncated bodies, expired tokens.",
    )
    read_requester_pays: bool = Field(
        default=default_of(RemoteReadSettings, "requester_pays"),
        description="Read s3:// hrefs of requester-pays buckets, paying with the AWS_* credentials of the environment (USGS's usgs-landsat always is one).",
    )

    def setting(self) -> Setting:
        return deployment_setting(self.url, "stac.url", ENV_STAC_URL, DEMO)

    def source(self) -> StacSource:
        url = self.setting().value
        if url == DEMO:
            url = str(demo_paths().catalog)
        elif not is_url(url):
            url = str(expand_path(url, "stac.url"))
        return StacSource(
            url=url,
            sign=deployment_setting(self.sign, "stac.sign", ENV_STAC_SIGN, "auto").value,  # type: ignore[arg-type]
            max_retries=self.max_retries,
            backoff_factor=self.backoff_factor,
            timeout_s=self.timeout_s,
            page_size=self.page_size,
        )

    def read_settings(self) -> RemoteReadSettings:
        return RemoteReadSettings(
            max_retries=self.read_max_retries,
            retry_delay_s=self.read_retry_delay_s,
            timeout_s=self.read_timeout_s,
            attempts=self.read_attempts,
            requester_pays=self.read_requester_pays,
        )


#: How long a run waits for the Dask scheduler it is pointed at before it fails, seconds.
DASK_CONNECT_TIMEOUT_S = 30


class DaskCluster(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The Dask scheduler all lazy raster work runs on while an asset (or its IO) executes.

    By default the work runs on Dask's threaded scheduler in the run's own process: GDAL, numpy
    and scikit-learn release the GIL, so threads use every core with no serialization and no
    scheduler to start. `mode: local_cluster` starts a distributed LocalCluster for the run
    instead (dashboard, per-worker memory limits, process workers). With `scheduler_address`,
    work goes to that existing scheduler; its workers must reach the same paths (output root,
    local catalogs) as the Dagster process.
    """

    scheduler_address: str | None = Field(
        default=None,
        description="e.g. tcp://10.0.0.5:8786. Unset: env GEOCLUSTER_DASK_SCHEDULER, else this machine."
        + at_load(ENV_DASK_SCHEDULER, "threads in the run's process (no scheduler)"),
    )
    mode: Literal["threads", "local_cluster"] = Field(
        default="threads",
        description="Without a scheduler address: Dask's threaded scheduler in the run process "
        "('threads', fastest on one machine) or a distributed LocalCluster ('local_cluster').",
    )
    threads_per_worker: int | None = Field(
        default=None, description="Threads (per worker for local_cluster); None = all cores."
    )
    n_workers: int = Field(default=1, description="local_cluster: worker count.")
    processes: bool = Field(
        default=False,
        description="local_cluster: workers as processes (True) or threads in this process (False).",
    )
    memory_limit: str = Field(
        default="auto", description="local_cluster: memory limit per worker, e.g. '4GiB'."
    )
    dashboard: bool = Field(default=False, description="local_cluster: serve the Dask dashboard.")
    gdal_cache_mb: int = Field(
        default=256,
        description="GDAL block cache of this process (GDAL_CACHEMAX), MB. Every read is a whole "
        "window read once, so a small cache costs no speed; GDAL's default, 5% of RAM, only "
        "holds decoded tiles nobody reads again.",
    )

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator["DaskCluster"]:
        import rasterio

        with rasterio.Env(GDAL_CACHEMAX=self.gdal_cache_mb * 2**20):  # rasterio takes bytes
            with self._scheduler(context):
                yield self

    @contextlib.contextmanager
    def _scheduler(self, context: dg.InitResourceContext) -> Iterator[None]:
        import dask

        say = (context.log or log).info

        threads = self.threads_per_worker or os.cpu_count() or 1
        address = self.scheduler_address or os.environ.get(ENV_DASK_SCHEDULER)
        if address:
            from distributed import Client

            where = (
                "resource dask.scheduler_address"
                if self.scheduler_address
                else f"env {ENV_DASK_SCHEDULER}"
            )
            try:
                client = Client(address, timeout=f"{DASK_CONNECT_TIMEOUT_S}s")
            except (OSError, TimeoutError) as err:
                raise ConfigError(
                    f"Cannot reach the Dask scheduler {address} (set by {where}) within "
                    f"{DASK_CONNECT_TIMEOUT_S} s ({type(err).__name__}: {err}): start it "
                    "(`dask scheduler`, then `dask worker <address>`), correct the address, or "
                    f"unset it to compute in the run's own process."
                ) from err
            with client:
                # The workers read the products on an object store through GDAL themselves.
                client.register_plugin(gdal_endpoint_plugin(), name="geocluster-gdal-endpoint")
                say(
                    f"Dask: using scheduler {address} ({len(client.scheduler_info()['workers'])} workers)"
                )
                yield
            return
        if self.mode == "threads":
            with dask.config.set(scheduler="threads", num_workers=threads):
                say(f"Dask: threaded scheduler, {threads} threads")
                yield
            return
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=self.n_workers,
                threads_per_worker=threads,
                processes=self.processes,
                memory_limit=self.memory_limit,
                dashboard_address=":0" if self.dashboard else None,
            ) as cluster,
            Client(cluster) as client,
        ):
            client.register_plugin(gdal_endpoint_plugin(), name="geocluster-gdal-endpoint")
            if self.processes:
                _forward_worker_logs(client)
            say(
                f"Dask: local cluster {client.dashboard_link if self.dashboard else cluster.scheduler_address}"
            )
            yield


def _forward_worker_logs(client: "Client") -> None:
    """Worker processes log read retries to their own stderr; bring them to this process, where
    Dagster captures the `geocluster_dagster` logger (python_logs.managed_python_loggers).
    Thread workers share this process's loggers already, so forwarding would log twice; a shared
    scheduler would send every client the logs of every run, so it is not done there either."""
    from distributed.client import TOPIC_PREFIX_FORWARDED_LOG_RECORD

    client.forward_logging("geocluster_dagster", level=logging.INFO)
    # The client subscribes to the workers' log topic with a message it does not wait for;
    # until the scheduler has processed it, forwarded records are dropped. Wait for it, so a
    # retry logged by the first task is not lost.
    topic = f"{TOPIC_PREFIX_FORWARDED_LOG_RECORD}-forward-logging-geocluster_dagster"

    def subscribed(dask_scheduler: Any, topic: str = topic, client_id: str = client.id) -> bool:
        try:  # the scheduler's event broker has no public view of the subscribers
            return client_id in dask_scheduler._broker._topics[topic].subscribers
        except (AttributeError, KeyError):
            return True  # another distributed version: cannot tell, do not wait

    deadline = time.monotonic() + 10
    while not client.run_on_scheduler(subscribed) and time.monotonic() < deadline:
        time.sleep(0.05)


def gdal_endpoint_plugin() -> Any:
    """A Dask worker plugin that gives each worker's GDAL the object stores' settings of its own
    environment (an S3-compatible endpoint, Azure's account and key under GDAL's names:
    :func:`geocluster_dagster.object_store.configure_gdal`), also for workers that join later:
    they read the products of an ``s3://`` or ``az://`` output root themselves. The
    credentials stay in each worker's environment; none are sent."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class GdalEndpoint(WorkerPlugin):
        def setup(self, worker: Any) -> None:
            from ..object_store import configure_gdal

            configure_gdal()

    return GdalEndpoint()
