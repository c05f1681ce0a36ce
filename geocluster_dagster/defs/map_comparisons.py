"""The assets that compare a partition's map with something else: with the AOI's earlier date
(``cluster_change``) and with the AOI's reference data (``accuracy``). Each only wires a product
writer (:mod:`geocluster_dagster.products.cluster_change`, :mod:`.accuracy`) and its checks.

No ``from __future__ import annotations``: Dagster reads the steps' config and resource types
from their annotations at definition time."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from ..aoi import reference_of
from ..change import ChangeSettings, DatedImage
from ..errors import NotComparable
from ..products.accuracy import AccuracySettings, write_accuracy
from ..products.band_stack import stored_aoi
from ..products.cluster_change import open_dated, retire_cluster_change, write_cluster_change
from ..products.stac_items import acquisition_days, days_text, open_stac_items
from ..storage import retire
from .automation import REMADE_INPUTS
from .config import AccuracyConfig, ChangeConfig, to_settings
from .outputs import (
    ACCURACY,
    BAND_STACK,
    CLUSTER_CHANGE,
    CLUSTER_MODEL,
    CLUSTERS,
    GEOTIFF,
    STAC_ITEMS,
    OutputStore,
)
from .partitions import (
    PartitionWindow,
    lookback_dates,
    lookback_mapping,
    partition_window,
    partitions,
    same_aoi_mapping,
    window_of,
)
from .resources import AOIRegistry, DaskCluster
from .steps import (
    GROUP,
    after_imagery,
    check_spec,
    code_version,
    not_evaluated_checks,
    not_written,
    product_asset,
    step,
    written,
)

#: A partition <- its AOI's partitions of the same window and the look-back before it.
_THIS_AND_EARLIER = lookback_mapping()
_SAME_AOI = same_aoi_mapping()


_CHANGE_CHECKS = [
    (
        "comparable_ids",
        "Both dates are classified by one model, so an id means the same cluster in both (WARN: "
        "if no model can classify both, no change is computed and the check says why).",
    ),
    ("overlap", "The two dates overlap enough to compare (WARN below min_overlap)."),
    (
        "plausible_change",
        "Little of what both dates label confidently changed land cover (warn_changed_share), "
        "and little of the stable_areas did (warn_stable_change) (WARN).",
    ),
]


# A multi_asset only to make the asset and its checks optional (can_subset): the AOI's first
# map has nothing to compare with, and dates no model can classify both are not compared;
# neither is a failure, and neither has an overlap to report.
@dg.multi_asset(
    name=CLUSTER_CHANGE.asset,
    specs=[
        dg.AssetSpec(
            CLUSTER_CHANGE.asset,
            # This date's and the earlier dates' maps and geotiffs, as far back as the change
            # looks for the map it compares with (a year of windows).
            deps=[
                dg.AssetDep(CLUSTERS.asset, partition_mapping=_THIS_AND_EARLIER),
                dg.AssetDep(GEOTIFF.asset, partition_mapping=_THIS_AND_EARLIER),
                dg.AssetDep(CLUSTER_MODEL.asset, partition_mapping=_SAME_AOI),
            ],
            group_name=GROUP,
            code_version=code_version(CLUSTER_CHANGE),
            automation_condition=REMADE_INPUTS,
            kinds={"geotiff"},
            skippable=True,
            description="Change from the AOI's previous date with a map: both dates' geotiffs "
            "classified by one model (the maps' own when they share one, else the AOI's "
            "reference model, else one fitted on both dates), a from/to/change COG, the "
            "transition matrix in pixels and hectares, per-class area deltas, a change map and "
            "a transition heat map.",
        )
    ],
    check_specs=[
        check_spec(CLUSTER_CHANGE, name, description) for name, description in _CHANGE_CHECKS
    ],
    partitions_def=partitions,
    can_subset=True,
)
@step
@after_imagery([name for name, _ in _CHANGE_CHECKS])
def cluster_change(
    context: dg.AssetExecutionContext,
    config: ChangeConfig,
    dask: DaskCluster,
    outputs: OutputStore,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    window = partition_window(context)
    folder = outputs.path(CLUSTER_CHANGE, window)
    settings = to_settings(ChangeSettings, config)
    if not outputs.present([CLUSTERS.asset], window):
        # An asset backfill of a date plans the changes of the year after it too (they read
        # its map); a later date never materialized has no map to compare yet.
        reason = (
            f"{window.key} has no map of its own yet (its clusters was never materialized): "
            "materialize the partition, and its change is made with it."
        )
        context.log.info(reason)
        yield _not_compared(folder, reason)
        return
    try:
        earlier = settings.earlier(
            outputs.dates_with(CLUSTERS, window.aoi_id),
            window.date_key,
            within=lookback_dates(window.date_key),
        )
    except NotComparable as err:  # only a map older than the look-back
        context.log.warning(f"cluster_change not computed: {err}")
        yield _not_compared(folder, str(err))
        return
    if earlier is None:
        reason = (
            f"{window.key} is the first date of AOI {window.aoi_id} with a map: there is "
            "nothing earlier to compare with."
        )
        context.log.info(reason)
        yield _not_compared(folder, reason)
        return
    try:
        facts = write_cluster_change(
            _dated(outputs, window.aoi_id, earlier),
            _dated(outputs, window.aoi_id, window.date_key),
            folder,
            reference=outputs.read_of_aoi(CLUSTER_MODEL, window.aoi_id),
            settings=settings,
            label=f"AOI {window.aoi_id!r},",
            aoi=stored_aoi(outputs.existing(BAND_STACK, window)),  # the later map's AOI
            when=_when(outputs, window_of(f"{window.aoi_id}|{earlier}"), window),
        )
    except NotComparable as err:
        # Not a failure of this run: the maps exist, they just cannot be compared.
        context.log.warning(f"cluster_change not computed: {err}")
        yield _not_compared(folder, str(err), earlier)
        yield dg.AssetCheckResult(
            check_name="comparable_ids",
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=str(err),
            metadata={"from_date": earlier, "to_date": window.date_key},
        )
        return
    context.log.info(f"Both dates classified by {facts.model.describe()}")
    yield written(context, folder, facts, facts.judge())


def _when(outputs: OutputStore, before: PartitionWindow, after: PartitionWindow) -> str:
    """The two dates compared, as a change figure's title gives them: the days their scenes
    were acquired, then the windows (first and last day)."""

    def days(window: PartitionWindow) -> str:
        return days_text(acquisition_days(open_stac_items(outputs.existing(STAC_ITEMS, window))))

    return (
        f"scenes of {days(before)} -> {days(after)} (windows {before.start:%Y-%m-%d} to "
        f"{before.last_day:%Y-%m-%d} -> {after.start:%Y-%m-%d} to {after.last_day:%Y-%m-%d})"
    )


def _dated(outputs: OutputStore, aoi_id: str, date: str) -> DatedImage:
    """A date of the AOI to compare: its geotiff and the model its map was made with."""
    window = window_of(f"{aoi_id}|{date}")
    geotiff, clusters = outputs.existing(GEOTIFF, window), outputs.existing(CLUSTERS, window)
    return open_dated(date, geotiff, clusters, chunks=outputs.chunk_size)


def _not_compared(
    folder: Path, reason: str, earlier: str | None = None
) -> dg.MaterializeResult[Any]:
    """The partition's change, recorded as "not compared" rather than left unmaterialized: a
    backfill counts an asset a run did not materialize as failed, and the map of a first date
    has nothing to fail at. A change an earlier run left (of maps since remade) is removed, so
    that nothing downstream (the STAC Item, the report) publishes it."""
    retire_cluster_change(folder)
    return not_written(not_compared=reason, compared_with=earlier or "none")


@product_asset(
    ACCURACY,
    checks=[
        (
            "overall_accuracy",
            False,
            "The map's estimated overall accuracy against the AOI's reference data is at least "
            "warn_overall_accuracy (WARN; not evaluated for an AOI without reference data).",
        )
    ],
    deps=[CLUSTERS.asset],
    automation_condition=REMADE_INPUTS,
    description="The cluster map's accuracy against the AOI's reference data (the registry's "
    "reference_data: labelled points or polygons): clusters matched to reference labels, "
    "Olofsson et al. (2014)'s area-weighted error matrix, overall, user's and producer's "
    "accuracy and class areas with 95 % intervals (accuracy.json, CSVs, a figure). Not part "
    "of geocluster_pipeline: run the geocluster_accuracy job (or `geocluster accuracy`).",
    kinds={"matplotlib"},
)
def accuracy(
    context: dg.AssetExecutionContext,
    config: AccuracyConfig,
    aoi_registry: AOIRegistry,
    outputs: OutputStore,
) -> dg.MaterializeResult:
    window = partition_window(context)
    folder = outputs.path(ACCURACY, window)
    reference = reference_of(aoi_registry.get(window.aoi_id), aoi_registry.resolved_path())
    if reference is None:
        retire(folder)  # an assessment of reference data the registry no longer names
        reason = (
            f"AOI {window.aoi_id} registers no reference data: add a `reference_data` property "
            "(a GeoJSON, GeoPackage or shapefile of labelled points or polygons; a path "
            "relative to the registry) and, if its label column is not 'class', a "
            f"`reference_label` to its feature in the AOI registry ({aoi_registry.resolved_path()})."
        )
        context.log.info(reason)
        return dg.MaterializeResult(
            metadata={"not_assessed": reason},
            check_results=not_evaluated_checks(["overall_accuracy"], "no reference data"),
        )
    path, label = reference
    facts = write_accuracy(
        outputs.existing(CLUSTERS, window),
        path,
        folder,
        to_settings(AccuracySettings, config),
        label_column=label,
        title=window.label,
    )
    return written(context, folder, facts, [facts.judge()])
