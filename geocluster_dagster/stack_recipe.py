"""The band stack as stored: the recipe that reopens it lazily, not a copy of its pixels.

The stack is a view of the source COGs (masked, scaled, on one grid); storing the items, AOI,
grid/mask and read settings instead of its pixels means the next stage reads each source pixel
exactly once, and a partition costs kilobytes on disk instead of gigabytes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pystac
import pystac.errors
import shapely
import xarray as xr
from shapely.geometry.base import BaseGeometry

from .errors import AssetReadError
from .load import LoadSettings, load_band_stack
from .remote import RemoteReadSettings
from .search import StacSource
from .storage import write_json


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


def write_band_stack(
    recipe: BandStackRecipe,
    path: Path,
    validate: Callable[[xr.Dataset], None] | None = None,
) -> xr.Dataset:
    """Open the stack ``recipe`` describes (every asset's header checked first), then store the
    recipe at ``path``; returns the lazy stack, whose attributes describe what was found
    (``estimate``: its size, see :mod:`geocluster_dagster.budget`). ``validate(stack)`` runs
    before the recipe replaces an earlier one: raising there leaves the earlier one in place."""
    stack = recipe.open(preflight=True)
    if validate is not None:
        validate(stack)
    # The partition's measured size goes with the recipe, for the record (budget.Estimate).
    write_json({**recipe.to_dict(), "estimate": stack.attrs.get("estimate")}, path)
    return stack


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
