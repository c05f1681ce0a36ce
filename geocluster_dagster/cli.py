"""`geocluster`: run the asset graph from a terminal, with the same definitions the UI uses.

geocluster demo                      # build the embedded demo and materialize the whole graph
geocluster materialize --aoi ID --date 2023-06 [--config run_config.yaml]   # or --month
geocluster aois                      # list (and validate) the AOI registry
geocluster sync-aois                 # add every registry AOI as a partition
geocluster reference --aoi ID        # fit the AOI's reference model on its materialized dates
geocluster demo-scene                # add a new synthetic scene for the new-imagery sensor
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .errors import ConfigError, GeoclusterError, InstanceUnavailable, OutputNotWritable

if TYPE_CHECKING:
    import dagster as dg


#: The clustering scores printed after a run, from whichever asset's metadata records them.
_SCORES = ("silhouette", "calinski_harabasz", "davies_bouldin", "inertia")


def _instance() -> dg.DagsterInstance:
    """The Dagster instance of $DAGSTER_HOME, defaulting to <output root>/.dagster_home."""
    from .defs.resources import output_root
    from .storage import local_state

    if not os.environ.get("DAGSTER_HOME"):
        home = local_state(output_root()) / ".dagster_home"
        try:
            _create_own_instance(home)
        except OSError as err:
            raise OutputNotWritable(
                f"cannot create the CLI's Dagster instance in {home}: {err.strerror or err}. "
                "It lives under the output root by default: choose a writable --output (env "
                "GEOCLUSTER_OUTPUT), or set DAGSTER_HOME to a writable folder."
            ) from err
        os.environ["DAGSTER_HOME"] = str(home)
    return _open_instance(Path(os.environ["DAGSTER_HOME"]))


#: The run queue of the CLI's own instance, which `dg dev` also uses (the README's UI
#: command): deploy/dagster.yaml's, which tests/test_deploy.py checks it against. Dagster's
#: default queue is looked at every 5 s, so a run launched from the UI waited 2.5 s on average
#: before it started; and two runs of one AOI must never run at once (same outputs).
RUN_QUEUE = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
    dequeue_interval_seconds: 1
    tag_concurrency_limits:
      - key: dagster/partition/aoi
        value:
          applyLimitPerUniqueValue: true
        limit: 1
"""

_OWN_INSTANCE = (
    # Read retries and token renewals are logged by `geocluster_dagster`: show them.
    "python_logs:\n  managed_python_loggers:\n    - geocluster_dagster\n"
    # A terminal tool's own instance: no usage statistics, and no banner about them.
    "telemetry:\n  enabled: false\n"
)


def _create_own_instance(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    # An instance an earlier version made (its file unchanged) gets the run queue too.
    if not config.exists() or config.read_text() == _OWN_INSTANCE:
        config.write_text(_OWN_INSTANCE + RUN_QUEUE)


def _open_instance(home: Path) -> dg.DagsterInstance:
    """The instance at ``home``, or one line saying why it cannot be opened and what to do."""
    import dagster as dg
    import yaml

    from .defs.run_health import RUN_PID_TAG, mark_dead_runs
    from .storage import exclusive_lock

    fix = (
        "Fix or move it, or unset DAGSTER_HOME to use the CLI's own instance under the output root."
    )
    if not home.is_dir():
        raise InstanceUnavailable(
            f"DAGSTER_HOME={home} is not a folder. Create it (mkdir -p {home}), or unset "
            "DAGSTER_HOME to use the CLI's own instance under the output root."
        )
    try:
        # Two commands starting at once on a new instance would both create its SQLite tables,
        # and one would fail ("table ... already exists"): one creates them, the other waits.
        with exclusive_lock(
            home / ".instance.lock",
            what=f"The Dagster instance {home}",
            holder="geocluster",
            timeout_s=120,
            on_wait=lambda _: None,
        ):
            instance = dg.DagsterInstance.get()
            for run in mark_dead_runs(instance):
                click.echo(
                    f"Run {run.run_id[:8]} ({run.job_name}, {run.tags.get('dagster/partition', '')}) "
                    f"was STARTED but its process (pid {run.tags.get(RUN_PID_TAG)}) is gone: "
                    "marked failed.",
                    err=True,
                )
            return instance
    except yaml.YAMLError as err:
        raise InstanceUnavailable(
            f"{home / 'dagster.yaml'} is not valid YAML ({_yaml_problem(err)}). {fix}"
        ) from err
    except dg.DagsterInvalidConfigError as err:
        problems = "; ".join(e.message for e in err.errors) or str(err).splitlines()[0]
        raise InstanceUnavailable(
            f"{home / 'dagster.yaml'} is not a valid Dagster instance config: {problems}. {fix}"
        ) from err
    except OSError as err:
        raise InstanceUnavailable(
            f"the Dagster instance {home} cannot be written: {err.strerror or err}. {fix}"
        ) from err
    except Exception as err:  # sqlalchemy, Dagster's checks: any other reason, in one line
        if _database_error(err):
            raise _database_fault(home, err, "cannot be read") from err
        raise InstanceUnavailable(
            f"the Dagster instance {home} cannot be opened: {_first_line(err)}. {fix}"
        ) from err


def _database_error(err: BaseException) -> bool:
    return type(err).__module__.startswith(("sqlalchemy", "sqlite3")) or (
        "database" in _first_line(err).lower()
    )


def _database_fault(home: Path, err: BaseException, doing: str) -> InstanceUnavailable:
    """One line for a run database that failed: a full disk (SQLite says "database or disk is
    full" or "disk I/O error") is named as such, with the room left; anything else is a corrupt
    database."""
    from .storage import disk_full

    reason = _first_line(err)
    if disk_full(home / "history") or "disk is full" in reason or "disk I/O" in reason:
        free = shutil.disk_usage(home).free
        return InstanceUnavailable(
            f"the run database of the Dagster instance {home} {doing}: the disk holding it is "
            f"full ({free / 1e6:.1f} MB free; {reason}). Free space there, or set DAGSTER_HOME "
            "to a folder on another disk (by default the CLI keeps its instance under the "
            "output root, --output / env GEOCLUSTER_OUTPUT)."
        )
    return InstanceUnavailable(
        f"the run database of the Dagster instance {home} {doing} ({reason}): it is corrupt or "
        f"not a database. Move {home}/history and {home}/storage aside to start a new history, "
        "or unset DAGSTER_HOME."
    )


def _yaml_problem(err: Exception) -> str:
    """What a YAML parser refused, and where: "expected ... at line 2, column 1"."""
    where = getattr(err, "problem_mark", None)
    at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
    return f"{getattr(err, 'problem', None) or str(err).splitlines()[0]}{at}"


def _first_line(err: BaseException) -> str:
    """The innermost cause's message, first line (sqlalchemy wraps sqlite3's own words)."""
    while err.__cause__ is not None or getattr(err, "orig", None) is not None:
        err = getattr(err, "orig", None) or err.__cause__  # type: ignore[assignment]
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _sync_aois(instance: dg.DagsterInstance, run_config: dict[str, Any] | None = None) -> list[str]:
    """Add the registry's AOIs as partitions. The registry is the one the run will use: the
    ``aoi_registry`` resource config of ``run_config`` (e.g. ``auto_orient: true``), if any."""
    from .defs.partitions import AOI_PARTITIONS
    from .defs.resources import AOIRegistry

    resources = (run_config or {}).get("resources") or {}
    settings = (resources.get("aoi_registry") or {}).get("config") or {}
    try:
        registry = AOIRegistry(**settings)
    except Exception as err:  # pydantic's validation error: a field that is not the resource's
        raise click.UsageError(
            f"resources.aoi_registry.config in --config is invalid ({_first_line(err)}): it "
            "takes path and auto_orient."
        ) from err
    aois = sorted(registry.load())
    known = set(instance.get_dynamic_partitions(AOI_PARTITIONS))
    new = [a for a in aois if a not in known]
    if new:
        instance.add_dynamic_partitions(AOI_PARTITIONS, new)
    return aois


def _materialize(
    aoi_id: str, when: str, run_config: dict[str, Any] | None, job: str = "geocluster_pipeline"
) -> None:
    from .defs.partitions import date_partitions, partition_key

    instance = _instance()
    _known_aoi(aoi_id, instance, run_config)
    date_key = _date_key(when, date_partitions)
    _run_job(job, partition_key(aoi_id, date_key), f"{aoi_id} | {date_key}", run_config, instance)


def _known_aoi(
    aoi_id: str, instance: dg.DagsterInstance, run_config: dict[str, Any] | None = None
) -> None:
    aois = _sync_aois(instance, run_config)
    if aoi_id not in aois:
        raise click.UsageError(f"AOI {aoi_id!r} is not in the registry (it has {aois}).")


def _run_job(
    name: str,
    key: str | dg.MultiPartitionKey,
    label: str,
    run_config: dict[str, Any] | None,
    instance: dg.DagsterInstance,
) -> None:
    """Run job ``name`` for one partition in this process: a line per asset as it is written
    (progress bars while a step runs), then the scores; Dagster's own events only with -v."""
    from .definitions import defs
    from .defs.partitions import DATE_WINDOWS
    from .defs.resources import output_root
    from .progress import listening
    from .storage import claim_output_root
    from .terminal import AssetLines, Bars, echo, error_text, run_loggers

    job = defs.resolve_job_def(name)
    _check_run_config(job, run_config or {})
    # One line before any work when the root holds another kind of date window's products
    # (the run's resource refuses the same, for runs launched from the UI).
    claim_output_root(output_root(), DATE_WINDOWS)
    _quiet_skipped_check_gates()
    echo(f"Materializing {label} (Dagster instance: {os.environ['DAGSTER_HOME']})")
    lines = AssetLines()
    loggers = run_loggers(lines, _verbose())
    bars = Bars()
    try:
        with listening(bars), contextlib.closing(bars):
            result = job.with_logger_defs(loggers).execute_in_process(
                partition_key=key,
                instance=instance,
                run_config={**(run_config or {}), "loggers": _logger_config(loggers)},
                raise_on_error=False,
            )
    except Exception as err:
        # The instance itself failed mid-run (its SQLite on a full disk): the products written
        # so far are whole (each is swapped in atomically), but the run's record is not.
        if not _database_error(err):
            raise
        raise _database_fault(
            Path(os.environ["DAGSTER_HOME"]), err, f"could not record the run of {label}"
        ) from err
    from .defs.assets import ASSETS

    in_order = [key.to_user_string() for asset in ASSETS for key in asset.keys]
    chosen = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    selected = [asset for asset in in_order if asset in chosen]
    skipped = [asset for asset in selected if asset not in lines.ended]  # never started
    if skipped:
        echo(f"  not built: {', '.join(sorted(skipped, key=selected.index))}")
    if not result.success:
        full = _instance_full_in_a_step(result)
        if full is not None:  # the step failed writing its events: the run database's fault
            raise _database_fault(
                Path(os.environ["DAGSTER_HOME"]), full, f"could not record the run of {label}"
            )
        if not lines.failures:  # a failure outside any step (e.g. a resource that cannot start)
            errors = [
                getattr(event.event_specific_data, "error", None) for event in result.all_events
            ]
            for error in [e for e in errors if e is not None][:1]:
                echo(f"FAILED: {error_text(error)}", err=True)
                lines.failures.append(f"FAILED: {error_text(error)}")
        _print_result(key, "failed", lines, skipped, {}, "")
        sys.exit(1)
    scores = {
        key: value.value  # rounded as the UI shows them (defs/readable.py)
        for metadata in lines.written.values()
        for key, value in metadata.items()
        if key in _SCORES
    }
    if scores:
        echo(f"Scores: {scores}")
    ui = _ui_command()
    echo(f"Open the UI with:  {ui}")
    _print_result(key, "succeeded", lines, skipped, scores, ui)


#: The deployment settings a run reads from the environment besides its instance and output
#: root: the UI's runs must read the same ones (another GEOCLUSTER_DATE_WINDOWS, say, and the UI
#: shows other partitions than the ones this run wrote).
UI_SETTINGS = (
    "GEOCLUSTER_STAC_URL",
    "GEOCLUSTER_STAC_SIGN",
    "GEOCLUSTER_AOI_REGISTRY",
    "GEOCLUSTER_DATE_WINDOWS",
    "GEOCLUSTER_FIRST_MONTH",
    "GEOCLUSTER_DASK_SCHEDULER",
    "GEOCLUSTER_SCRATCH",
    "GEOCLUSTER_STATE",
    "GEOCLUSTER_WATCH_COLLECTION",
    "GEOCLUSTER_PUBLIC_URL",
)


def _ui_command() -> str:
    """`dg dev` with every setting this run used: the same instance, output root and
    deployment settings (a URL's query, which may hold a token, left out)."""
    from .remote import redact

    settings = [
        f"{name}={shlex.quote(redact(os.environ[name]))}"
        for name in UI_SETTINGS
        if os.environ.get(name)
    ]
    return " ".join(
        [
            f"DAGSTER_HOME={shlex.quote(os.environ['DAGSTER_HOME'])}",
            *settings,
            f"GEOCLUSTER_OUTPUT={shlex.quote(os.environ['GEOCLUSTER_OUTPUT'])}",
            "dg dev -m geocluster_dagster.definitions",
        ]
    )


def _print_result(
    key: Any, status: str, lines: Any, skipped: list[str], scores: dict[str, Any], ui: str
) -> None:
    """With ``--json``: the run's result as one JSON object on stdout, for scripts."""
    if not click.get_current_context().find_root().params.get("as_json"):
        return
    products = {
        asset: str(getattr(metadata["output_path"], "value", metadata["output_path"]))
        for asset, metadata in lines.written.items()
        if "output_path" in metadata
    }
    result = {
        "partition": str(key),
        "status": status,
        "products": products,
        "not_built": skipped,
        "failures": list(lines.failures),
        "scores": scores,
        "ui_command": ui,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def _instance_full_in_a_step(result: Any) -> Exception | None:
    """The error of a step that failed because the run database could not take its events
    (SQLite's "database or disk is full" raised inside the step), as an exception; else None.
    Its products are whole (each is swapped in atomically); the run's record is not."""
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        error = event.step_failure_data.error
        while error is not None:
            if error.cls_name == "OperationalError" and "disk is full" in error.message:
                return RuntimeError(error.message.strip())
            error = error.cause
    return None


def _logger_config(loggers: dict[str, Any]) -> dict[str, Any]:
    """Every logger of the run on; Dagster's console at DEBUG (it prints no DEBUG events else)."""
    return {
        name: {"config": {"log_level": "DEBUG"}} if name == "console" else {} for name in loggers
    }


def _verbose() -> bool:
    return bool(click.get_current_context().find_root().params.get("verbose"))


def _quiet_skipped_check_gates() -> None:
    """Dagster warns that a blocking check "emitted no result" when its asset was skipped (no
    imagery) and says the downstream step "will proceed": it is skipped too, which the summary
    says. The warning would only mislead here."""

    class _SkippedGate(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "will proceed without gating" not in record.getMessage()

    logging.getLogger("dagster._core.execution.plan.active").addFilter(_SkippedGate())


def _date_key(when: str, windows: dg.TimeWindowPartitionsDefinition) -> str:
    """The key of the date window (GEOCLUSTER_DATE_WINDOWS) that holds day or month ``when``."""
    from .defs.partitions import date_key_of

    try:
        return date_key_of(when, "--date", windows)
    except ConfigError as err:
        raise click.UsageError(str(err)) from None


def _run_config(config_file: str | None) -> dict[str, Any] | None:
    """The run config YAML of --config, or a usage error that says where it is malformed."""
    import yaml

    if config_file is None:
        return None
    try:
        run_config = yaml.safe_load(Path(config_file).read_text())
    except yaml.YAMLError as err:
        raise click.UsageError(
            f"--config {config_file} is not valid YAML ({_yaml_problem(err)}). It holds e.g. "
            "'ops: {clusters: {config: {n_clusters: 8}}}'."
        ) from err
    if run_config is None:
        return None
    if not isinstance(run_config, dict):
        raise click.UsageError(
            f"--config {config_file} holds a {type(run_config).__name__}, not a run config: "
            "it holds e.g. 'ops: {clusters: {config: {n_clusters: 8}}}'."
        )
    return run_config


def _check_run_config(job: dg.JobDefinition, run_config: dict[str, Any]) -> None:
    """Refuse a run config Dagster would refuse (unknown field, wrong type, a choice misspelt)
    before anything runs, in one message instead of a traceback."""
    import dagster as dg

    from .defs.config import check_settings

    try:
        dg.validate_run_config(job, run_config)
        check_settings(run_config)
    except GeoclusterError as err:
        raise click.UsageError(f"the run config (--config) is invalid: {err}") from err
    except dg.DagsterInvalidConfigError as err:
        problems = "; ".join(error.message for error in err.errors) or str(err)
        raise click.UsageError(
            f"the run config (--config) is invalid: {problems}. The fields, their choices and "
            "defaults are in docs/configuration.md and the Dagster launchpad."
        ) from err


@click.group()
@click.option(
    "--output",
    # As typed: a Path would turn s3://bucket into the folder s3:/bucket before it is checked.
    type=str,
    envvar="GEOCLUSTER_OUTPUT",
    default="geocluster_output",
    show_default=True,
    help="Output root: a folder, s3://bucket/prefix (credentials from AWS_*) or "
    "az://container/prefix (credentials from AZURE_STORAGE_*). Also env GEOCLUSTER_OUTPUT.",
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Also print Dagster's own event log (every event of every step).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result of materialize, demo or reference as one JSON object on stdout "
    "(partition, status, products, scores, the UI command); the lines for a person go to "
    "stderr.",
)
@click.version_option(package_name="geocluster_dagster", prog_name="geocluster")
def main(output: str, verbose: bool, as_json: bool) -> None:
    """Satellite imagery to unsupervised land-cover maps, as Dagster assets."""
    from .storage import check_writable, output_location
    from .terminal import keep_stdout_for_result

    keep_stdout_for_result(as_json)

    setting = "--output (env GEOCLUSTER_OUTPUT)"
    os.environ["GEOCLUSTER_OUTPUT"] = str(output_location(output, setting))
    check_writable(os.environ["GEOCLUSTER_OUTPUT"], setting)


@main.command()
def demo() -> None:
    """Build the embedded demo (synthetic scene, real spectra) and materialize the whole graph."""
    from .defs.resources import demo_paths
    from .terminal import echo

    paths = demo_paths()
    echo(f"Demo catalog: {paths.catalog} (synthetic landscape built from real Landsat 8 spectra)")
    os.environ.setdefault("GEOCLUSTER_AOI_REGISTRY", "demo")
    os.environ.setdefault("GEOCLUSTER_STAC_URL", "demo")
    _materialize(paths.aoi_id, paths.start.strftime("%Y-%m"), None)


@main.command()
@click.option("--aoi", "aoi_id", required=True, help="AOI id from the registry.")
@click.option(
    "--date",
    "--month",
    "when",
    required=True,
    help="A month (YYYY-MM) or day (YYYY-MM-DD): the date window holding it is processed.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Run config YAML (ops: {asset: {config: ...}}).",
)
def materialize(aoi_id: str, when: str, config_file: str | None) -> None:
    """Materialize the whole graph for one AOI and date window (a month by default)."""

    _materialize(aoi_id, when, _run_config(config_file))


@main.command()
@click.option("--aoi", "aoi_id", required=True, help="AOI id from the registry.")
@click.option(
    "--date",
    "--month",
    "when",
    required=True,
    help="A month (YYYY-MM) or day (YYYY-MM-DD): the date window whose map is assessed.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Run config YAML (ops: {accuracy: {config: ...}}).",
)
def accuracy(aoi_id: str, when: str, config_file: str | None) -> None:
    """Assess a materialized cluster map against the AOI's reference data (the registry's
    reference_data), then publish its STAC Item and report again with the accuracy."""

    _materialize(aoi_id, when, _run_config(config_file), job="geocluster_accuracy")


@main.command(name="demo-scene")
@click.option(
    "--date",
    "day",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Acquisition day (YYYY-MM-DD); default today.",
)
def demo_scene(day: Any) -> None:
    """Add a new synthetic demo scene, so that the new-imagery sensor has something to find."""
    from datetime import date

    from .defs.resources import output_root
    from .demo.catalog import add_live_scene

    when = day.date() if day is not None else date.today()
    from .storage import local_state

    collection_file, added = add_live_scene(local_state(output_root()) / "demo_live", when)
    if added:
        click.echo(f"Added {', '.join(i.id for i in added)} (acquired {when}) to {collection_file}")
    else:
        click.echo(f"{collection_file} already holds the scene of {when}")
    click.echo(
        "Point the STAC source at it and turn on the new-imagery sensor (UI: Automation, "
        f"new_imagery_sensor): its next tick runs partition demo|{when:%Y-%m}-01.\n"
        f"  GEOCLUSTER_STAC_URL={collection_file} "
        f"GEOCLUSTER_OUTPUT={os.environ['GEOCLUSTER_OUTPUT']} "
        "dg dev -m geocluster_dagster.definitions"
    )


@main.command()
@click.option("--aoi", "aoi_id", required=True, help="AOI id from the registry.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Run config YAML (ops: {cluster_model: {config: ...}}).",
)
def reference(aoi_id: str, config_file: str | None) -> None:
    """Fit the AOI's reference model (cluster_model) on its materialized date partitions."""

    run_config = _run_config(config_file)
    instance = _instance()
    _known_aoi(aoi_id, instance, run_config)
    _run_job(
        "geocluster_reference", aoi_id, f"the reference model of {aoi_id}", run_config, instance
    )


@main.command()
def aois() -> None:
    """List the AOIs of the registry (env GEOCLUSTER_AOI_REGISTRY), validating each."""
    from .defs.resources import AOIRegistry

    for aoi in AOIRegistry().load().values():
        west, south, east, north = aoi.bbox
        click.echo(
            f"{aoi.id:<24} {aoi.name:<32} [{west:.4f}, {south:.4f}, {east:.4f}, {north:.4f}]"
        )


@main.command(name="sync-aois")
def sync_aois() -> None:
    """Add every AOI of the registry as a partition of the Dagster instance."""
    click.echo("AOI partitions: " + ", ".join(_sync_aois(_instance())))


def run() -> None:
    try:
        main(standalone_mode=True)
    except GeoclusterError as err:
        click.echo(f"Error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
