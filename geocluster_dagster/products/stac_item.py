"""The stac_item product of a partition: its report and its STAC Item in the output catalog.

The report (:mod:`.report`) is one HTML file with the figures embedded; the Item (:mod:`.catalog`)
lists every product of the partition as an asset, with checksums, bands, units, classes,
provenance and the scenes it was derived from, and joins the output catalog.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import rasterio
from shapely.geometry.base import BaseGeometry

from ..storage import remove_quietly
from .accuracy import current_accuracy
from .catalog import (
    CATALOG_DIR,
    PartitionProducts,
    item_path,
    software_versions,
    withdraw_item,
    write_item,
)
from .clusters import SUMMARY as CLUSTERS_SUMMARY
from .described import Detail, Facts, FilePath, Measure
from .geotiff import BANDS
from .report import Place, ReportInputs, write_report
from .stac_items import open_stac_items

#: The version of what this product's writer makes: raise it when a release changes its
#: files or numbers, so that Dagster shows the partitions made before as stale (code_version).
# 2: grids, classification v2 slugs, eo/raster v1.1, confidence
# 3: the report says the place, dates, software, settings and units; the change's layers
VERSION = "3"


@dataclass(frozen=True)
class PartitionFolders:
    """Where the partition's products are: the inputs of its report and Item."""

    stac_items: Path
    mosaic: Path
    geotiff: Path
    clusters: Path
    diagnostics: Path
    change: Path | None = None
    """The cluster_change folder, when the partition was compared with an earlier date."""
    accuracy: Path | None = None
    """The accuracy folder, when the map was assessed (published only if it assessed this
    very map: :func:`geocluster_dagster.products.accuracy.current_accuracy`)."""


@dataclass(frozen=True)
class StacItemFacts(Facts):
    """The Item and report written, and what the Item holds."""

    item: Path
    report: Path
    catalog: Path
    document: dict[str, Any]

    def measures(self) -> list[Measure]:
        links = self.document["links"]
        return [
            Measure("asset_count", len(self.document["assets"]), "files", "products in the Item"),
            Measure(
                "derived_from",
                len([link for link in links if link["rel"] == "derived_from"]),
                "scenes",
                "source scenes the Item links to (derived_from)",
            ),
            Measure("report_mb", self.report.stat().st_size / 1e6, "MB", "the HTML report"),
        ]

    def details(self) -> dict[str, Detail]:
        return {
            "catalog": FilePath(self.catalog),
            "report": FilePath(self.report),
            "assets": ", ".join(self.document["assets"]),
        }


def write_stac_item(
    folders: PartitionFolders,
    *,
    aoi_id: str,
    date_key: str,
    start: datetime,
    end: datetime,
    aoi: BaseGeometry,
    search: str,
    title: str,
    report: Path,
    output_root: Path,
    place_name: str = "",
    public_url: str | None = None,
) -> StacItemFacts:
    """Write the partition's report at ``report`` and its Item into the catalog under
    ``output_root``, from the products in ``folders`` (the settings that made them are read
    from their own tags and summaries, so the Item says what is on disk). ``place_name`` names
    the AOI in the report; ``public_url`` is where ``output_root`` is published, for the
    report's links."""
    with rasterio.open(str(folders.geotiff / BANDS)) as src:
        tags = src.tags()
    clusters = json.loads((folders.clusters / CLUSTERS_SUMMARY).read_text())
    accuracy = current_accuracy(folders.accuracy, folders.clusters)
    lineage = {
        "mask_flags": tags.get("mask_flags", ""),
        "composite": tags.get("composite", ""),
        "collection": tags.get("collection", ""),
        "indices": tags.get("indices", ""),
        "model": clusters.get("model"),
        "algorithm": clusters.get("algorithm"),
        "n_clusters": clusters.get("n_clusters"),
        "features": clusters.get("features"),
        "min_mapping_unit": clusters.get("min_mapping_unit"),
    }
    last_day = end - timedelta(days=1)
    written = write_report(
        ReportInputs(
            title=title,
            items=folders.stac_items,
            mosaic=folders.mosaic,
            geotiff=folders.geotiff,
            clusters=folders.clusters,
            diagnostics=folders.diagnostics,
            change=folders.change,
            accuracy=accuracy,
            place=Place(aoi_id, place_name or aoi_id, aoi),
            window=f"{start:%Y-%m-%d} to {last_day:%Y-%m-%d} (inclusive)",
            made_with=lineage,
            software=software_versions(),
            source=search,
            output_root=output_root,
            public_url=public_url,
        ),
        report,
    )
    products = PartitionProducts(
        aoi_id=aoi_id,
        date_key=date_key,
        start=start,
        end=end,
        aoi=aoi,
        geotiff=folders.geotiff,
        clusters=folders.clusters,
        diagnostics=folders.diagnostics,
        change=folders.change,
        accuracy=accuracy,
        report=written,
        sources=list(open_stac_items(folders.stac_items)),
        search=search,
        lineage=lineage,
    )
    path = write_item(products, output_root)
    return StacItemFacts(
        item=path,
        report=written,
        catalog=output_root / CATALOG_DIR / "catalog.json",
        document=json.loads(path.read_text()),
    )


def open_stac_item(output_root: Path, aoi_id: str, date_key: str) -> dict[str, Any] | None:
    """The partition's Item as published in the catalog under ``output_root`` (None while it
    is withdrawn: a product step rewrote what it described)."""
    path = item_path(output_root, aoi_id, date_key)
    return json.loads(path.read_text()) if path.exists() else None


def withdraw_stac_item(output_root: Path, aoi_id: str, date_key: str, report: Path) -> bool:
    """Take the partition's Item out of the catalog and remove its report: a run is rewriting
    the products they describe (the run's stac_item step publishes them again). True if there
    was either."""
    withdrawn = withdraw_item(output_root, aoi_id, date_key)
    if report.exists():
        remove_quietly(report)
        withdrawn = True
    return withdrawn
