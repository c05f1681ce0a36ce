"""The software-defined assets: each reads its partition's inputs, calls one product's writer
(:mod:`geocluster_dagster.products`) and records what the writer's facts say.

stac_items -> band_stack -> mosaic -> geotiff -> clusters -> diagnostics, all partitioned by
AOI x date window, and cluster_model (an AOI's reference model, partitioned by AOI only), fitted
on the geotiffs of several dates and read by clusters. How every step runs (settings checked
first, errors explained, stale products named) is :mod:`.steps`'.
"""

import dataclasses
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from ..aoi import reference_of
from ..budget import TIMINGS, record_run
from ..change import ChangeSettings, DatedImage
from ..cluster import ClusterSettings
from ..composite import CompositeSettings
from ..errors import ConfigError, NotComparable
from ..export import CogSettings
from ..indices import IndexSettings
from ..load import LoadSettings
from ..naming import NamingSettings
from ..products.accuracy import AccuracySettings, write_accuracy
from ..products.band_stack import (
    BandStackRecipe,
    open_band_stack,
    stored_estimate,
    write_band_stack,
)
from ..products.cluster_change import open_dated, retire_cluster_change, write_cluster_change
from ..products.cluster_model import model_plan, write_cluster_model
from ..products.clusters import open_clusters, write_clusters
from ..products.diagnostics import DiagnosticsSettings, write_diagnostics
from ..products.geotiff import open_geotiff, write_geotiff
from ..products.mosaic import open_mosaic, write_mosaic
from ..products.stac_item import PartitionFolders, write_stac_item
from ..products.stac_items import (
    acquisition_days,
    open_stac_items,
    scenes_label,
    write_stac_items,
)
from ..quality import ClusterQuality, MosaicQuality, SeparationQuality
from ..reference import ModelSettings, PoolSettings
from ..search import SearchSettings
from ..sieve import SieveSettings
from ..storage import retire
from .automation import REMADE_INPUTS
from .config import (
    AccuracyConfig,
    BandStackConfig,
    ChangeConfig,
    ClusterConfig,
    DiagnosticsConfig,
    GeoTiffConfig,
    MosaicConfig,
    ReferenceModelConfig,
    SearchConfig,
    to_settings,
)
from .outputs import (
    ACCURACY,
    BAND_STACK,
    CLUSTER_CHANGE,
    CLUSTER_MODEL,
    CLUSTERS,
    DIAGNOSTICS,
    GEOTIFF,
    MOSAIC,
    REPORT,
    STAC_ITEM,
    STAC_ITEMS,
    OutputStore,
)
from .partitions import (
    AOI_PARTITIONS,
    PartitionWindow,
    aoi_partitions,
    lookback_dates,
    lookback_mapping,
    partition_window,
    partitions,
    window_of,
)
from .resources import AOIRegistry, DaskCluster, StacCatalog
from .steps import (
    GROUP,
    after_imagery,
    check_spec,
    check_what_settings_name,
    code_version,
    not_written,
    product_asset,
    sources_used,
    step,
    written,
)

#: cluster_model (per AOI) <-> the AOI x date partitions of that AOI.
with warnings.catch_warnings():  # beta in Dagster 1.x, and the one mapping that says this
    warnings.simplefilter("ignore", dg.BetaWarning)
    _SAME_AOI = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=AOI_PARTITIONS)
#: A partition <- its AOI's partitions of the same window and the look-back before it.
_THIS_AND_EARLIER = lookback_mapping()


@product_asset(
    STAC_ITEMS,
    checks=[
        (
            "has_scenes",
            False,
            "At least one scene in the window (WARN): none makes the partition 'no imagery', "
            "and the assets downstream record 'no imagery' (writing nothing), not a failure.",
        )
    ],
    description="STAC items covering the AOI in the date window, filtered by collection and cloud cover.",
    kinds={"stac"},
    searches=True,
)
def stac_items(
    context: dg.AssetExecutionContext,
    config: SearchConfig,
    aoi_registry: AOIRegistry,
    stac: StacCatalog,
    outputs: OutputStore,
) -> dg.MaterializeResult:
    window = partition_window(context)
    aoi = aoi_registry.get(window.aoi_id)
    check_what_settings_name(context, window, aoi_registry, outputs)
    sources = sources_used(context, stac, aoi_registry, outputs)
    path = outputs.path(STAC_ITEMS, window)
    facts = write_stac_items(
        stac.source(),
        to_settings(SearchSettings, config),
        aoi.geometry,
        window.start,
        window.end,
        path,
        where=window.label,
        # Products an earlier search left, which a search that finds nothing leaves stale.
        earlier_products=outputs.present(
            ["band_stack", "mosaic", "geotiff", "clusters", "cluster_change", "diagnostics"],
            window,
        ),
    )
    return written(context, path, facts, [facts.judge()], **sources)


@product_asset(
    BAND_STACK,
    deps=[stac_items],
    description="Lazy, chunked, cloud-masked bands in physical units on one grid; stored as the recipe that reopens them (items, grid, mask and read settings), not a copy of the pixels.",
    kinds={"xarray", "stac"},
)
def band_stack(
    context: dg.AssetExecutionContext,
    config: BandStackConfig,
    aoi_registry: AOIRegistry,
    stac: StacCatalog,
    dask: DaskCluster,
    outputs: OutputStore,
) -> dg.MaterializeResult:
    window = partition_window(context)
    items = open_stac_items(outputs.existing(STAC_ITEMS, window))
    recipe = BandStackRecipe(
        items=items,
        aoi=aoi_registry.get(window.aoi_id).geometry,
        settings=to_settings(LoadSettings, config),
        source=stac.source(),
        remote=stac.read_settings(),
    )
    path = outputs.path(BAND_STACK, window)
    facts = write_band_stack(recipe, path, output_root=outputs.root(), where=window.label)
    context.log.info(f"{window.key}: {facts.describe_cost()}")
    return written(context, path, facts)


@product_asset(
    MOSAIC,
    checks=[
        (
            "clear_fraction",
            True,
            "Share of the AOI with a clear observation: WARN below warn_clear_fraction, ERROR "
            "(the assets downstream are not built) below error_clear_fraction.",
        )
    ],
    deps=[band_stack],
    description="Cloud-free composite of the clear observations, clipped to the AOI polygon (GeoTIFF).",
    kinds={"geotiff"},
)
def mosaic(
    context: dg.AssetExecutionContext,
    config: MosaicConfig,
    aoi_registry: AOIRegistry,
    dask: DaskCluster,
    outputs: OutputStore,
) -> dg.MaterializeResult:
    window = partition_window(context)
    path = outputs.path(MOSAIC, window)
    facts = write_mosaic(
        open_band_stack(outputs.existing(BAND_STACK, window)),
        aoi_registry.get(window.aoi_id).geometry,
        path,
        to_settings(CompositeSettings, config),
        where=window.label,
        tags={
            "aoi_id": window.aoi_id,
            "time_window": f"{window.start:%Y-%m-%d}/{window.last_day:%Y-%m-%d}",
        },
    )
    return written(context, path, facts, [facts.judge(to_settings(MosaicQuality, config))])


@product_asset(
    GEOTIFF,
    checks=[
        (
            "valid_cog",
            True,
            "Both files are valid Cloud-Optimized GeoTIFFs (rio-cogeo's validator).",
        ),
        (
            "bands_as_promised",
            True,
            "The files hold the bands and the indices by name; nodata is 0 for DN, NaN for float.",
        ),
        ("physical_reflectance", False, "Reflectance bands stay within -0.2 .. 1.6 (WARN)."),
    ],
    deps=[mosaic],
    description="The spectral bands (uint16 DN with scale/offset, as the inputs) and the indices "
    "(float32): a folder of two Cloud-Optimized GeoTIFFs with provenance tags.",
    kinds={"geotiff"},
)
def geotiff(
    context: dg.AssetExecutionContext,
    config: GeoTiffConfig,
    dask: DaskCluster,
    outputs: OutputStore,
) -> dg.MaterializeResult:
    window = partition_window(context)
    folder = outputs.path(GEOTIFF, window)
    facts = write_geotiff(
        open_mosaic(outputs.existing(MOSAIC, window), chunks=outputs.chunk_size),
        folder,
        to_settings(IndexSettings, config),
        to_settings(CogSettings, config),
        aoi_id=window.aoi_id,
        config=config.model_dump(),
    )
    return written(context, folder, facts, facts.judge())


@dg.asset(
    name=CLUSTER_MODEL.asset,
    partitions_def=aoi_partitions,
    group_name=GROUP,
    code_version=code_version(CLUSTER_MODEL),
    deps=[dg.AssetDep(GEOTIFF.asset, partition_mapping=_SAME_AOI)],
    description="The AOI's reference model: one model fitted on an equal sample from several "
    "date partitions' geotiffs, so that clusters (model: aoi_reference, or matched with model: "
    "partition) give a land cover the same id in every date.",
    kinds={"sklearn"},
)
@step
def cluster_model(
    context: dg.AssetExecutionContext,
    config: ReferenceModelConfig,
    dask: DaskCluster,
    outputs: OutputStore,
) -> dg.MaterializeResult:
    aoi_id = context.partition_key
    pool = to_settings(PoolSettings, config)
    dates = pool.select(outputs.dates_with(GEOTIFF, aoi_id), aoi_id)
    context.log.info(f"Pooling {len(dates)} date partitions of {aoi_id}: {', '.join(dates)}")
    images = {
        date: open_geotiff(
            outputs.existing(GEOTIFF, window_of(f"{aoi_id}|{date}")), chunks=outputs.chunk_size
        )
        for date in dates
    }
    folder = outputs.of_aoi(CLUSTER_MODEL, aoi_id)
    facts = write_cluster_model(
        images,
        to_settings(ClusterSettings, config),
        pool,
        folder,
        aoi_id=aoi_id,
        naming=to_settings(NamingSettings, config),
    )
    return written(context, folder, facts)


@product_asset(
    CLUSTERS,
    checks=[
        ("no_empty_cluster", False, "Every cluster holds pixels of this partition (WARN)."),
        (
            "smallest_cluster_share",
            False,
            "The smallest cluster holds at least min_cluster_share of the map (WARN).",
        ),
        ("names_assigned", False, "Every cluster has a land-cover name, none 'unlabelled' (WARN)."),
    ],
    deps=[geotiff, dg.AssetDep(CLUSTER_MODEL.asset, partition_mapping=_SAME_AOI)],
    description="Unsupervised clusters of the spectral signatures: cluster-map COG, model, "
    "signatures CSV/JSON. Ids follow the AOI's reference model (cluster_model) when it has one.",
    kinds={"sklearn", "geotiff"},
)
def clusters(
    context: dg.AssetExecutionContext,
    config: ClusterConfig,
    dask: DaskCluster,
    outputs: OutputStore,
) -> dg.MaterializeResult:
    window = partition_window(context)
    plan = model_plan(
        to_settings(ModelSettings, config),
        window.aoi_id,
        lambda aoi: outputs.read_of_aoi(CLUSTER_MODEL, aoi),
    )
    context.log.info(f"Model: {plan.describe()}")
    folder = outputs.path(CLUSTERS, window)
    facts = write_clusters(
        open_geotiff(outputs.existing(GEOTIFF, window), chunks=outputs.chunk_size),
        to_settings(ClusterSettings, config),
        folder,
        aoi_id=window.aoi_id,
        plan=plan,
        naming=to_settings(NamingSettings, config),
        sieve=to_settings(SieveSettings, config),
    )
    return written(context, folder, facts, facts.judge(to_settings(ClusterQuality, config)))


@product_asset(
    DIAGNOSTICS,
    checks=[
        ("silhouette", False, "The mean sampled silhouette is at least min_silhouette (WARN).")
    ],
    deps=[geotiff, clusters],
    description="Diagnostics: cluster map, previews, signatures, silhouette, elbow, sizes, red-vs-NIR density, scores.",
    kinds={"matplotlib"},
)
def diagnostics(
    context: dg.AssetExecutionContext,
    config: DiagnosticsConfig,
    dask: DaskCluster,
    outputs: OutputStore,
) -> dg.MaterializeResult:
    window = partition_window(context)
    folder = outputs.path(DIAGNOSTICS, window)
    settings, not_drawn = _figures_setting(context, to_settings(DiagnosticsSettings, config))
    facts = write_diagnostics(
        open_geotiff(outputs.existing(GEOTIFF, window), chunks=outputs.chunk_size),
        open_clusters(outputs.existing(CLUSTERS, window), chunks=outputs.chunk_size),
        folder,
        settings,
        # Which days the map shows, not only its window: figures are read apart from the run.
        label=f"{window.label}, "
        + scenes_label(acquisition_days(open_stac_items(outputs.existing(STAC_ITEMS, window)))),
        not_drawn=not_drawn,
    )
    return written(context, folder, facts, [facts.judge(to_settings(SeparationQuality, config))])


#: A run tag that turns the diagnostics' figures off for the runs it is given to, e.g. every
#: run of a backfill (`dagster job backfill --tags '{"geocluster/figures": "false"}'`, or the
#: tags of the UI's backfill dialog): Dagster gives a backfill's runs no run config of their own.
FIGURES_TAG = "geocluster/figures"


def _figures_setting(
    context: dg.AssetExecutionContext, settings: DiagnosticsSettings
) -> tuple[DiagnosticsSettings, str]:
    """The settings with the run tag applied (it can only turn figures off, never overrides a
    config that did), and why figures are not drawn, in the user's terms."""
    tag = context.run.tags.get(FIGURES_TAG)
    if tag is None or tag.strip().lower() == "true":
        return settings, "ops.diagnostics.config.figures is false"
    if tag.strip().lower() != "false":
        raise ConfigError(
            f"Run tag {FIGURES_TAG}={tag!r} is not understood: use false (no figures) or true, "
            "or remove the tag."
        )
    context.log.info(f"Figures not drawn: the run has the tag {FIGURES_TAG}=false.")
    return dataclasses.replace(settings, figures=False), f"run tag {FIGURES_TAG}=false"


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
    deps=[clusters],
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
            check_results=[
                dg.AssetCheckResult(
                    check_name="overall_accuracy",
                    passed=True,
                    description="Not evaluated: no reference data.",
                    metadata={"evaluated": False},
                )
            ],
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


@product_asset(
    STAC_ITEM,
    deps=[geotiff, clusters, diagnostics, CLUSTER_CHANGE.asset, accuracy],
    automation_condition=REMADE_INPUTS,
    description="The partition's report (report/<aoi>/<date>.html: one file, figures embedded) "
    "and its STAC Item in the output catalog (stac/catalog.json): every product as an asset "
    "with checksums, bands, units, classes, provenance and the scenes it was derived from.",
    kinds={"stac"},
)
def stac_item(
    context: dg.AssetExecutionContext,
    aoi_registry: AOIRegistry,
    stac: StacCatalog,
    outputs: OutputStore,
) -> dg.MaterializeResult:
    window = partition_window(context)
    if not outputs.present([STAC_ITEMS.asset], window):
        # An asset backfill of a date also plans the Items of the later dates whose change
        # reads its map; a date never searched has nothing of its own to publish yet.
        reason = (
            f"{window.key} was never searched (its stac_items was never materialized): "
            "materialize the partition, and its Item is published with it."
        )
        context.log.info(reason)
        return not_written(not_published=reason)
    change = outputs.present(["cluster_change"], window)
    folders = PartitionFolders(
        stac_items=outputs.existing(STAC_ITEMS, window),
        mosaic=outputs.existing(MOSAIC, window),
        geotiff=outputs.existing(GEOTIFF, window),
        clusters=outputs.existing(CLUSTERS, window),
        diagnostics=outputs.existing(DIAGNOSTICS, window),
        change=outputs.existing(CLUSTER_CHANGE, window) if change else None,
        accuracy=outputs.existing(ACCURACY, window)
        if outputs.present([ACCURACY.asset], window)
        else None,
    )
    facts = write_stac_item(
        folders,
        aoi_id=window.aoi_id,
        date_key=window.date_key,
        start=window.start,
        end=window.end,
        aoi=aoi_registry.get(window.aoi_id).geometry,
        search=stac.source().url,
        title=f"geocluster: {window.label}",
        report=outputs.path(REPORT, window),
        output_root=outputs.root(),
    )
    _time_the_run(context, outputs, window)
    return written(context, facts.item, facts)


def _time_the_run(
    context: dg.AssetExecutionContext, outputs: OutputStore, window: PartitionWindow
) -> None:
    """The partition's run, from its start to its last asset, recorded for later estimates."""
    record = context.instance.get_run_record_by_id(context.run.run_id)
    estimate = stored_estimate(outputs.existing(BAND_STACK, window))
    if record is None or record.start_time is None or estimate is None:
        return  # a run of the last assets alone says nothing about a partition's time
    selection = context.run.asset_selection  # None or empty: every asset of the job
    if selection and dg.AssetKey(BAND_STACK.asset) not in selection:
        return
    record_run(outputs.root() / TIMINGS, estimate.work_mpx, time.time() - record.start_time)


#: The graph one AOI x date partition runs (the geocluster_pipeline job).
PIPELINE_ASSETS = [
    stac_items,
    band_stack,
    mosaic,
    geotiff,
    clusters,
    diagnostics,
    cluster_change,
    stac_item,
]
ASSETS = [*PIPELINE_ASSETS, accuracy, cluster_model]
