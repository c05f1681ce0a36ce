"""Where every asset's output lives: one file or folder per asset and partition.

Layout: ``<base_dir>/<asset>/<aoi>/<date><suffix>``, e.g.
``geocluster_output/mosaic/demo/2023-06-01.tif`` or ``.../clusters/demo/2023-06-01/``.
Assets write their own outputs through the plain modules' writers (atomically) and reopen
their inputs with the plain modules' readers; this resource only says where.

A run holds its partition's lock (``<base_dir>/.locks/<aoi>/<date>.lock``) from its first step to
its end, so two runs of one partition never interleave: the second waits, and neither reports
scores computed from the other's products. The runs execute in one process
(`in_process_executor`), which is what lets one lock span every step of a run.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from .. import object_store
from ..blocks import CHUNK_SIZE
from ..products.stac_items import stored_item_count
from ..storage import (
    check_writable,
    claim_output_root,
    exclusive_lock,
    is_remote,
    local_state,
    output_location,
    recover_interrupted,
)
from .partitions import DATE_WINDOWS, PartitionWindow, date_partitions, split_key
from .resources import DEFAULT_OUTPUT, ENV_OUTPUT, ENV_PUBLIC_URL, at_load, output_root
from .run_health import tag_this_process

log = logging.getLogger(__name__)

_OUTPUT_AT_LOAD = at_load(ENV_OUTPUT, os.path.abspath(DEFAULT_OUTPUT))

#: The run tag Dagster gives a run of one partition (for this graph: 'aoi|date').
PARTITION_TAG = "dagster/partition"


@dataclass(frozen=True)
class Product:
    """An asset's stored form: its name and the suffix of its file ('' for a folder)."""

    asset: str
    suffix: str


STAC_ITEMS = Product("stac_items", ".json")
BAND_STACK = Product("band_stack", ".json")
MOSAIC = Product("mosaic", ".tif")
GEOTIFF = Product("geotiff", "")
CLUSTERS = Product("clusters", "")
DIAGNOSTICS = Product("diagnostics", "")
CLUSTER_MODEL = Product("cluster_model", "")
CLUSTER_CHANGE = Product("cluster_change", "")
ACCURACY = Product("accuracy", "")
STAC_ITEM = Product("stac_item", ".json")
REPORT = Product("report", ".html")

#: Each AOI x date asset's product, by asset name, in the order a run writes them.
PRODUCTS = {
    p.asset: p
    for p in (
        STAC_ITEMS,
        BAND_STACK,
        MOSAIC,
        GEOTIFF,
        CLUSTERS,
        DIAGNOSTICS,
        CLUSTER_CHANGE,
        ACCURACY,
    )  # fmt: skip
}


class OutputStore(dg.ConfigurableResource):  # type: ignore[type-arg]
    # The docstring, with where runs write: the launchpad shows it above the fields.
    __doc__ = "The output root every asset writes under and reads its inputs from." + (
        _OUTPUT_AT_LOAD
    )

    base_dir: str | None = Field(
        default=None,
        description="Output root: a folder (Dask workers must reach it at the same path) or "
        "s3://bucket/prefix (credentials and endpoint from the AWS_* environment) or "
        "az://container/prefix (from AZURE_STORAGE_*). Unset: env GEOCLUSTER_OUTPUT, else "
        "./geocluster_output." + _OUTPUT_AT_LOAD,
    )
    public_url: str | None = Field(
        default=None,
        description="Where the output root is published for people to read (e.g. "
        "https://data.example.org/geocluster): the reports' file links point there, so that "
        "they work in a report sent on its own. Unset: env GEOCLUSTER_PUBLIC_URL, else links "
        "relative to the report.",
    )
    chunk_size: int = Field(
        default=CHUNK_SIZE, description="Chunk edge (pixels) when reading stored rasters back."
    )
    lock_timeout_s: float = Field(
        default=3600.0,
        description="How long a run waits for another run of the same partition to finish, seconds.",
    )

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[OutputStore]:
        run = context.run
        if run is not None and context.instance is not None:
            tag_this_process(context.instance, run.run_id)  # see run_health: killed runs
        # Before any step: a store this process cannot use is refused in one line, and a root
        # of another kind of date window is refused, never overwritten.
        check_writable(self.root(), "outputs.base_dir (env GEOCLUSTER_OUTPUT)")
        claim_output_root(self.root(), DATE_WINDOWS)
        key = run.tags.get(PARTITION_TAG) if run is not None else None
        if run is None or key is None:  # not a run of one partition
            yield self
            return
        # An AOI x date partition, or an AOI's reference model (partitioned by AOI only).
        aoi_id, name = split_key(key) if "|" in key else (key, "cluster_model")
        say = (context.log or log).warning  # the run is held up: say so even in a quiet CLI
        with exclusive_lock(
            local_state(self.root()) / ".locks" / aoi_id / f"{name}.lock",
            what=f"Partition {key}",
            holder=f"run {run.run_id}",
            timeout_s=self.lock_timeout_s,
            on_wait=say,
        ):
            yield self

    def root(self) -> Path:
        """The output root, resolved when a run uses it (see `resources`)."""
        if self.base_dir:
            return output_location(self.base_dir, "outputs.base_dir")
        return output_root()

    def published_at(self) -> str | None:
        """Where the output root is published (``public_url``, env GEOCLUSTER_PUBLIC_URL)."""
        return self.public_url or os.environ.get(ENV_PUBLIC_URL) or None

    def path(self, product: Product, window: PartitionWindow) -> Path:
        """Where ``product`` of the partition is (or will be) written."""
        return self.root() / product.asset / window.aoi_id / f"{window.date_key}{product.suffix}"

    def of_aoi(self, product: Product, aoi_id: str) -> Path:
        """Where a product partitioned by AOI only is written: ``<base_dir>/<asset>/<aoi>``."""
        return self.root() / product.asset / f"{aoi_id}{product.suffix}"

    def read_of_aoi(self, product: Product, aoi_id: str) -> Path:
        """Where a product partitioned by AOI only is read: on object storage, the version its
        pointer names (the written path while it was never published)."""
        path = self.of_aoi(product, aoi_id)
        return _current(path, product) or path

    def dates_with(self, product: Product, aoi_id: str) -> list[str]:
        """The date partitions of ``aoi_id`` whose ``product`` is on disk, sorted. Files of
        another date-window setting (keys that are not partitions now) are left out."""
        folder = self.root() / product.asset / aoi_id
        if not folder.is_dir():
            return []
        keys = (
            path.name.removesuffix(product.suffix)
            for path in folder.iterdir()
            if not path.name.startswith(".") and path.name.endswith(product.suffix)
        )
        return sorted(key for key in keys if date_partitions.has_partition_key(key))

    def found_no_imagery(self, window: PartitionWindow) -> bool:
        """Whether the partition's search found no scene (its stac_items product lists none).
        False when it was never searched: the step then fails on its missing input."""
        searched = self.located(STAC_ITEMS, window)
        return searched is not None and stored_item_count(searched) == 0

    def present(self, names: Iterable[str], window: PartitionWindow) -> list[str]:
        """Which of the partition's products (asset names, see :data:`PRODUCTS`) are on disk."""
        return [name for name in names if self.path(PRODUCTS[name], window).exists()]

    def located(self, product: Product, window: PartitionWindow) -> Path | None:
        """Where the partition's ``product`` is read (on object storage, the version its
        pointer names); None when it was never written."""
        path = self.path(product, window)
        if is_remote(path):
            return _current(path, product)
        recover_interrupted(path)  # a run killed while swapping the folder in
        return path if path.exists() else None

    def existing(self, product: Product, window: PartitionWindow) -> Path:
        """The path of an upstream output, refused with what to do when it was never written."""
        located = self.located(product, window)
        if located is None:
            path = self.path(product, window)
            raise dg.Failure(
                description=(
                    f"{product.asset} for partition {window.key} is missing at {path}: "
                    f"materialize {product.asset} for this partition first (or check `base_dir`)."
                )
            )
        return located


def _current(path: Path, product: Product) -> Path | None:
    """On object storage, where the product at ``path`` is read: the version a folder's
    pointer names, a file itself; None when it was never published (and on a disk)."""
    if not is_remote(path):
        return None
    located = object_store.location(str(path), folder=not product.suffix)
    return object_store.as_path(located) if located is not None else None
