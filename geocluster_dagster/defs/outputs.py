"""Where every asset's output lives: one file or folder per asset and partition.

Layout: ``<base_dir>/<asset>/<aoi>/<date><suffix>``, e.g.
``geocluster_output/geotiff/demo/2023-06-01.tif`` or ``.../clusters/demo/2023-06-01/``.
Assets write their own outputs through the plain modules' writers (atomically) and reopen
their inputs with the plain modules' readers; this resource only says where.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from ..blocks import CHUNK_SIZE
from ..storage import expand_path
from .partitions import PartitionWindow
from .resources import output_root


@dataclass(frozen=True)
class Product:
    """An asset's stored form: its name and the suffix of its file ('' for a folder)."""

    asset: str
    suffix: str


class OutputStore(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The output root every asset writes under and reads its inputs from."""

    base_dir: str | None = Field(
        default=None,
        description="Output root. Unset: env GEOCLUSTER_OUTPUT, else ./geocluster_output. Dask "
        "workers must reach it.",
    )
    chunk_size: int = Field(
        default=CHUNK_SIZE, description="Chunk edge (pixels) when reading stored rasters back."
    )

    def root(self) -> Path:
        """The output root, resolved when a run uses it (see `resources`)."""
        return expand_path(self.base_dir, "outputs.base_dir") if self.base_dir else output_root()

    def path(self, product: Product, window: PartitionWindow) -> Path:
        """Where ``product`` of the partition is (or will be) written."""
        return self.root() / product.asset / window.aoi_id / f"{window.date_key}{product.suffix}"

    def existing(self, product: Product, window: PartitionWindow) -> Path:
        """The path of an upstream output, refused with what to do when it was never written."""
        path = self.path(product, window)
        if not path.exists():
            raise dg.Failure(
                description=(
                    f"{product.asset} for partition {window.key} is missing at {path}: "
                    f"materialize {product.asset} for this partition first (or check `base_dir`)."
                )
            )
        return path
