"""The software-defined assets, each a call or two into the plain modules.

stac_items -> band_stack -> mosaic -> geotiff -> clusters -> diagnostics, all partitioned by
AOI x date window, and cluster_model (an AOI's reference model, partitioned by AOI only), fitted
on the geotiffs of several dates and read by clusters. Each asset reopens its inputs with the
plain readers, writes its output with the plain writer at the path the `outputs` resource
gives, and records what the writer returns.
"""

import contextlib
import ctypes
import dataclasses
import functools
import inspect
import json
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pystac
import rasterio

from .. import __version__, progress
from ..aoi import validate_aoi_id
from ..bands import band_unit
from ..budget import Estimate, estimate_seconds, record_run, refuse_full_disk
from ..change import (
    CHANGE_MAP,
    CHANGE_PNG,
    TRANSITIONS,
    TRANSITIONS_PNG,
    ChangeSettings,
    DatedImage,
    common_model,
    compare_dates,
)
from ..cluster import ClusterSettings
from ..cluster_product import CLUSTER_MAP, MODEL, SIGNATURES_CSV, open_clusters, write_clusters
from ..composite import CompositeSettings, write_mosaic
from ..diagnostics import PREVIEWS, DiagnosticsSettings, k_advice, write_diagnostics
from ..errors import ConfigError, GeoclusterError, NoItemsFound, NotComparable
from ..evaluate import SCORE_GUIDE, KChoice
from ..export import CogSettings, open_geotiff
from ..geotiff_product import BANDS, INDICES, open_image, provenance, write_image
from ..indices import IndexSettings, add_indices
from ..load import LoadSettings
from ..model_file import load_model
from ..naming import NamingSettings
from ..preview import class_map_markdown, figure_markdown
from ..quality import (
    ClusterQuality,
    Judgement,
    MosaicQuality,
    SeparationQuality,
    judge_clear_fraction,
    judge_clusters,
    judge_cog,
    judge_overlap,
    judge_plausible_change,
    judge_scenes,
    judge_silhouette,
)
from ..reference import ModelSettings, PoolSettings
from ..reference_product import model_plan, reference_model_file, write_reference_model
from ..report import ReportInputs, checks_file, write_report
from ..search import SearchSettings, cloud_cover, read_items, search_items, write_items
from ..stac_product import CATALOG_DIR, PartitionProducts, withdraw_item, write_item
from ..stack_recipe import BandStackRecipe, open_band_stack, write_band_stack
from ..storage import remove_quietly, write_json
from .config import (
    BandStackConfig,
    ChangeConfig,
    ClusterConfig,
    DiagnosticsConfig,
    GeoTiffConfig,
    MosaicConfig,
    ReferenceModelConfig,
    SearchConfig,
    check_settings,
    to_settings,
)
from .outputs import OutputStore, Product
from .partitions import (
    AOI_PARTITIONS,
    PartitionWindow,
    aoi_partitions,
    partition_window,
    partitions,
    window_of,
)
from .readable import DENOMINATORS, Measure, as_metadata, rounded, share
from .resources import AOIRegistry, DaskCluster, StacCatalog

GROUP = "geocluster"

STAC_ITEMS = Product("stac_items", ".json")
BAND_STACK = Product("band_stack", ".json")
MOSAIC = Product("mosaic", ".tif")
GEOTIFF = Product("geotiff", "")
CLUSTERS = Product("clusters", "")
DIAGNOSTICS = Product("diagnostics", "")
CLUSTER_MODEL = Product("cluster_model", "")
CLUSTER_CHANGE = Product("cluster_change", "")
STAC_ITEM = Product("stac_item", ".json")
REPORT = Product("report", ".html")
#: The products a partition's STAC Item and report describe: a step that rewrites one
#: withdraws them until stac_item publishes them again.
_PUBLISHED = {
    p.asset
    for p in (STAC_ITEMS, BAND_STACK, MOSAIC, GEOTIFF, CLUSTERS, DIAGNOSTICS, CLUSTER_CHANGE)
}

#: cluster_model (per AOI) <-> the AOI x date partitions of that AOI.
with warnings.catch_warnings():  # beta in Dagster 1.x, and the one mapping that says this
    warnings.simplefilter("ignore", dg.BetaWarning)
    _SAME_AOI = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=AOI_PARTITIONS)


def _return_freed_memory() -> None:
    """Hand the memory a finished step freed back to the system (glibc's ``malloc_trim``).

    The steps of a run share one process, and glibc keeps the block buffers a step freed in its
    heap: the next step's peak would stand on them."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to hand back this way
        return
    libc.malloc_trim(0)


def _step(compute: Callable[..., Any]) -> Callable[..., Any]:
    """An asset's body, run with every asset's settings of this run checked first (before this
    step writes anything), and the progress of its long passes logged into the run's log every
    few seconds (the UI shows the lines while the step runs)."""

    @contextlib.contextmanager
    def running(context: dg.AssetExecutionContext) -> Iterator[None]:
        with explained_failures():
            check_settings(context.run.run_config)
        log = progress.Throttled(lambda update: context.log.info(update.describe()))
        try:
            with progress.listening(log), unexpected_failures():
                yield
        except Exception:
            _warn_stale(context)
            raise
        finally:
            _return_freed_memory()
        _withdraw_publication(context)

    if inspect.isgeneratorfunction(compute):

        @functools.wraps(compute)
        def generate(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any) -> Any:
            with running(context):
                yield from compute(context, *args, **kwargs)

        return generate

    @functools.wraps(compute)
    def call(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any) -> Any:
        with running(context):
            return compute(context, *args, **kwargs)

    return call


def _withdraw_publication(context: dg.AssetExecutionContext) -> None:
    """A step rewrote one of the products the partition's STAC Item and report describe:
    withdraw both, so that the catalog never lists a checksum or a figure of the products
    before (the run's stac_item step publishes them again from what is now on disk)."""
    if not {key.to_user_string() for key in context.selected_asset_keys} & _PUBLISHED:
        return
    window = partition_window(context)
    outputs: OutputStore = context.resources.outputs
    withdrawn = withdraw_item(outputs.root(), window.aoi_id, window.date_key)
    report = outputs.path(REPORT, window)
    if report.exists():
        remove_quietly(report)
        withdrawn = True
    if withdrawn:
        context.log.info(
            f"The STAC Item and report of {window.key} are withdrawn until its stac_item step "
            "publishes them again: they described the products before this run."
        )


def _check_what_settings_name(
    context: dg.AssetExecutionContext,
    window: PartitionWindow,
    registry: AOIRegistry,
    outputs: OutputStore,
) -> None:
    """The settings of this run that name another thing (the model clusters applies, the date
    cluster_change compares with) are checked at the run's first step, before any product is
    rewritten: refused at clusters, four products would already be new."""
    run_config: dict[str, Any] = dict(context.run.run_config)
    ops: dict[str, Any] = run_config.get("ops") or {}
    clusters_config = (ops.get("clusters") or {}).get("config") or {}
    choice = to_settings(ModelSettings, ClusterConfig(**clusters_config))
    if choice.kind == "aoi":
        try:
            validate_aoi_id(choice.other_aoi)
            known = registry.load()
        except GeoclusterError as err:
            raise ConfigError(f"ops.clusters.config.model={choice.model!r}: {err}") from err
        if choice.other_aoi not in known:
            raise ConfigError(
                f"ops.clusters.config.model={choice.model!r} names AOI {choice.other_aoi!r}, "
                f"which is not in the AOI registry (it has {', '.join(sorted(known))}): name one "
                "of those, or add the AOI to the registry and materialize its cluster_model."
            )
    try:
        model_plan(choice, window.aoi_id, lambda aoi: outputs.of_aoi(CLUSTER_MODEL, aoi))
    except GeoclusterError as err:
        raise ConfigError(f"ops.clusters.config.model={choice.model!r}: {err}") from err
    change_config = (ops.get("cluster_change") or {}).get("config") or {}
    change = to_settings(ChangeSettings, ChangeConfig(**change_config))
    try:
        change.earlier(outputs.dates_with(CLUSTERS, window.aoi_id), window.date_key)
    except ConfigError as err:
        raise ConfigError(f"ops.cluster_change.config.{err}") from err


def _warn_stale(context: dg.AssetExecutionContext) -> None:
    """A step failed after others of its run rewrote their products: say, in the run's log (the
    UI's and the CLI's), which products of the partition are still an earlier run's."""
    key = context.partition_key if context.has_partition_key else None
    if key is None or "|" not in str(key):
        return
    window, outputs = window_of(str(key)), context.resources.outputs
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    rewritten = sorted(
        {r.event_log_entry.dagster_event.asset_key.to_user_string() for r in records}
        & set(PRODUCTS),
        key=list(PRODUCTS).index,
    )
    failed = context.op_def.name
    after = list(PRODUCTS)[list(PRODUCTS).index(failed) :] if failed in PRODUCTS else []
    earlier = [
        a for a in after if a not in rewritten and outputs.path(PRODUCTS[a], window).exists()
    ]
    if rewritten and earlier:
        why = (
            f"stale: {', '.join(earlier)} of {window.label} are still an earlier run's and may "
            f"not match what this run rewrote ({', '.join(rewritten)}); materialize the "
            "partition again once the failure is fixed."
        )
        context.log.warning(why)
        # On each stale asset's own page too (its events and the partition's latest event).
        for name in earlier:
            context.log_event(
                dg.AssetObservation(
                    asset_key=name,
                    partition=str(key),
                    metadata={
                        "stale": dg.MetadataValue.text(why),
                        "failed_run": dg.MetadataValue.dagster_run(context.run.run_id),
                    },
                )
            )


@contextlib.contextmanager
def explained_failures() -> Iterator[None]:
    """Turn the package's own errors into Dagster failures whose message says what to fix."""
    try:
        yield
    except GeoclusterError as err:
        raise dg.Failure(description=str(err), metadata={"error": type(err).__name__}) from err


@contextlib.contextmanager
def unexpected_failures() -> Iterator[None]:
    """Any other error, as a failure whose message is the error itself (Dagster would show only
    "Error occurred while executing op"), saying it is not the user's to fix."""
    try:
        yield
    except (dg.Failure, dg.DagsterError, GeoclusterError):
        raise
    except Exception as err:
        raise dg.Failure(
            description=f"Unexpected {type(err).__name__}: {err}. This is not a setting to "
            "change but a defect of geocluster_dagster or a library it uses: please report it "
            "with the run config and the stack trace below.",
            metadata={"error": type(err).__name__},
        ) from err


def _asset(
    product: Product, checks: Sequence[tuple[str, bool, str]] = (), **kwargs: Any
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """``dg.asset`` for a product of the graph: named after it, partitioned, in the group, with
    its checks (name, blocking, description): their results come with its materialization."""
    specs = [
        _check_spec(product, name, description, blocking) for name, blocking, description in checks
    ]
    asset = dg.asset(
        name=product.asset,
        partitions_def=partitions,
        group_name=GROUP,
        check_specs=specs or None,
        **kwargs,
    )
    return lambda compute: asset(_step(compute))


def _check_spec(product: Product, name: str, description: str, blocking: bool = False) -> Any:
    """A check partitioned like its asset, so each partition's verdict is its own in the UI."""
    with warnings.catch_warnings():  # partitioned checks are a preview feature of Dagster 1.x
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name,
            asset=product.asset,
            blocking=blocking,
            description=description,
            partitions_def=partitions,
        )


def _checked(judgements: Sequence[Judgement]) -> list[dg.AssetCheckResult]:
    """The plain verdicts as Dagster check results, the measured values as their metadata."""
    return [
        dg.AssetCheckResult(
            check_name=j.name,
            passed=j.passed,
            severity=dg.AssetCheckSeverity.ERROR
            if j.severity == "error"
            else dg.AssetCheckSeverity.WARN,
            description=j.description,
            metadata=j.metadata,
        )
        for j in judgements
    ]


def _sources_used(
    context: dg.AssetExecutionContext,
    stac: StacCatalog,
    aoi_registry: AOIRegistry,
    outputs: OutputStore,
) -> dict[str, str]:
    """Log and return where this run reads imagery and AOIs and writes outputs, and which setting
    said so: a run must never use the demo, or another source, without saying it."""
    used = {
        "stac_source": str(stac.setting()),
        "aoi_registry": f"{aoi_registry.resolved_path()} ({aoi_registry.setting().origin})",
        "output_root": str(outputs.root()),
    }
    context.log.info("; ".join(f"{key}: {value}" for key, value in used.items()))
    return used


def _written(
    path: Path, metadata: dict[str, Any], judgements: Sequence[Judgement] = ()
) -> dg.MaterializeResult:
    """The materialization of the product at ``path``; its checks' verdicts are also kept
    beside it (``<product>.checks.json``), for the partition's report."""
    if judgements:
        write_json([dataclasses.asdict(j) for j in judgements], checks_file(path))
    return dg.MaterializeResult(
        metadata={"output_path": dg.MetadataValue.path(str(path)), **metadata},
        check_results=_checked(judgements) or None,
    )


@_asset(
    STAC_ITEMS,
    checks=[
        (
            "has_scenes",
            False,
            "At least one scene in the window (WARN): none makes the partition 'no imagery', "
            "and the assets downstream are skipped, not failed.",
        )
    ],
    description="STAC items covering the AOI in the date window, filtered by collection and cloud cover.",
    kinds={"stac"},
)
def stac_items(
    context: dg.AssetExecutionContext,
    config: SearchConfig,
    aoi_registry: AOIRegistry,
    stac: StacCatalog,
    outputs: OutputStore,
) -> dg.MaterializeResult:
    window = partition_window(context)
    settings = to_settings(SearchSettings, config)
    path = outputs.path(STAC_ITEMS, window)
    with explained_failures():
        aoi = aoi_registry.get(window.aoi_id)
        _check_what_settings_name(context, window, aoi_registry, outputs)
        source = stac.source()
        sources = _sources_used(context, stac, aoi_registry, outputs)
        no_imagery = ""
        try:
            items = search_items(
                source,
                collection=settings.collection,
                geometry=aoi.geometry,
                start=window.start,
                end=window.end,
                max_cloud_cover=settings.max_cloud_cover,
                max_items=settings.max_items,
            )
        except NoItemsFound as err:
            # Not an error: a cloudy month has no scene. Stored empty, so the search is on record.
            items, no_imagery = pystac.ItemCollection([]), str(err)
            earlier = [
                product.asset
                for product in (BAND_STACK, MOSAIC, GEOTIFF, CLUSTERS, CLUSTER_CHANGE, DIAGNOSTICS)
                if outputs.path(product, window).exists()
            ]
            if earlier:
                # Kept (nothing replaces a product with nothing), but no longer this search's:
                # said here, in the CLI's summary, and the partition's STAC Item is withdrawn.
                no_imagery += (
                    f" The products of an earlier search ({', '.join(earlier)}) are kept but "
                    "stale: they were made from scenes this search no longer finds."
                )
            context.log.warning(
                f"No imagery for {window.label}: {no_imagery} The assets downstream are skipped."
            )
        write_items(items, path)
    rows = [
        f"| {i.id} | {i.datetime:%Y-%m-%d %H:%M} | {i.properties.get('eo:cloud_cover', 'n/a')} |"
        for i in items
    ]
    table = "| item | acquired (UTC) | cloud % |\n|---|---|---|\n" + "\n".join(rows)
    clouds = [c for c in map(cloud_cover, items) if c is not None]
    measures = [
        Measure("item_count", len(items), "scenes", "scenes in the window that passed the filters"),
        Measure(
            "mean_cloud_cover_pct",
            sum(clouds) / len(clouds) if clouds else None,
            "%",
            "mean eo:cloud_cover of the scene footprints (lower is better)",
        ),
    ]
    return _written(
        path,
        {
            **as_metadata(measures),
            "collection": settings.collection,
            "source": source.url,
            **sources,
            **({"no_imagery": no_imagery} if no_imagery else {}),
            "items": dg.MetadataValue.md(table),
        },
        [judge_scenes(len(items), clouds, no_imagery)],
    )


@_asset(
    BAND_STACK,
    deps=[stac_items],
    description="Lazy, chunked, cloud-masked bands in physical units on one grid; stored as the recipe that reopens them (items, grid, mask and read settings), not a copy of the pixels.",
    kinds={"xarray", "stac"},
    output_required=False,  # a partition without imagery yields nothing: the rest is skipped
)
def band_stack(
    context: dg.AssetExecutionContext,
    config: BandStackConfig,
    aoi_registry: AOIRegistry,
    stac: StacCatalog,
    dask: DaskCluster,
    outputs: OutputStore,
) -> Iterator[dg.MaterializeResult]:
    window = partition_window(context)
    path = outputs.path(BAND_STACK, window)
    items = read_items(outputs.existing(STAC_ITEMS, window))
    if len(items) == 0:
        context.log.info(
            f"No imagery for partition {window.key} (see the stac_items check has_scenes): "
            "band_stack and the assets after it are skipped."
        )
        return
    with explained_failures():
        recipe = BandStackRecipe(
            items=items,
            aoi=aoi_registry.get(window.aoi_id).geometry,
            settings=to_settings(LoadSettings, config),
            source=stac.source(),
            remote=stac.read_settings(),
        )
        stack = write_band_stack(
            recipe,
            path,
            validate=lambda opened: refuse_full_disk(
                Estimate(**opened.attrs["estimate"]), outputs.root(), where=window.label
            ),
        )
    cost = Estimate(**stack.attrs["estimate"])
    seconds, how = estimate_seconds(outputs.root() / TIMINGS, cost.work_mpx)
    context.log.info(
        f"{window.key}: {cost.grid_pixels:,} px x {cost.time_slices} date(s), "
        f"{cost.bytes_read / 1e6:,.0f} MB to read: about {seconds:,.0f} s ({how})"
    )
    geobox = stack.odc.geobox
    unit = "m" if geobox.crs.units[0] in ("metre", "meter", "m") else str(geobox.crs.units[0])
    measures = [
        Measure("time_slices", stack.sizes["time"], "dates", "acquisition dates composited"),
        Measure(f"pixel_size_{unit}", abs(geobox.resolution.x), unit, "edge of one output pixel"),
        Measure("grid_pixels", cost.grid_pixels, "px", "the grid: the AOI's bounding box"),
        Measure("covered_pixels", cost.covered_pixels, "px", "AOI pixels some scene covers"),
        Measure("read_mb", cost.bytes_read / 1e6, "MB", "decoded bytes the mosaic will read"),
        Measure("products_mb", cost.bytes_written / 1e6, "MB", "uncompressed size of the products"),
        Measure("disk_needed_mb", cost.disk_needed / 1e6, "MB", "free space the writes need"),
        Measure("estimated_run_s", seconds, "s", f"the partition's whole run, from {how}"),
    ]
    yield _written(
        path,
        {
            **as_metadata(measures),
            "bands": stack.attrs["bands"],
            "scenes_per_slice": dg.MetadataValue.json(
                {
                    str(t)[:10]: ids.split(",")
                    for t, ids in zip(stack.time.values, stack.item_ids.values, strict=True)
                }
            ),
            "crs": str(geobox.crs),
            "shape": f"{geobox.shape.y} x {geobox.shape.x} px (rows x columns)",
            "mask": stack.attrs["mask_flags"] or "off",
        },
    )


@_asset(
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
    with explained_failures():
        stack = open_band_stack(outputs.existing(BAND_STACK, window))
        facts = write_mosaic(
            stack,
            aoi_registry.get(window.aoi_id).geometry,
            path,
            to_settings(CompositeSettings, config),
            where=window.label,
            tags={
                "aoi_id": window.aoi_id,
                "time_window": f"{window.start:%Y-%m-%d}/{window.end:%Y-%m-%d}",
            },
        )
    quality = to_settings(MosaicQuality, config)
    coverage = facts.coverage
    measures = [
        Measure("aoi_pixels", coverage.aoi_pixels, "px", DENOMINATORS["aoi"]),
        Measure("clear_pixels", coverage.clear, "px", "AOI pixels with a clear observation"),
        share(
            "clear", coverage.clear, coverage.aoi_pixels, "aoi", "clear pixels (higher is better)"
        ),
    ]
    if coverage.with_data is not None:
        measures.append(
            share("data", coverage.with_data, coverage.aoi_pixels, "aoi", "pixels any scene covers")
        )
    return _written(
        path,
        {
            **as_metadata(measures),
            "band_statistics": dg.MetadataValue.json(rounded(facts.stats.as_dict())),
        },
        [judge_clear_fraction(facts.coverage.clear_fraction, facts.coverage.aoi_pixels, quality)],
    )


@_asset(
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
    with explained_failures():
        composite = open_geotiff(outputs.existing(MOSAIC, window), chunks=outputs.chunk_size)
        names = to_settings(IndexSettings, config).names_for(composite)
        image = add_indices(composite, names)
        indices = [str(name) for name in image.data_vars if name not in composite.data_vars]
        tags = provenance(composite.attrs)
        tags.update(
            {
                "aoi_id": window.aoi_id,
                "package": f"geocluster_dagster {__version__}",
                "indices": ",".join(n.lower() for n in names),
                "config": json.dumps(config.model_dump()),
            }
        )
        facts = write_image(image, folder, indices, to_settings(CogSettings, config), tags=tags)
    band_stats = facts.stats.as_dict()
    files = {name: folder / name for name in facts.files}
    measures = [
        Measure("band_count", len(image.data_vars), "bands", "spectral bands plus indices"),
        Measure(
            "file_mb",
            sum(path.stat().st_size for path in files.values()) / 1e6,
            "MB",
            "the COGs on disk, with overviews",
        ),
    ]
    for band, values in band_stats.items():
        unit = band_unit(band)
        measures.append(
            Measure(
                f"{band}_mean",
                values["mean"],
                unit,
                f"mean over valid pixels (range {values['min']:.4g} .. {values['max']:.4g} "
                f"{unit}); valid: {values['valid_share_of_grid']:.4g} of the "
                f"{DENOMINATORS['grid']}",
                trend=False,
            )
        )
    return _written(
        folder,
        {
            **as_metadata(measures),
            "bands": ", ".join(facts.files[BANDS]),
            "indices": ", ".join(names) or "none",
            "storage": f"{BANDS}: "
            + ("uint16 DN with scale/offset, nodata 0" if facts.encoded else "float32, NaN nodata")
            + (f"; {INDICES}: float32, NaN nodata" if INDICES in facts.files else ""),
            **{
                f"path_{name.removesuffix('.tif')}": dg.MetadataValue.path(str(path))
                for name, path in files.items()
            },
            "band_statistics": dg.MetadataValue.json(rounded(band_stats)),
        },
        judge_cog({files[name]: bands for name, bands in facts.files.items()}, band_stats),
    )


@dg.asset(
    name=CLUSTER_MODEL.asset,
    partitions_def=aoi_partitions,
    group_name=GROUP,
    deps=[dg.AssetDep(GEOTIFF.asset, partition_mapping=_SAME_AOI)],
    description="The AOI's reference model: one model fitted on an equal sample from several "
    "date partitions' geotiffs, so that clusters (model: aoi_reference, or matched with model: "
    "partition) give a land cover the same id in every date.",
    kinds={"sklearn"},
)
@_step
def cluster_model(
    context: dg.AssetExecutionContext,
    config: ReferenceModelConfig,
    dask: DaskCluster,
    outputs: OutputStore,
) -> dg.MaterializeResult:
    aoi_id = context.partition_key
    folder = outputs.of_aoi(CLUSTER_MODEL, aoi_id)
    with explained_failures():
        pool = to_settings(PoolSettings, config)
        settings = to_settings(ClusterSettings, config)
        dates = pool.select(outputs.dates_with(GEOTIFF, aoi_id), aoi_id)
        context.log.info(f"Pooling {len(dates)} date partitions of {aoi_id}: {', '.join(dates)}")
        images = {
            date: open_image(
                outputs.path(GEOTIFF, window_of(f"{aoi_id}|{date}")), chunks=outputs.chunk_size
            )
            for date in dates
        }
        facts = write_reference_model(
            images,
            settings,
            pool,
            folder,
            aoi_id=aoi_id,
            naming=to_settings(NamingSettings, config),
        )
    pooled = sum(facts.pixels_per_date.values())
    measures = [
        Measure("n_clusters", facts.model.n_clusters, "clusters", "k of the reference model"),
        Measure("date_count", len(dates), "dates", "date partitions pooled"),
        Measure("pooled_pixels", pooled, "px", "sampled pixels the model was fitted on"),
        Measure(
            "feature_count", len(facts.model.features), "features", ", ".join(facts.model.features)
        ),
    ]
    return _written(
        folder,
        {
            **as_metadata(measures),
            **_k_choice_metadata(context, facts.k_choice, facts.model.n_clusters),
            "dates_pooled": ", ".join(dates),
            "pixels_per_date": dg.MetadataValue.json(facts.pixels_per_date),
            "features": ", ".join(facts.model.features),
            "model_path": dg.MetadataValue.path(str(folder / MODEL)),
            "reference_clusters": dg.MetadataValue.md(_markdown_table(facts.table.round(4))),
        },
    )


def _k_choice_metadata(
    context: dg.AssetExecutionContext, choice: KChoice | None, k: int
) -> dict[str, Any]:
    """How n_clusters: auto chose k, warning when the knee and the silhouette disagree."""
    if choice is None:
        return {}
    if choice.disagree:
        context.log.warning(f"n_clusters: auto chose k={k}: {choice.reason}")
    return {"k_choice": dg.MetadataValue.json(choice.as_dict()), "k_reason": choice.reason}


@_asset(
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
    folder = outputs.path(CLUSTERS, window)
    with explained_failures():
        settings = to_settings(ClusterSettings, config)
        plan = model_plan(
            to_settings(ModelSettings, config),
            window.aoi_id,
            lambda aoi: outputs.of_aoi(CLUSTER_MODEL, aoi),
        )
        context.log.info(f"Model: {plan.describe()}")
        image = open_image(outputs.existing(GEOTIFF, window), chunks=outputs.chunk_size)
        facts = write_clusters(
            image,
            settings,
            folder,
            aoi_id=window.aoi_id,
            plan=plan,
            naming=to_settings(NamingSettings, config),
        )
    sizes = facts.signatures[["cluster", "name", "pixel_count", "area_ha", "fraction"]].round(4)
    sizes = sizes.rename(columns={"fraction": "share_of_map"})
    classes = pd.DataFrame(
        [{"cluster": c.id, "name": c.name, "rule": c.rule} for c in facts.classes]
    )
    matched: dict[str, Any] = {}
    if facts.matches:
        table = pd.DataFrame([m.as_dict() for m in facts.matches])
        matched["matches"] = dg.MetadataValue.md(_markdown_table(table))
        new = [m for m in facts.matches if not m.matched]
        if new:
            context.log.warning(
                f"{len(new)} of {len(facts.matches)} clusters have no counterpart in the "
                f"reference model within match_max_distance={config.match_max_distance}: new ids "
                + ", ".join(f"{m.id} (nearest {m.distance:.2f})" for m in new)
            )
    measures = [
        Measure("n_clusters", facts.n_clusters, "clusters", "k of the map"),
        Measure(
            "fit_sample_pixels", facts.fit_sample_pixels, "px", "pixels the model was fitted on"
        ),
        Measure(
            "smallest_cluster_share_of_map",
            float(facts.signatures["fraction"].min()),
            "0..1",
            f"the smallest cluster, as a share of the {DENOMINATORS['map']}",
            digits=4,
        ),
    ]
    return _written(
        folder,
        {
            **as_metadata(measures),
            **_k_choice_metadata(context, facts.k_choice, facts.n_clusters),
            "model": plan.describe(),
            **matched,
            "algorithm": facts.summary["algorithm"],
            "features": ", ".join(facts.features),
            "preview_cluster_map": dg.MetadataValue.md(
                class_map_markdown(
                    folder / CLUSTER_MAP,
                    legend=list(
                        zip(
                            facts.signatures["cluster"].astype(int).tolist(),
                            facts.signatures["name"].astype(str).tolist(),
                            facts.signatures["fraction"].astype(float).tolist(),
                            strict=True,
                        )
                    ),
                )
            ),
            "cluster_map_path": dg.MetadataValue.path(str(folder / CLUSTER_MAP)),
            "signatures_path": dg.MetadataValue.path(str(folder / SIGNATURES_CSV)),
            "cluster_sizes": dg.MetadataValue.md(_markdown_table(sizes)),
            "class_names": dg.MetadataValue.md(_markdown_table(classes)),
        },
        judge_clusters(
            dict(zip(facts.signatures["cluster"], facts.signatures["pixel_count"], strict=True)),
            {c.id: c.name for c in facts.classes},
            to_settings(ClusterQuality, config),
        ),
    )


@_asset(
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
    with explained_failures():
        image = open_image(outputs.existing(GEOTIFF, window), chunks=outputs.chunk_size)
        stored = open_clusters(outputs.existing(CLUSTERS, window), chunks=outputs.chunk_size)
        settings, not_drawn = _figures_setting(context, to_settings(DiagnosticsSettings, config))
        facts = write_diagnostics(image, stored, folder, settings, label=window.label)
        scores = facts.scores
        measures = [
            Measure(name, float(getattr(scores, name)), "", f"{better}: {what}", digits=4)
            for name, (better, what) in SCORE_GUIDE.items()
        ]
        measures += [
            Measure(
                "n_scored",
                int(scores.n_scored),
                "px",
                "pixels behind every score but the silhouette",
                trend=False,
            ),
            Measure(
                "n_silhouette",
                int(scores.n_silhouette),
                "px",
                "pixels behind the silhouette",
                trend=False,
            ),
            Measure(
                "elbow_knee_k",
                facts.knee if facts.knee is not None else "none",
                "clusters",
                "the elbow curve's knee (kneed)",
            ),
            Measure(
                "silhouette_best_k",
                facts.silhouette_best,
                "clusters",
                "k of the elbow curve's best silhouette",
            ),
            Measure(
                "cover_best_k",
                facts.cover_best if facts.cover_best is not None else "none",
                "clusters",
                "the fewest clusters whose covers agree with their pixels' own within 1 point "
                "of the best k (what n_clusters: auto chooses)",
            ),
        ]
        metadata: dict[str, Any] = as_metadata(measures)
        metadata["k_advice"] = k_advice(
            stored.model.n_clusters, facts.knee, facts.silhouette_best, facts.cover_best
        )
        # Every figure, legible in the UI (one click on the entry opens it at 1000 px).
        for name in sorted(facts.figures, key=_figure_order):
            metadata[f"preview_{name}"] = dg.MetadataValue.md(figure_markdown(facts.figures[name]))
    for name, png in facts.figures.items():
        metadata[f"plot_{name}"] = dg.MetadataValue.path(str(png))
    if not facts.figures:
        metadata["figures"] = f"not drawn ({not_drawn})"
    separation = to_settings(SeparationQuality, config)
    return _written(folder, metadata, [judge_silhouette(facts.scores.silhouette, separation)])


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
            deps=[
                clusters,
                geotiff,
                dg.AssetDep(CLUSTER_MODEL.asset, partition_mapping=_SAME_AOI),
            ],
            group_name=GROUP,
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
        _check_spec(CLUSTER_CHANGE, name, description) for name, description in _CHANGE_CHECKS
    ],
    partitions_def=partitions,
    can_subset=True,
)
@_step
def cluster_change(
    context: dg.AssetExecutionContext,
    config: ChangeConfig,
    dask: DaskCluster,
    outputs: OutputStore,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    window = partition_window(context)
    folder = outputs.path(CLUSTER_CHANGE, window)
    with explained_failures():
        settings = to_settings(ChangeSettings, config)
        earlier = settings.earlier(outputs.dates_with(CLUSTERS, window.aoi_id), window.date_key)
        if earlier is None:
            reason = (
                f"{window.key} is the first date of AOI {window.aoi_id} with a map: there is "
                "nothing earlier to compare with."
            )
            context.log.info(reason)
            yield _not_compared(folder, reason)
            return
        before, after = (
            _dated_image(outputs, window_of(f"{window.aoi_id}|{date}"), date)
            for date in (earlier, window.date_key)
        )
        reference_file = reference_model_file(outputs.of_aoi(CLUSTER_MODEL, window.aoi_id))
        try:
            common = common_model(
                before,
                after,
                reference=load_model(reference_file) if reference_file.exists() else None,
                reference_source=str(reference_file),
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
        context.log.info(f"Both dates classified by {common.describe()}")
        facts = compare_dates(
            before, after, common, folder, settings=settings, label=f"AOI {window.aoi_id!r},"
        )
    summary = facts.summary
    areas = facts.class_areas[
        ["cluster", "name", "hectares_before", "hectares_after", "delta_hectares"]
    ]
    moves = facts.transitions[facts.transitions["changed"]].nlargest(10, "pixels")
    yield _written(
        folder,
        {
            **as_metadata(
                [
                    Measure(
                        "changed_hectares",
                        float(summary["changed_hectares"]),
                        "ha",
                        "area whose land cover changed",
                    ),
                    Measure(
                        "changed_share_of_compared",
                        float(summary["changed_share"]),
                        "0..1",
                        f"pixels whose land cover changed, as a share of the "
                        f"{DENOMINATORS['compared']}",
                        digits=4,
                    ),
                    Measure(
                        "same_cover_share_of_compared",
                        float(summary["same_cover_share"]),
                        "0..1",
                        "pixels now in another cluster of the same land cover (not change), "
                        f"as a share of the {DENOMINATORS['compared']}",
                        digits=4,
                    ),
                    Measure(
                        "confident_changed_share",
                        float(summary["confident"]["changed_share"]),
                        "0..1",
                        "changed land cover, as a share of the compared pixels both dates "
                        "label confidently (simplified silhouette above 0.25)",
                        digits=4,
                    ),
                    Measure(
                        "compared_share_of_map",
                        float(summary["overlap"]),
                        "0..1",
                        f"pixels compared, as a share of this date's {DENOMINATORS['map']}",
                        digits=4,
                    ),
                    Measure(
                        "unknown_pixels",
                        int(summary["unknown_pixels"]),
                        "px",
                        "mapped in one date only",
                    ),
                ]
            ),
            "compared_with": earlier,
            "classified_by": common.describe(),
            "largest_transitions": dg.MetadataValue.md(
                "\n".join(f"1. {t}" for t in summary["largest_transitions"]) or "no change"
            ),
            "class_area_deltas_ha": dg.MetadataValue.md(_markdown_table(areas.round(2))),
            "transitions_top10": dg.MetadataValue.md(_markdown_table(moves.round(2))),
            "preview_change_map": dg.MetadataValue.md(figure_markdown(folder / CHANGE_PNG)),
            "preview_transitions": dg.MetadataValue.md(figure_markdown(folder / TRANSITIONS_PNG)),
            "change_map_path": dg.MetadataValue.path(str(folder / CHANGE_MAP)),
            "transitions_path": dg.MetadataValue.path(str(folder / TRANSITIONS)),
        },
        [
            Judgement(
                "comparable_ids",
                True,
                "warn",
                f"Both dates classified by {common.describe()}",
                {"model": common.how, "source": common.source},
            ),
            judge_overlap(summary["overlap"], settings.min_overlap, (earlier, window.date_key)),
            judge_plausible_change(
                summary, settings.warn_changed_share, settings.warn_stable_change
            ),
        ],
    )


def _not_compared(folder: Path, reason: str, earlier: str | None = None) -> dg.MaterializeResult:
    """The partition's change, recorded as "not compared" rather than left unmaterialized: a
    backfill counts an asset a run did not materialize as failed, and the map of a first date
    has nothing to fail at. A change product an earlier run left (of maps since remade) is
    removed, so that nothing downstream (the STAC Item, the report) publishes it."""
    if folder.exists():
        retired = folder.with_name(f".{folder.name}.retired")
        folder.rename(retired)
        remove_quietly(retired)
    return dg.MaterializeResult(
        metadata={
            "not_compared": reason,
            "compared_with": earlier or "none",
        }
    )


def _figure_order(name: str) -> tuple[int, str]:
    """The maps and the signatures first (PREVIEWS), then the other figures by name."""
    return (PREVIEWS.index(name) if name in PREVIEWS else len(PREVIEWS), name)


def _dated_image(outputs: OutputStore, window: PartitionWindow, date: str) -> DatedImage:
    """The date's geotiff (lazy) and the model its clusters map was made with."""
    image = open_image(outputs.existing(GEOTIFF, window), chunks=outputs.chunk_size)
    stored = open_clusters(outputs.existing(CLUSTERS, window))
    source = (stored.summary.get("model") or {}).get("reference") or ""
    return DatedImage(date, image, stored.model, source)


@_asset(
    STAC_ITEM,
    deps=[geotiff, clusters, diagnostics],
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
    with explained_failures():
        geotiff_path = outputs.existing(GEOTIFF, window)
        with rasterio.open(geotiff_path / BANDS) as src:
            tags = src.tags()
        clusters_summary = json.loads(
            (outputs.existing(CLUSTERS, window) / "summary.json").read_text()
        )
        change = outputs.path(CLUSTER_CHANGE, window)
        report = write_report(
            ReportInputs(
                title=f"geocluster: {window.label}",
                items=outputs.existing(STAC_ITEMS, window),
                mosaic=outputs.existing(MOSAIC, window),
                geotiff=geotiff_path,
                clusters=outputs.existing(CLUSTERS, window),
                diagnostics=outputs.existing(DIAGNOSTICS, window),
                change=change if change.exists() else None,
            ),
            outputs.path(REPORT, window),
        )
        products = PartitionProducts(
            aoi_id=window.aoi_id,
            date_key=window.date_key,
            start=window.start,
            end=window.end,
            aoi=aoi_registry.get(window.aoi_id).geometry,
            geotiff=geotiff_path,
            clusters=outputs.existing(CLUSTERS, window),
            diagnostics=outputs.existing(DIAGNOSTICS, window),
            change=change if change.exists() else None,
            report=report,
            sources=list(read_items(outputs.existing(STAC_ITEMS, window))),
            search=stac.source().url,
            lineage={
                "mask_flags": tags.get("mask_flags", ""),
                "composite": tags.get("composite", ""),
                "collection": tags.get("collection", ""),
                "indices": tags.get("indices", ""),
                "model": clusters_summary.get("model"),
                "algorithm": clusters_summary.get("algorithm"),
                "n_clusters": clusters_summary.get("n_clusters"),
                "features": clusters_summary.get("features"),
            },
        )
        path = write_item(products, outputs.root())
    document = json.loads(path.read_text())
    _time_the_run(context, outputs, window)
    return _written(
        path,
        {
            **as_metadata(
                [
                    Measure(
                        "asset_count", len(document["assets"]), "files", "products in the Item"
                    ),
                    Measure(
                        "derived_from",
                        len([k for k in document["links"] if k["rel"] == "derived_from"]),
                        "scenes",
                        "source scenes the Item links to (derived_from)",
                    ),
                    Measure("report_mb", report.stat().st_size / 1e6, "MB", "the HTML report"),
                ]
            ),
            "catalog": dg.MetadataValue.path(str(outputs.root() / CATALOG_DIR / "catalog.json")),
            "report": dg.MetadataValue.path(str(report)),
            "assets": ", ".join(document["assets"]),
        },
    )


#: This machine's timed runs (size, seconds), under the output root: the estimates' rate.
TIMINGS = ".timings.jsonl"


def _time_the_run(
    context: dg.AssetExecutionContext, outputs: OutputStore, window: PartitionWindow
) -> None:
    """The partition's run, from its start to its last asset, recorded for later estimates."""
    record = context.instance.get_run_record_by_id(context.run.run_id)
    estimate = json.loads(outputs.existing(BAND_STACK, window).read_text()).get("estimate")
    if record is None or record.start_time is None or not estimate:
        return  # a run of the last assets alone says nothing about a partition's time
    selection = context.run.asset_selection  # None or empty: every asset of the job
    if selection and dg.AssetKey(BAND_STACK.asset) not in selection:
        return
    seconds = time.time() - record.start_time
    record_run(outputs.root() / TIMINGS, Estimate(**estimate).work_mpx, seconds)


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


#: Each AOI x date asset's product, by asset name.
PRODUCTS = {
    p.asset: p
    for p in (STAC_ITEMS, BAND_STACK, MOSAIC, GEOTIFF, CLUSTERS, DIAGNOSTICS, CLUSTER_CHANGE)
}

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
ASSETS = [*PIPELINE_ASSETS, cluster_model]
