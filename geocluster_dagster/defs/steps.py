"""How every asset step runs: its settings checked first, its progress in the run's log, its
errors as failures that say what to fix, what it leaves stale said when it fails, and its
product's facts turned into a materialization with its checks.

The assets (:mod:`.assets`) are these steps around one call to a product's writer.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import inspect
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from .. import progress
from ..aoi import validate_aoi_id
from ..change import ChangeSettings
from ..errors import ConfigError, GeoclusterError
from ..products.cluster_model import model_plan
from ..products.described import Facts
from ..products.report import record_checks
from ..products.stac_item import withdraw_stac_item
from ..quality import Judgement
from ..reference import ModelSettings
from .config import ChangeConfig, ClusterConfig, SettingsRefused, check_settings, to_settings
from .outputs import CLUSTER_MODEL, CLUSTERS, PRODUCTS, REPORT, OutputStore, Product
from .partitions import PartitionWindow, partition_window, partitions, window_of
from .readable import metadata_of
from .resources import AOIRegistry, StacCatalog

GROUP = "geocluster"

#: The products a partition's STAC Item and report describe: a step that rewrites one
#: withdraws them until stac_item publishes them again.
PUBLISHED = set(PRODUCTS)


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


def _return_freed_memory() -> None:
    """Hand the memory a finished step freed back to the system (glibc's ``malloc_trim``).

    The steps of a run share one process, and glibc keeps the block buffers a step freed in its
    heap: the next step's peak would stand on them."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to hand back this way
        return
    libc.malloc_trim(0)


def step(compute: Callable[..., Any]) -> Callable[..., Any]:
    """An asset's body, run with every asset's settings of this run checked first (before this
    step writes anything), the package's errors explained, and the progress of its long passes
    logged into the run's log every few seconds (the UI shows the lines while the step runs)."""

    @contextlib.contextmanager
    def running(context: dg.AssetExecutionContext) -> Iterator[None]:
        try:
            check_settings(context.run.run_config)
        except SettingsRefused as err:
            # The run stops at its first step, but the setting is another step's: say whose,
            # in one line (the settings' own checks are not the user's traceback to read).
            this = context.asset_key.to_user_string()
            whose = "this step's" if err.asset == this else f"a setting of `{err.asset}`"
            raise dg.Failure(
                description=f"Refused before anything was computed, {whose}: {err} Fix it "
                f"in the run config (the launchpad's ops: {err.asset}: config) and launch again.",
                metadata={"error": "ConfigError", "setting_of": err.asset, "stopped_at": this},
            ) from None
        log = progress.Throttled(lambda update: context.log.info(update.describe()))
        try:
            with explained_failures(), progress.listening(log), unexpected_failures():
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


def not_evaluated_checks(check_names: Sequence[str], why: str) -> list[dg.AssetCheckResult]:
    """The checks of a step that had nothing to judge, recorded as not evaluated (passed, so
    that nothing downstream stops; ``evaluated: false`` says which they are) and why."""
    return [
        dg.AssetCheckResult(
            check_name=name,
            passed=True,
            description=f"Not evaluated: {why}.",
            metadata={"evaluated": False},
        )
        for name in check_names
    ]


def after_imagery(check_names: Sequence[str] = ()) -> Callable[[Callable[..., Any]], Any]:
    """For a step after the search: in a partition whose search found no scene, it writes
    nothing and records a materialization that says "no imagery" (with its checks, not
    evaluated) instead of being skipped. Dagster counts an asset a run did not materialize as
    failed in an asset backfill, and the partitions view shows it as never run; so a month
    without a clear scene would look like a failure, or like work left to do."""

    def wrap(compute: Callable[..., Any]) -> Callable[..., Any]:
        def no_imagery(context: dg.AssetExecutionContext, outputs: OutputStore) -> Any:
            window = partition_window(context)
            if not outputs.found_no_imagery(window):
                return None
            reason = (
                f"No imagery for {window.label}: the stac_items search found no scene (see "
                "its has_scenes check for why, and which filter to relax)."
            )
            context.log.info(f"{reason} {context.asset_key.to_user_string()} writes nothing.")
            not_evaluated = not_evaluated_checks(check_names, "no imagery in the window")
            return dg.MaterializeResult(
                metadata={"no_imagery": reason}, check_results=not_evaluated or None
            )

        if inspect.isgeneratorfunction(compute):

            @functools.wraps(compute)
            def generate(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any) -> Any:
                empty = no_imagery(context, kwargs["outputs"])
                if empty is not None:
                    yield empty
                    return
                yield from compute(context, *args, **kwargs)

            return generate

        @functools.wraps(compute)
        def call(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any) -> Any:
            empty = no_imagery(context, kwargs["outputs"])
            return empty if empty is not None else compute(context, *args, **kwargs)

        return call

    return wrap


def _withdraw_publication(context: dg.AssetExecutionContext) -> None:
    """A step rewrote one of the products the partition's STAC Item and report describe:
    withdraw both, so that the catalog never lists a checksum or a figure of the products
    before (the run's stac_item step publishes them again from what is now on disk)."""
    if not {key.to_user_string() for key in context.selected_asset_keys} & PUBLISHED:
        return
    window = partition_window(context)
    outputs: OutputStore = context.resources.outputs
    report = outputs.path(REPORT, window)
    if withdraw_stac_item(outputs.root(), window.aoi_id, window.date_key, report):
        context.log.info(
            f"The STAC Item and report of {window.key} are withdrawn until its stac_item step "
            "publishes them again: they described the products before this run."
        )


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
    earlier = outputs.present([a for a in after if a not in rewritten], window)
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


def check_what_settings_name(
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
        model_plan(choice, window.aoi_id, lambda aoi: outputs.read_of_aoi(CLUSTER_MODEL, aoi))
    except GeoclusterError as err:
        raise ConfigError(f"ops.clusters.config.model={choice.model!r}: {err}") from err
    change_config = (ops.get("cluster_change") or {}).get("config") or {}
    change = to_settings(ChangeSettings, ChangeConfig(**change_config))
    try:
        change.earlier(outputs.dates_with(CLUSTERS, window.aoi_id), window.date_key)
    except ConfigError as err:
        raise ConfigError(f"ops.cluster_change.config.{err}") from err


def sources_used(
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


def product_asset(
    product: Product,
    checks: Sequence[tuple[str, bool, str]] = (),
    *,
    searches: bool = False,
    **kwargs: Any,
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """``dg.asset`` for a product of the graph: named after it, partitioned, in the group, with
    its checks (name, blocking, description): their results come with its materialization.
    Every product but the search's own (``searches``) says "no imagery" in a partition whose
    search found no scene (:func:`after_imagery`)."""
    specs = [
        check_spec(product, name, description, blocking) for name, blocking, description in checks
    ]
    asset = dg.asset(
        name=product.asset,
        partitions_def=partitions,
        group_name=GROUP,
        check_specs=specs or None,
        code_version=code_version(product),
        **kwargs,
    )
    if searches:
        return lambda compute: asset(step(compute))
    empty = after_imagery([name for name, _, _ in checks])
    return lambda compute: asset(step(empty(compute)))


def code_version(product: Product) -> str:
    """The version of the product's writer (``VERSION`` of its module in
    :mod:`geocluster_dagster.products`), which Dagster compares with the one each partition
    was made with."""
    module = importlib.import_module(f"geocluster_dagster.products.{product.asset}")
    return str(module.VERSION)


def check_spec(product: Product, name: str, description: str, blocking: bool = False) -> Any:
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


def checked(judgements: Sequence[Judgement]) -> list[dg.AssetCheckResult]:
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


def written(
    context: dg.AssetExecutionContext,
    path: Path,
    facts: Facts,
    judgements: Sequence[Judgement] = (),
    **metadata: Any,
) -> dg.MaterializeResult[Any]:
    """The materialization of the product at ``path`` with what its ``facts`` say (their
    warnings into the run's log), then ``metadata``; its checks' verdicts are also kept beside
    it (``<product>.checks.json``), for the partition's report."""
    for warning in facts.warnings():
        context.log.warning(warning)
    if judgements:
        record_checks(path, judgements)
    version = facts.data_version()
    # On the materialization only: metadata returned with the result would be stored twice in
    # the event log, in the step's output event too.
    context.add_asset_metadata(
        {"output_path": dg.MetadataValue.path(str(path)), **metadata_of(facts), **metadata},
        asset_key=context.asset_key,
    )
    return dg.MaterializeResult(
        check_results=checked(judgements) or None,
        data_version=dg.DataVersion(version) if version else None,
    )


def not_written(**metadata: Any) -> dg.MaterializeResult[Any]:
    """A materialization with nothing written (e.g. a change with nothing to compare with)."""
    return dg.MaterializeResult(metadata=metadata)
