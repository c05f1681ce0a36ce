"""Metadata a person reads in the UI: rounded numbers, units and denominators in the names, and
a summary table per materialization saying what each number means and which way is better.

Shares are named after what they are a share of, one name per denominator:

* ``..._share_of_aoi``: of the pixels whose centre lies inside the AOI polygon;
* ``..._share_of_map``: of the pixels the cluster map labels (clear pixels of the AOI);
* ``..._share_of_compared``: of the pixels both dates' maps label (cluster_change);
* ``..._share_of_grid``: of the pixels of the output grid, the AOI's bounding box (a band's
  valid pixels in the geotiff).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

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


def as_metadata(measures: Sequence[Measure]) -> dict[str, Any]:
    """The numbers as metadata entries, plus ``summary``: a markdown table of all of them."""
    rows = ["| measure | value | unit | how to read it |", "|---|---|---|---|"]
    entries: dict[str, Any] = {}
    for measure in measures:
        value = measure.shown()
        if value is None:
            continue
        if measure.trend:
            entries[measure.key] = value
        shown = f"{value:,}" if isinstance(value, int | float) else str(value)
        rows.append(f"| `{measure.key}` | {shown} | {measure.unit} | {measure.meaning} |")
    return {**entries, "summary": dg.MetadataValue.md("\n".join(rows))}
