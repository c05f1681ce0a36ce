"""The stac_items product of a partition: the scenes its search found, as an ItemCollection.

A window without a scene is not an error (a cloudy month has none): the empty search is stored,
so it is on record, and the assets after it write nothing (their materializations say "no
imagery"). The provider's hrefs are kept as they
are (unsigned, absolute): they are signed again when read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pystac
from shapely.geometry.base import BaseGeometry

from ..errors import NoItemsFound
from ..quality import Judgement, judge_scenes
from ..search import SearchSettings, StacSource, cloud_cover, search_items
from ..storage import write_json
from .described import Detail, Facts, Markdown, Measure

#: The version of what this product's writer makes: raise it when a release changes its
#: files or numbers, so that Dagster shows the partitions made before as stale (code_version).
VERSION = "1"


@dataclass(frozen=True)
class StacItemsFacts(Facts):
    """The scenes one search found, and why there are none when there are none."""

    items: pystac.ItemCollection
    collection: str
    source: str
    """The STAC API or catalog searched."""
    no_imagery: str = ""
    """Why the window has no scene (empty when it has), and which products are stale."""
    where: str = ""

    def cloud_covers(self) -> list[float]:
        return [c for c in map(cloud_cover, self.items) if c is not None]

    def measures(self) -> list[Measure]:
        clouds = self.cloud_covers()
        return [
            Measure(
                "item_count",
                len(self.items),
                "scenes",
                "scenes in the window that passed the filters",
            ),
            Measure(
                "mean_cloud_cover_pct",
                sum(clouds) / len(clouds) if clouds else None,
                "%",
                "mean eo:cloud_cover of the scene footprints (lower is better)",
            ),
        ]

    def details(self) -> dict[str, Detail]:
        rows = [
            f"| {i.id} | {i.datetime:%Y-%m-%d %H:%M} | {i.properties.get('eo:cloud_cover', 'n/a')} |"
            for i in self.items
        ]
        table = "| item | acquired (UTC) | cloud % |\n|---|---|---|\n" + "\n".join(rows)
        return {
            "collection": self.collection,
            "source": self.source,
            **({"no_imagery": self.no_imagery} if self.no_imagery else {}),
            "items": Markdown(table),
        }

    def warnings(self) -> list[str]:
        if not self.no_imagery:
            return []
        return [
            f"No imagery for {self.where}: {self.no_imagery} The assets downstream write nothing."
        ]

    def judge(self) -> Judgement:
        return judge_scenes(len(self.items), self.cloud_covers(), self.no_imagery)

    def data_version(self) -> str:
        """The scenes found, by source, collection, id and last update: the same search
        finding the same scenes gives the same version (signed hrefs, which change with each
        search, are left out); a new or reprocessed scene gives a new one."""
        scenes = sorted(
            (
                item.collection_id or "",
                item.id,
                str(item.properties.get("updated") or item.properties.get("datetime") or ""),
            )
            for item in self.items
        )
        text = json.dumps([self.source, self.collection, scenes])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_stac_items(
    source: StacSource,
    settings: SearchSettings,
    aoi: BaseGeometry,
    start: datetime,
    end: datetime,
    path: Path,
    *,
    where: str,
    earlier_products: Sequence[str] = (),
) -> StacItemsFacts:
    """Search ``source`` for the scenes over ``aoi`` from ``start`` to ``end`` that pass
    ``settings`` and store them at ``path`` (an empty collection when there are none).

    ``earlier_products`` names the partition's products an earlier search left: when this one
    finds nothing they are kept (nothing replaces a product with nothing) but named stale;
    ``where`` names the partition in that message."""
    no_imagery = ""
    try:
        items = search_items(
            source,
            collection=settings.collection,
            geometry=aoi,
            start=start,
            end=end,
            max_cloud_cover=settings.max_cloud_cover,
            max_items=settings.max_items,
        )
    except NoItemsFound as err:
        items, no_imagery = pystac.ItemCollection([]), str(err)
        if earlier_products:
            no_imagery += (
                f" The products of an earlier search ({', '.join(earlier_products)}) are kept but "
                "stale: they were made from scenes this search no longer finds."
            )
    write_json(items.to_dict(transform_hrefs=False), path)
    return StacItemsFacts(items, settings.collection, source.url, no_imagery, where)


def open_stac_items(path: Path) -> pystac.ItemCollection:
    """The items :func:`write_stac_items` stored."""
    return pystac.ItemCollection.from_dict(json.loads(path.read_text()))


def stored_item_count(path: Path) -> int:
    """How many items :func:`write_stac_items` stored, without building them (pystac's parse
    of a month's items takes 50 ms, and every step of a run asks whether there are any)."""
    return len(json.loads(path.read_text()).get("features", []))


def acquisition_days(items: Iterable[pystac.Item]) -> list[str]:
    """The days (YYYY-MM-DD, UTC) the items were acquired, each once, in order."""
    days = set()
    for item in items:
        when = item.datetime or item.common_metadata.start_datetime
        if when is not None:
            days.add(when.strftime("%Y-%m-%d"))
    return sorted(days)


def scenes_label(days: list[str]) -> str:
    """The acquisition days in a figure's title: each up to four, else how many and the span."""
    return f"scenes of {days_text(days)}" if days else "no scene"


def days_text(days: list[str]) -> str:
    """Acquisition days as a title lists them: each up to four, else how many and the span."""
    if not days:
        return "no scene"
    if len(days) <= 4:
        return ", ".join(days)
    return f"{len(days)} days, {days[0]} to {days[-1]}"
