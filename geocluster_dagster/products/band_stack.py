"""The band stack as stored: the recipe that reopens it lazily, not a copy of its pixels.

The stack is a view of the source COGs (masked, scaled, on one grid); storing the items, AOI,
grid/mask and read settings instead of its pixels means the next stage reads each source pixel
exactly once, and a partition costs kilobytes on disk instead of gigabytes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pystac
import pystac.errors
import shapely
import xarray as xr
from shapely.geometry.base import BaseGeometry

from ..budget import TIMINGS, Estimate, estimate_seconds, refuse_full_disk
from ..errors import AssetReadError
from ..load import LoadSettings, load_band_stack
from ..remote import RemoteReadSettings
from ..search import StacSource
from ..storage import write_json
from .described import Detail, Facts, Json, Measure

#: The version of what this product's writer makes: raise it when a release changes its
#: files or numbers, so that Dagster shows the partitions made before as stale (code_version).
VERSION = "1"


@dataclass
class BandStackRecipe:
    """What rebuilds a band stack lazily: the items, AOI, grid/mask and read settings."""

    items: pystac.ItemCollection
    aoi: BaseGeometry
    settings: LoadSettings
    source: StacSource | None = None
    """Where the items came from: decides read-time signing (Planetary Computer)."""
    remote: RemoteReadSettings = field(default_factory=RemoteReadSettings)

    def open(self, *, preflight: bool = False) -> xr.Dataset:
        """The lazy (time, y, x) stack of :func:`geocluster_dagster.load.load_band_stack`; reads
        no pixels, and with ``preflight`` opens every asset's header first."""
        stack = load_band_stack(
            self.items.items,
            self.aoi,
            dataclasses.replace(self.settings, preflight=preflight),
            href_signer=self.source.href_signer() if self.source else None,
            remote=self.remote,
        )
        # Provenance for the GeoTIFF tags downstream.
        stack.attrs["load_config"] = json.dumps(dataclasses.asdict(self.settings), sort_keys=True)
        return stack

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "geocluster_dagster.BandStackRecipe",
            "aoi": shapely.geometry.mapping(self.aoi),
            "settings": dataclasses.asdict(self.settings),
            "source": dataclasses.asdict(self.source) if self.source else None,
            "remote": dataclasses.asdict(self.remote),
            "items": self.items.to_dict(transform_hrefs=False),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BandStackRecipe:
        def tuples(values: dict[str, Any]) -> dict[str, Any]:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}

        return cls(
            items=pystac.ItemCollection.from_dict(data["items"]),
            aoi=shapely.geometry.shape(data["aoi"]),
            settings=LoadSettings(**tuples(data["settings"])),
            source=StacSource(**data["source"]) if data.get("source") else None,
            remote=RemoteReadSettings(**tuples(data["remote"])),
        )


@dataclass(frozen=True)
class BandStackFacts(Facts):
    """The lazy stack the stored recipe opens, its size, and how long its run should take."""

    stack: xr.Dataset
    estimate: Estimate
    seconds: float
    """The partition's whole run, estimated from this machine's timed runs (:attr:`how`)."""
    how: str

    def measures(self) -> list[Measure]:
        cost, geobox = self.estimate, self.stack.odc.geobox
        unit = "m" if geobox.crs.units[0] in ("metre", "meter", "m") else str(geobox.crs.units[0])
        return [
            Measure(
                "time_slices", self.stack.sizes["time"], "dates", "acquisition dates composited"
            ),
            Measure(
                f"pixel_size_{unit}", abs(geobox.resolution.x), unit, "edge of one output pixel"
            ),
            Measure("grid_pixels", cost.grid_pixels, "px", "the grid: the AOI's bounding box"),
            Measure("covered_pixels", cost.covered_pixels, "px", "AOI pixels some scene covers"),
            Measure("read_mb", cost.bytes_read / 1e6, "MB", "decoded bytes the mosaic will read"),
            Measure(
                "products_mb", cost.bytes_written / 1e6, "MB", "uncompressed size of the products"
            ),
            Measure("disk_needed_mb", cost.disk_needed / 1e6, "MB", "free space the writes need"),
            Measure(
                "estimated_run_s", self.seconds, "s", f"the partition's whole run, from {self.how}"
            ),
        ]

    def details(self) -> dict[str, Detail]:
        stack, geobox = self.stack, self.stack.odc.geobox
        return {
            "bands": stack.attrs["bands"],
            "scenes_per_slice": Json(
                {
                    str(t)[:10]: ids.split(",")
                    for t, ids in zip(stack.time.values, stack.item_ids.values, strict=True)
                }
            ),
            "crs": str(geobox.crs),
            "shape": f"{geobox.shape.y} x {geobox.shape.x} px (rows x columns)",
            "mask": stack.attrs["mask_flags"] or "off",
        }

    def describe_cost(self) -> str:
        """The partition's size and expected time, in one line for the run's log."""
        cost = self.estimate
        return (
            f"{cost.grid_pixels:,} px x {cost.time_slices} date(s), "
            f"{cost.bytes_read / 1e6:,.0f} MB to read: about {self.seconds:,.0f} s ({self.how})"
        )


def write_band_stack(
    recipe: BandStackRecipe,
    path: Path,
    *,
    output_root: Path | None = None,
    where: str = "",
) -> BandStackFacts:
    """Open the stack ``recipe`` describes (every asset's header checked first), then store the
    recipe at ``path``; returns the lazy stack, whose attributes describe what was found
    (``estimate``: its size, see :mod:`geocluster_dagster.budget`).

    With ``output_root``, a partition whose writes would not fit on its disk is refused before
    the recipe replaces an earlier one (``where`` names the partition in that message), and its
    time is estimated from the runs timed there."""
    stack = recipe.open(preflight=True)
    cost = Estimate(**stack.attrs["estimate"])
    if output_root is not None:
        refuse_full_disk(cost, output_root, where=where)
    seconds, how = estimate_seconds(
        output_root / TIMINGS if output_root is not None else None, cost.work_mpx
    )
    # The partition's measured size goes with the recipe, for the record (budget.Estimate).
    write_json({**recipe.to_dict(), "estimate": stack.attrs.get("estimate")}, path)
    return BandStackFacts(stack, cost, seconds, how)


def stored_estimate(path: Path) -> Estimate | None:
    """The size of the partition the recipe at ``path`` was measured at, if it records one."""
    estimate = json.loads(path.read_text()).get("estimate")
    return Estimate(**estimate) if estimate else None


def stored_aoi(path: Path) -> BaseGeometry:
    """The lon/lat AOI the recipe at ``path`` reads: the one the partition's products are
    clipped to (the registry may have changed since)."""
    return shapely.geometry.shape(json.loads(path.read_text())["aoi"])


def open_band_stack(path: Path) -> xr.Dataset:
    """The lazy (time, y, x) stack of the recipe stored at ``path``; reads no pixels."""
    try:
        recipe = BandStackRecipe.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, pystac.errors.STACTypeError) as err:
        raise AssetReadError(
            f"{path} is not a band stack written by this version of geocluster_dagster "
            f"({err}): materialize band_stack for this partition again."
        ) from err
    return recipe.open()
