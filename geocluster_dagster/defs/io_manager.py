"""IO manager: one file (or folder) per asset and partition, written atomically, read back lazily.

Layout: ``<base_dir>/<asset>/<aoi>/<date><ext>``, e.g.
``geocluster_output/geotiff/demo/2023-06-01.tif`` or ``.../clusters/demo/2023-06-01/``.
"""

from pathlib import Path
from typing import Any

import dagster as dg
import pystac
from pydantic import Field

from .. import products
from ..errors import GeoclusterError
from .partitions import split_key
from .resources import output_root

#: What each asset stores, so inputs can be reopened without guessing from the files.
STORED_KIND: dict[str, type] = {
    "stac_items": pystac.ItemCollection,
    "band_stack": products.BandStackRecipe,
    "mosaic": products.RasterOutput,
    "geotiff": products.RasterOutput,
    "clusters": products.ClusterProduct,
    "diagnostics": products.DiagnosticsProduct,
}

EXTENSION: dict[str, str] = {
    "stac_items": ".json",
    "band_stack": ".json",
    "mosaic": ".tif",
    "geotiff": ".tif",
    "clusters": "",
    "diagnostics": "",
}


class GeoclusterIOManager(dg.ConfigurableIOManager):
    """Stores every geocluster asset on disk under `base_dir`."""

    base_dir: str = Field(
        default_factory=lambda: str(output_root()),
        description="Output root; env GEOCLUSTER_OUTPUT sets the default. Dask workers must reach it.",
    )
    chunk_size: int = Field(
        default=1024, description="Chunk edge (pixels) when reading rasters back."
    )

    def path_for(self, asset: str, partition_key: str) -> Path:
        aoi_id, date_key = split_key(partition_key)
        return Path(self.base_dir) / asset / aoi_id / f"{date_key}{EXTENSION[asset]}"

    def _path(self, context: dg.OutputContext | dg.InputContext) -> tuple[str, Path]:
        asset = context.asset_key.path[-1]
        if asset not in STORED_KIND:
            raise dg.DagsterInvariantViolationError(
                f"GeoclusterIOManager does not store asset {asset!r}"
            )
        return asset, self.path_for(asset, context.partition_key)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        asset, path = self._path(context)
        try:
            facts = products.save(obj, path)
        except GeoclusterError as err:
            raise dg.Failure(description=str(err), metadata={"error": type(err).__name__}) from err
        metadata: dict[str, Any] = {"output_path": dg.MetadataValue.path(str(path))}
        for key, value in facts.items():
            metadata[key] = (
                dg.MetadataValue.json(value) if isinstance(value, (dict, list)) else value
            )
        if asset == "diagnostics":
            for name in obj.pngs:
                metadata[f"plot_{Path(name).stem}"] = dg.MetadataValue.path(str(path / name))
        if asset == "clusters":
            metadata["cluster_map_path"] = dg.MetadataValue.path(str(path / products.CLUSTER_MAP))
            metadata["signatures_path"] = dg.MetadataValue.path(str(path / products.SIGNATURES_CSV))
            sizes = obj.signatures[["cluster", "pixel_count", "area_ha", "fraction"]].round(4)
            metadata["cluster_sizes"] = dg.MetadataValue.md(_markdown_table(sizes))
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> Any:
        asset, path = self._path(context)
        if not path.exists():
            raise dg.Failure(
                description=(
                    f"{asset} for partition {context.partition_key} is missing at {path}: "
                    f"materialize {asset} for this partition first (or check `base_dir`)."
                )
            )
        return products.load(path, STORED_KIND[asset], chunks=self.chunk_size)


def _markdown_table(frame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])
