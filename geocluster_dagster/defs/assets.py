"""The software-defined assets: each reads its partition's inputs, calls one product's writer
(:mod:`geocluster_dagster.products`) and records what the writer's facts say.

stac_items -> band_stack -> mosaic -> geotiff -> clusters -> diagnostics, all partitioned by
AOI x date window, and cluster_model (an AOI's reference model, partitioned by AOI only), fitted
on the geotiffs of several dates and read by clusters. How every step runs (settings checked
first, errors explained, stale products named) is :mod:`.steps`'.
"""

import dataclasses
import json
import time

import dagster as dg

from ..budget import TIMINGS, record_run
from ..cluster import ClusterSettings
from ..composite import CompositeSettings
from ..errors import ConfigError
from ..export import CogSettings
from ..indices import IndexSettings
from ..load import LoadSettings
from ..naming import NamingSettings
from ..products.band_stack import (
    BandStackRecipe,
    open_band_stack,
    stored_aoi,
    stored_estimate,
    write_band_stack,
)
from ..products.cluster_model import model_plan, write_cluster_model
from ..products.clusters import open_clusters, write_clusters
from ..products.diagnostics import DiagnosticsSettings, write_diagnostics
from ..products.geotiff import open_geotiff, write_geotiff
from ..products.mosaic import write_mosaic
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
from .automation import REMADE_INPUTS
from .config import (
    BandStackConfig,
    ClusterConfig,
    DiagnosticsConfig,
    GeoTiffConfig,
    MosaicConfig,
    ReferenceModelConfig,
    SearchConfig,
    to_settings,
)
from .map_comparisons import accuracy, cluster_change
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
    PartitionWindow,
    aoi_partitions,
    partition_window,
    same_aoi_mapping,
    window_of,
)
from .resources import AOIRegistry, DaskCluster, StacCatalog
from .steps import (
    GROUP,
    check_what_settings_name,
    code_version,
    not_written,
    product_asset,
    sources_used,
    step,
    written,
)

_SAME_AOI = same_aoi_mapping()


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
            "config": json.dumps(config.model_dump()),
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
        outputs.existing(MOSAIC, window),
        folder,
        to_settings(IndexSettings, config),
        to_settings(CogSettings, config),
        aoi_id=window.aoi_id,
        config=config.model_dump(),
        chunks=outputs.chunk_size,
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
        aoi=stored_aoi(outputs.existing(BAND_STACK, window)),  # the AOI the map is clipped to
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


@product_asset(
    STAC_ITEM,
    deps=[geotiff, clusters, diagnostics, CLUSTER_CHANGE.asset, ACCURACY.asset],
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
    aoi = aoi_registry.get(window.aoi_id)
    facts = write_stac_item(
        folders,
        aoi_id=window.aoi_id,
        date_key=window.date_key,
        start=window.start,
        end=window.end,
        aoi=aoi.geometry,
        search=stac.source().url,
        title=f"geocluster: {window.label}",
        report=outputs.path(REPORT, window),
        output_root=outputs.root(),
        place_name=aoi.name,
        public_url=outputs.published_at(),
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
