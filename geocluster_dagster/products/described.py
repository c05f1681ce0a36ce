"""How a product's facts describe themselves to a person: numbers with their units and meaning,
and the entries read beside them (markdown tables and figures, JSON, file paths).

These are plain values; the Dagster layer turns them into metadata
(:func:`geocluster_dagster.defs.readable.metadata_of`). Shares are named after what they are a
share of, one name per denominator (:data:`DENOMINATORS`):

* ``..._share_of_aoi``: of the pixels whose centre lies inside the AOI polygon;
* ``..._share_of_map``: of the pixels the cluster map labels (clear pixels of the AOI);
* ``..._share_of_compared``: of the pixels both dates' maps label (cluster_change);
* ``..._share_of_grid``: of the pixels of the output grid, the AOI's bounding box (a band's
  valid pixels in the geotiff).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

DENOMINATORS = {
    "aoi": "pixels whose centre lies inside the AOI polygon",
    "map": "pixels the cluster map labels (the clear pixels of the AOI)",
    "compared": "pixels both dates' maps label",
    "grid": "pixels of the output grid (the AOI's bounding box)",
}


@dataclass(frozen=True)
class Measure:
    """One number of a materialization, and how to read it."""

    key: str
    """The metadata key; its unit or denominator is in the name (``resolution_m``)."""
    value: float | int | str | None
    unit: str = ""
    meaning: str = ""
    """What it measures, which way is better, what it is a share of."""
    digits: int = 3
    """Significant digits a float keeps (counts and strings are shown whole)."""
    trend: bool = True
    """Recorded as a number, so the UI plots it across partitions; False: in the table only
    (e.g. a sample size, which is a setting rather than an outcome)."""

    def shown(self) -> float | int | str | None:
        value = self.value
        if isinstance(value, float) and math.isfinite(value) and value != 0:
            decimals = self.digits - 1 - math.floor(math.log10(abs(value)))
            return round(value, decimals) if decimals > 0 else int(round(value))
        return value


@dataclass(frozen=True)
class Markdown:
    """Text a person reads formatted: a table, a list, a figure as a data-URI image."""

    text: str


@dataclass(frozen=True)
class Json:
    """A nest of dicts and lists, shown folded."""

    value: Any


@dataclass(frozen=True)
class FilePath:
    """A file or folder of the product, shown as a path to copy."""

    path: Path


#: An entry beside the numbers: plain text and numbers are shown as they are.
Detail = str | int | float | Markdown | Json | FilePath


class Facts:
    """What a product's writer returns: the facts, and how a person reads them.

    Each product's facts (``<Asset>Facts``) say which numbers to show (:meth:`measures`), what
    else to show beside them (:meth:`details`) and what a person should be warned of
    (:meth:`warnings`); the Dagster layer only turns these into metadata and log lines."""

    def measures(self) -> list[Measure]:
        return []

    def details(self) -> dict[str, Detail]:
        return {}

    def warnings(self) -> list[str]:
        return []

    def data_version(self) -> str | None:
        """A digest of what the product holds, the same whenever it holds the same (None: let
        the orchestrator derive one from the code and the inputs). A product whose version
        changes marks what was made from it as stale."""
        return None


def rounded(value: Any, digits: int = 4) -> Any:
    """Every float in a nest of dicts and lists kept to ``digits`` significant digits."""
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(item, digits) for item in value]
    if isinstance(value, float):
        return Measure("", value, digits=digits).shown()
    return value


def share(key: str, part: int, whole: int, denominator: str, meaning: str) -> Measure:
    """``part / whole`` as a share of one of :data:`DENOMINATORS`, named ``key_share_of_...``."""
    value = part / whole if whole else 0.0
    return Measure(
        f"{key}_share_of_{denominator}",
        value,
        "0..1",
        f"{meaning}, as a share of the {DENOMINATORS[denominator]} ({part:,} of {whole:,})",
        digits=4,
    )


def markdown_table(frame: pd.DataFrame) -> Markdown:
    """A data frame as a markdown table, its values as they are."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return Markdown("\n".join([header, rule, *rows]))


def summary_table(measures: list[Measure]) -> str:
    """Every measure in one markdown table: what it is, its unit and how to read it."""
    rows = ["| measure | value | unit | how to read it |", "|---|---|---|---|"]
    for measure in measures:
        value = measure.shown()
        if value is None:
            continue
        shown = f"{value:,}" if isinstance(value, int | float) else str(value)
        rows.append(f"| `{measure.key}` | {shown} | {measure.unit} | {measure.meaning} |")
    return "\n".join(rows)
