"""Metadata a person reads in the UI, from what a product's facts say about themselves
(:mod:`geocluster_dagster.products.described`): rounded numbers, units and denominators in the
names, and a summary table per materialization saying what each number means and which way is
better."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from ..products.described import Detail, Facts, FilePath, Json, Markdown, Measure, summary_table


def as_metadata(measures: Sequence[Measure]) -> dict[str, Any]:
    """The numbers as metadata entries, plus ``summary``: a markdown table of all of them."""
    entries: dict[str, Any] = {}
    for measure in measures:
        value = measure.shown()
        if value is not None and measure.trend:
            entries[measure.key] = value
    return {**entries, "summary": dg.MetadataValue.md(summary_table(list(measures)))}


def metadata_of(facts: Facts) -> dict[str, Any]:
    """Everything ``facts`` show a person, as Dagster metadata: the numbers, their summary
    table, then the other entries."""
    return {
        **as_metadata(facts.measures()),
        **{key: _entry(value) for key, value in facts.details().items()},
    }


def _entry(value: Detail) -> Any:
    if isinstance(value, Markdown):
        return dg.MetadataValue.md(value.text)
    if isinstance(value, Json):
        return dg.MetadataValue.json(value.value)
    if isinstance(value, FilePath):
        return dg.MetadataValue.path(str(value.path))
    return value
