"""Many partitions in one run: `geocluster_batch` runs the pipeline of each of its partitions,
one after another, in its own process.

A backfill of small AOIs spends most of each run before the first pixel: a new process, its
imports, the code location, the instance, and the first use of scikit-learn's and matplotlib's
machinery. A batch run pays them once. Each partition is still a Dagster run of its own
(`execute_in_process` against this instance, tagged with the batch's run id): its own
materializations, data versions, checks, logs and failure, shown in the UI like any run. A
partition that fails fails its own run; the batch goes on with the others and then ends
failed, naming the partitions that failed and their runs.

Why not Dagster's backfill policies: a policy runs a *range* of partitions through each asset's
function once, and one failure fails every partition of the range (and skips their downstream
steps); Dagster cannot record that the mosaic of one partition of the range failed while the
others succeeded. Policies also apply only to asset backfills (the asset page's "Materialize"),
not to the job page's backfills.
"""

import time
from typing import Any

import dagster as dg
from pydantic import Field

from ..errors import ConfigError
from .config import check_settings
from .jobs import pipeline_job
from .location import check_partitioned, partitioned_job
from .partitions import AOI_PARTITIONS, date_key_of, partition_key
from .resources import AOIRegistry
from .run_health import RUN_HOST_TAG, RUN_PID_TAG, tag_this_process

#: The tag every partition's run of a batch carries: the batch run's id.
BATCH_TAG = "geocluster/batch"


class BatchConfig(dg.Config):
    aois: list[str] = Field(
        description="AOI ids from the registry; every AOI is run for every date of `dates`."
    )
    dates: list[str] = Field(
        description="Date windows, each a month (2023-06) or a day (2023-06-01) inside it."
    )
    job: str = Field(
        default=pipeline_job.name,
        description="The job each partition runs (geocluster_pipeline or geocluster_accuracy).",
    )
    run_config: dict[str, Any] = Field(
        default={},
        description="The run config of every partition's run (its ops and resources), as the "
        "job's own launchpad takes it.",
    )


def batch_partitions(config: BatchConfig, registry: AOIRegistry) -> list[dg.MultiPartitionKey]:
    """The batch's partitions, AOI by AOI (all dates of one AOI together); refused, naming the
    field, when an AOI is not in the registry or a date outside the deployment's windows."""
    if not config.aois or not config.dates:
        raise ConfigError(
            "ops.run_partitions.config: give at least one AOI (aois) and one date (dates)."
        )
    known = registry.load()
    unknown = [aoi for aoi in config.aois if aoi not in known]
    if unknown:
        raise ConfigError(
            f"ops.run_partitions.config.aois: {unknown} not in the AOI registry "
            f"({registry.resolved_path()}), which has {sorted(known)}."
        )
    dates = [date_key_of(when, "ops.run_partitions.config.dates:") for when in config.dates]
    aois = list(dict.fromkeys(config.aois))
    return [partition_key(aoi, date) for aoi in aois for date in dict.fromkeys(dates)]


def _job(context: dg.OpExecutionContext, name: str) -> dg.JobDefinition:
    """The job of the code location this run was launched from (so the partitions' runs are
    of the very job the UI shows: the same snapshot, re-executable as its own runs), or, in
    a run executed in process without one, the same job built here."""
    check_partitioned(name)
    # A run launched from a code location has its origin, and its context the repository;
    # a job executed in process on its own has neither.
    if context.dagster_run.job_code_origin is not None:
        repository = context.repository_def
        if repository.has_job(name):
            return repository.get_job(name)
    return partitioned_job(name)


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    """What failed in a partition's run: its steps' error messages, first lines."""
    failures = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        described = data.user_failure_data.description if data.user_failure_data else None
        text = described or (data.error.message if data.error else "") or "failed"
        failures.append(f"{event.step_key}: {text.strip().splitlines()[0].rstrip('.')}")
    return "; ".join(failures) or "the run failed outside its steps (see its log)"


def _refuse_watched_workers(instance: dg.DagsterInstance) -> None:
    """The partitions' runs live inside this run's worker; a run launcher that watches every
    run's own worker (Kubernetes' pod per run, under run monitoring) would find none for them
    and mark them failed while they run."""
    if instance.run_monitoring_enabled and instance.run_launcher.supports_check_run_worker_health:
        raise dg.Failure(
            description=f"geocluster_batch cannot run under this instance's run launcher "
            f"({type(instance.run_launcher).__name__}) with run monitoring on: it checks each "
            "run's own worker (a pod per run), and the partitions of a batch run inside the "
            "batch's worker. Backfill the partitions with geocluster_pipeline instead (a run "
            "each), or turn run monitoring off for this deployment."
        )


@dg.op(
    description="Run a job (geocluster_pipeline by default) for every AOI x date of the config, "
    "one partition after another in this run's process: each partition a run of its own, with "
    "its own materializations, checks and failure.",
)
def run_partitions(
    context: dg.OpExecutionContext, config: BatchConfig, aoi_registry: AOIRegistry
) -> None:
    _refuse_watched_workers(context.instance)
    # Like every run of the code location: a killed batch is found by its process and marked
    # failed (dead_run_sensor), not left "started".
    tag_this_process(context.instance, context.run_id)
    try:
        keys = batch_partitions(config, aoi_registry)
        job = _job(context, config.job)
    except ConfigError as err:
        raise dg.Failure(description=str(err)) from None
    try:
        dg.validate_run_config(job, config.run_config)
        check_settings(config.run_config)
    except ConfigError as err:
        raise dg.Failure(
            description=f"ops.run_partitions.config.run_config is not a valid run config of "
            f"{job.name}: {err}"
        ) from None
    except dg.DagsterInvalidConfigError as err:
        problems = "; ".join(error.message for error in err.errors) or str(err)
        raise dg.Failure(
            description=f"ops.run_partitions.config.run_config is not a valid run config of "
            f"{job.name}: {problems}. Its fields are in docs/configuration.md and the job's "
            "launchpad."
        ) from None
    known = set(context.instance.get_dynamic_partitions(AOI_PARTITIONS))
    new = sorted({key.keys_by_dimension["aoi"] for key in keys} - known)
    if new:  # in the registry, not yet partitions (the registry sensor adds them too)
        context.instance.add_dynamic_partitions(AOI_PARTITIONS, new)

    # The batch's own tags (geocluster/figures, a Kubernetes config, ...) go on every
    # partition's run; Dagster's (its backfill, partition, ...) are the batch run's alone.
    own = (RUN_HOST_TAG, RUN_PID_TAG)  # each run tags its own process
    tags = {
        k: v for k, v in context.run.tags.items() if not k.startswith("dagster/") and k not in own
    }
    tags[BATCH_TAG] = context.run_id
    outcomes: list[tuple[str, str, str, float, str]] = []
    for n, key in enumerate(keys, start=1):
        started = time.monotonic()
        result = job.execute_in_process(
            partition_key=key,
            instance=context.instance,
            run_config=config.run_config,
            tags=tags,
            raise_on_error=False,
        )
        seconds = time.monotonic() - started
        status = "succeeded" if result.success else "failed"
        detail = "" if result.success else _failure_text(result)
        outcomes.append((str(key), status, result.run_id, seconds, detail))
        context.log.info(
            f"[{n}/{len(keys)}] {key}: {status} in {seconds:.1f} s (run {result.run_id})"
            + (f": {detail}" if detail else "")
        )

    failed = [o for o in outcomes if o[1] == "failed"]
    table = _table(outcomes)
    if failed:
        listed = "; ".join(
            f"{key} (run {run_id}): {detail}" for key, _, run_id, _, detail in failed
        )
        raise dg.Failure(
            description=f"{len(failed)} of {len(outcomes)} partitions failed, the others are "
            f"materialized: {listed}. Each failed run's log says what to fix; run those "
            "partitions again once fixed.",
            metadata={"partitions": dg.MetadataValue.md(table)},
        )
    context.add_output_metadata(
        {
            "partitions": dg.MetadataValue.md(table),
            "seconds per partition": round(sum(o[3] for o in outcomes) / len(outcomes), 2),
        }
    )


def _table(outcomes: list[tuple[str, str, str, float, str]]) -> str:
    """Markdown: a row per partition, its run linked (the UI's run page)."""
    rows = [
        # a partition key's "|" would split its cell in two
        f"| {key.replace('|', chr(92) + '|')} | {status} | [{run_id[:8]}](/runs/{run_id}) | "
        f"{seconds:.1f} |"
        for key, status, run_id, seconds, _ in outcomes
    ]
    return "\n".join(["| partition | status | run | seconds |", "|---|---|---|---:|", *rows])


@dg.job(
    name="geocluster_batch",
    executor_def=dg.in_process_executor,
    description="Many partitions in one run (a backfill of small AOIs): every AOI x date of the "
    "config through geocluster_pipeline, one after another, each partition a run of its own; "
    "the process, imports and warm-up are paid once.",
)
def batch_job() -> None:
    run_partitions()
