"""The `geocluster` command as a user runs it on the embedded demo."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from geocluster_dagster.demo import DEMO_MONTH
from geocluster_dagster.products.described import Measure

from .helpers import CommandRun, invoke, item_file

ASSETS = ("stac_items", "band_stack", "mosaic", "geotiff", "clusters", "diagnostics")


def test_demo_materializes_every_asset_and_prints_where_and_the_scores(tmp_path):
    result = invoke(tmp_path, "demo")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for asset in ASSETS:
        # one line per asset: its name, how long its step took, where it wrote
        where = re.escape(f"-> {tmp_path}/{asset}/demo/{DEMO_MONTH}")
        assert any(re.fullmatch(rf"  {asset} +\d+\.\d s  {where}(\.\w+)?", x) for x in lines), (
            asset,
            result.output,
        )
    skipped = next(line for line in lines if line.startswith("  cluster_change "))
    assert "nothing compared: demo|2023-06-01 is the first date of AOI demo" in skipped
    # Quiet by default: none of Dagster's own event stream, which -v adds.
    assert "STEP_START" not in result.output and " - DEBUG - " not in result.output
    assert len(lines) < 20, result.output
    scores = next(line for line in result.output.splitlines() if line.startswith("Scores: "))
    for name in ("silhouette", "calinski_harabasz", "davies_bouldin", "inertia"):
        assert f"'{name}': " in scores
    # the UI it points at writes where this run wrote
    assert f"GEOCLUSTER_OUTPUT={tmp_path} dg dev -m geocluster_dagster.definitions" in (
        result.output
    )


def test_a_partitions_run_keeps_its_event_log_small(tmp_path):
    """What a run of one partition stores in the instance's event log: every event as Dagster
    serializes it. The figures are files (and in the report), not copies in each event; the
    metadata is stored once, on the materialization, not again on the step's output."""
    import dagster as dg
    from dagster._serdes import serialize_value

    result = invoke(tmp_path, "demo")
    assert result.exit_code == 0, result.output
    with dg.DagsterInstance.from_config(str(tmp_path / ".dagster_home")) as instance:
        (run,) = instance.get_runs()
        events = instance.all_logs(run.run_id)
        total = sum(len(serialize_value(event)) for event in events)
        outputs = [e for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_OUTPUT]
    assert 20_000 < total <= 150_000, total  # 813 kB before the figures left the event log
    assert all(len(serialize_value(e)) < 2_000 for e in outputs)  # no metadata copied there


def test_a_misspelt_choice_in_the_run_config_is_refused_before_anything_runs(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"ops": {"mosaic": {"config": {"method": "medain"}}}}))
    result = invoke(
        tmp_path / "out",
        "materialize",
        "--aoi",
        "demo",
        "--month",
        "2023-06",
        "--config",
        str(config),
    )
    assert result.exit_code == 2, result.output
    assert "run config (--config) is invalid" in result.output
    assert "medain" in result.output and "mosaic" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "stac_items").exists()  # no asset ran


@pytest.mark.slow
def test_two_runs_of_one_partition_do_not_interleave(tmp_path):
    """Two runs of one partition at once (k=6 and k=4): the second waits for the first, and
    each reports the scores of its own products; the partition ends up all from one run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "DAGSTER_"))}
    assert invoke(tmp_path, "aois").exit_code == 0  # build the demo once
    runs = {}
    for k in (6, 4):
        config = tmp_path / f"k{k}.yaml"
        config.write_text(yaml.safe_dump({"ops": {"clusters": {"config": {"n_clusters": k}}}}))
        command = [
            sys.executable, "-m", "geocluster_dagster", "--output", str(tmp_path),
            "materialize", "--aoi", "demo", "--date", DEMO_MONTH[:7], "--config", str(config),
        ]  # fmt: skip
        runs[k] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    outputs = {k: run.communicate(timeout=600)[0] for k, run in runs.items()}
    assert all(run.returncode == 0 for run in runs.values()), outputs
    waited = [k for k, out in outputs.items() if "waiting for it to finish" in out]
    assert len(waited) == 1, outputs
    last = waited[0]
    model = json.loads((tmp_path / "clusters" / "demo" / DEMO_MONTH / "model.json").read_text())
    scores = json.loads(
        (tmp_path / "diagnostics" / "demo" / DEMO_MONTH / "scores.json").read_text()
    )
    assert len(model["centers"]) == last
    printed = next(line for line in outputs[last].splitlines() if line.startswith("Scores: "))
    # printed as the UI shows it: four significant digits
    assert f"'silhouette': {Measure('', scores['silhouette'], digits=4).shown()}" in printed
    first = next(line for line in outputs[10 - last].splitlines() if line.startswith("Scores: "))
    assert first != printed  # its own k's scores, not the files the other run left


def test_a_setting_no_type_can_catch_is_refused_before_anything_runs(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"ops": {"clusters": {"config": {"n_clusters": "six"}}}}))
    result = invoke(tmp_path / "out", "materialize", "--aoi", "demo", "--month", "2023-06", "--config", str(config))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert (
        "the run config (--config) is invalid: ops.clusters.config: n_clusters='six'"
        in result.output
    )
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "stac_items").exists()


def test_verbose_adds_dagster_events_to_the_asset_lines(tmp_path):
    assert invoke(tmp_path, "demo").exit_code == 0
    result = invoke(tmp_path, "-v", "demo")
    assert result.exit_code == 0, result.output
    assert "STEP_START" in result.output and "RUN_SUCCESS" in result.output
    assert any(line.startswith("  geotiff ") for line in result.output.splitlines())


def _bad_instance(tmp_path: Path, case: str) -> tuple[dict[str, str], Path]:
    """A DAGSTER_HOME broken as ``case`` says, and the output root to pass."""
    home = tmp_path / "home"
    if case != "missing home":
        home.mkdir()
    if case == "yaml syntax":
        (home / "dagster.yaml").write_text("storage: [oops\n")
    elif case == "not a mapping":
        (home / "dagster.yaml").write_text("garbage\n")
    elif case == "corrupt database":
        (home / "history").mkdir()
        (home / "history" / "runs.db").write_text("not a database")
    return {"DAGSTER_HOME": str(home)}, tmp_path / "out"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing home", "is not a folder. Create it (mkdir -p "),
        ("yaml syntax", "dagster.yaml is not valid YAML (expected ',' or ']'"),
        ("not a mapping", "dagster.yaml to parse to dictionary"),
        ("corrupt database", "cannot be read (DatabaseError: file is not a database)"),
    ],
)
def test_a_broken_instance_is_one_line_that_names_it_and_the_fix(tmp_path, case, expected):
    env, out = _bad_instance(tmp_path, case)
    result = invoke(out, "sync-aois", env=env)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and expected in errors[0], result.output
    assert "unset DAGSTER_HOME" in errors[0]
    assert "Traceback" not in result.output


def test_an_output_root_that_cannot_hold_the_instance_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = invoke(blocker / "out", "sync-aois")
    assert result.exit_code == 2, result.output
    assert "cannot create the CLI's Dagster instance in " in result.output
    assert "choose a writable --output" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("filled", "size"),
    [
        # The run database fills while the run records its events (products on another disk).
        ("instance", "800k"),
        # The output root fills while the demo catalog is written (GDAL's own write error).
        ("demo catalog", "4m"),
    ],
)
def test_a_disk_that_fills_is_one_line_that_names_it(tmp_path, filled, size):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], check=True)
    try:
        if filled == "instance":
            result = invoke(tmp_path / "out", "demo", env={"DAGSTER_HOME": str(disk)})
        else:
            result = invoke(disk / "out", "demo")
            leftovers = [p.name for p in (disk / "out").iterdir()]
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and str(disk) in last, result.output
    if filled == "instance":
        assert "the disk holding it is full" in last and "set DAGSTER_HOME" in last
    else:
        assert "the disk is full" in last and "GEOCLUSTER_OUTPUT" in last
        # Before it, libtiff's own lines ("_tiffWriteProc: No space left on device."), which it
        # prints to the terminal itself, below Python and GDAL's error handlers.
        assert leftovers == []  # the half-written catalog is gone


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "ops: {mosaic: [\n",
            "is not valid YAML (expected the node content, but found '<stream end>' at line 2, column 1)",
        ),
        ("- just\n- a list\n", "holds a list, not a run config"),
    ],
)
def test_a_malformed_run_config_file_is_one_line(tmp_path, text, expected):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    result = invoke(tmp_path / "out", "materialize", "--aoi", "demo", "--date", "2023-06", "--config", str(config))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert expected in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "stac_items").exists()


def _killed_run(tmp_path: Path) -> None:
    """Start `geocluster demo` and SIGKILL it once its run is under way."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "DAGSTER_"))}
    command = [sys.executable, "-m", "geocluster_dagster", "--output", str(tmp_path), "demo"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    written = tmp_path / "band_stack" / "demo" / f"{DEMO_MONTH}.json"
    written.unlink(missing_ok=True)  # wait for this run's own
    deadline = time.monotonic() + 300
    while not written.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _runs(home: Path):
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.get_runs()


def test_a_killed_run_is_marked_failed_by_the_sensor_and_by_the_next_command(tmp_path):
    import dagster as dg

    from geocluster_dagster.defs.run_health import dead_run_sensor

    home = tmp_path / ".dagster_home"
    _killed_run(tmp_path)
    (started,) = [run for run in _runs(home) if run.status == dg.DagsterRunStatus.STARTED]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        verdict = dead_run_sensor(dg.build_sensor_context(instance=instance))
        assert f"Marked 1 run(s) failed, their process gone: {started.run_id[:8]}" in str(verdict)
        assert instance.get_run_by_id(started.run_id).status == dg.DagsterRunStatus.FAILURE
    # Killed again: the next command marks it before it does anything else.
    _killed_run(tmp_path)
    (again,) = [run for run in _runs(home) if run.status == dg.DagsterRunStatus.STARTED]
    result = invoke(tmp_path, "sync-aois")
    assert result.exit_code == 0, result.output
    assert f"Run {again.run_id[:8]} (geocluster_pipeline, demo|{DEMO_MONTH})" in result.output
    assert "is gone: marked failed." in result.output
    assert {run.status for run in _runs(home)} == {dg.DagsterRunStatus.FAILURE}


def _digest(path: Path) -> str:
    import hashlib

    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def test_settings_that_used_to_crash_are_refused_or_work(tmp_path):
    """crs EPSG:4326 crashed in xarray ("Dimensions {'x', 'y'} do not exist"); clustering on
    indices alone crashed the signature plot. Now: refused in the user's terms with the earlier
    products untouched, and a geographic grid or index features work."""
    assert invoke(tmp_path, "demo").exit_code == 0
    products = {
        name: tmp_path / name / "demo" / f"{DEMO_MONTH}{suffix}"
        for name, suffix in (("mosaic", ".tif"), ("geotiff", ""), ("clusters", ""))
    }
    before = {name: _digest(path) for name, path in products.items()}

    def materialize(ops: dict) -> CommandRun:
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump({"ops": ops}))
        return invoke(tmp_path, "materialize", "--aoi", "demo", "--date", "2023-06", "--config", str(config))  # fmt: skip

    refused = materialize({"band_stack": {"config": {"crs": "EPSG:4326"}}})
    assert refused.exit_code == 1
    failed = next(line for line in refused.output.splitlines() if line.startswith("FAILED"))
    assert failed.startswith("FAILED band_stack: `crs` 'EPSG:4326' is geographic (degrees)")
    assert "Set `resolution` in degrees (about 0.000269" in failed
    assert (
        "Error occurred while executing" not in refused.output and "Traceback" not in refused.output
    )
    assert "  not built: mosaic, geotiff, clusters, " in refused.output
    # The run's log says it (the UI's run page shows the same warning).
    stale = next(line for line in refused.output.splitlines() if "stale: " in line)
    assert "stale: band_stack, mosaic, geotiff, clusters, diagnostics of AOI 'demo'" in stale
    assert "may not match what this run rewrote (stac_items)" in stale
    # And each stale asset's own page in the UI: an observation on its partition.
    import dagster as dg

    with dg.DagsterInstance.from_config(str(tmp_path / ".dagster_home")) as instance:
        for name in ("band_stack", "diagnostics"):
            (record,) = instance.fetch_observations(dg.AssetKey(name), limit=1).records
            observation = record.asset_observation
            assert observation is not None and observation.partition == f"demo|{DEMO_MONTH}"
            assert stale.endswith(observation.metadata["stale"].value)
    assert {name: _digest(path) for name, path in products.items()} == before

    indices = materialize({"clusters": {"config": {"features": ["lst", "ndvi"]}}})
    assert indices.exit_code == 0, indices.output
    assert (tmp_path / "diagnostics" / "demo" / DEMO_MONTH / "signatures.png").exists()


def test_switching_the_date_windows_of_a_root_is_refused_and_overwrites_nothing(tmp_path):
    """A month key and a half-month key are both 2023-06-01: the half-month run would have
    replaced the month's products (its 4 scenes by 2) with exit 0."""
    assert invoke(tmp_path, "demo").exit_code == 0
    searched = (tmp_path / "stac_items" / "demo" / "2023-06-01.json").read_bytes()
    result = invoke(
        tmp_path, "materialize", "--aoi", "demo", "--date", "2023-06-01",
        env={"GEOCLUSTER_DATE_WINDOWS": "half_month"},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: The output root") and "keyed by month windows" in last
    assert "GEOCLUSTER_DATE_WINDOWS=half_month" in last and "another output root" in last
    assert "Materializing" not in result.output  # refused before any work
    assert (tmp_path / "stac_items" / "demo" / "2023-06-01.json").read_bytes() == searched


def test_a_first_month_that_is_no_date_or_excludes_the_date_is_named(tmp_path):
    result = invoke(tmp_path, "materialize", "--aoi", "demo", "--date", "2023-06", env={"GEOCLUSTER_FIRST_MONTH": "june"})  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert (
        "Error: GEOCLUSTER_FIRST_MONTH='june' is not a date: write the first month" in result.output
    )
    result = invoke(tmp_path, "materialize", "--aoi", "demo", "--date", "2023-06", env={"GEOCLUSTER_FIRST_MONTH": "2024-01-01"})  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "they start at GEOCLUSTER_FIRST_MONTH=2024-01-01" in result.output
    assert "GEOCLUSTER_FIRST_MONTH=2023-06-01" in result.output  # the fix, for this date


def test_the_fix_a_winding_error_names_can_be_given_in_the_config_file(tmp_path):
    """A clockwise ring is refused, naming auto_orient: true; that resource setting in
    --config is the registry the CLI checks the AOI against, as the run does."""
    from geocluster_dagster.demo import build_demo

    demo = build_demo(tmp_path / "catalog")
    feature = json.loads(demo.aoi_registry.read_text())["features"][0]
    feature["geometry"]["coordinates"] = [ring[::-1] for ring in feature["geometry"]["coordinates"]]
    registry = tmp_path / "aois"
    registry.mkdir()
    (registry / "demo.geojson").write_text(json.dumps(feature))
    env = {"GEOCLUSTER_AOI_REGISTRY": str(registry), "GEOCLUSTER_STAC_URL": str(demo.catalog)}
    refused = invoke(tmp_path / "out", "materialize", "--aoi", "demo", "--date", "2023-06", env=env)
    assert refused.exit_code == 2 and "auto_orient" in refused.output, refused.output
    config = tmp_path / "orient.yaml"
    config.write_text(
        yaml.safe_dump({"resources": {"aoi_registry": {"config": {"auto_orient": True}}}})
    )
    result = invoke(tmp_path / "out", "materialize", "--aoi", "demo", "--date", "2023-06", "--config", str(config), env=env)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "clusters" / "demo" / DEMO_MONTH / "cluster_map.tif").exists()


def test_a_search_that_finds_nothing_keeps_the_earlier_products_and_says_they_are_stale(tmp_path):
    assert invoke(tmp_path, "demo").exit_code == 0
    map_before = (tmp_path / "clusters" / "demo" / DEMO_MONTH / "cluster_map.tif").read_bytes()
    config = tmp_path / "strict.yaml"
    config.write_text(yaml.safe_dump({"ops": {"stac_items": {"config": {"max_cloud_cover": 0.5}}}}))
    result = invoke(tmp_path, "materialize", "--aoi", "demo", "--date", "2023-06", "--config", str(config))  # fmt: skip
    assert result.exit_code == 0, result.output  # no imagery is not an error, as in a backfill
    assert "No imagery for AOI 'demo'" in result.output
    assert (
        "(band_stack, mosaic, geotiff, clusters, diagnostics) are kept but stale" in result.output
    )
    # kept, and not published as the partition's: the STAC Item and report are withdrawn
    assert (
        tmp_path / "clusters" / "demo" / DEMO_MONTH / "cluster_map.tif"
    ).read_bytes() == map_before
    assert not item_file(tmp_path, "demo", DEMO_MONTH).exists()
    assert not (tmp_path / "report" / "demo" / f"{DEMO_MONTH}.html").exists()


def test_a_failure_in_stac_item_prints_its_reason(tmp_path):
    """A file where the catalog's folder belongs: the step's line, then a FAILED line naming
    the file and the fix (the report said 'stac_item failed' and no reason)."""
    (tmp_path / "stac").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "stac").write_text("not a folder")
    result = invoke(tmp_path, "demo")
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("  stac_item      failed after") for line in lines), result.output
    failed = [line for line in lines if line.startswith("FAILED stac_item: ")]
    assert (
        failed
        and f"{tmp_path / 'stac'} is a file where a folder of the output root belongs" in failed[0]
    )
    assert (tmp_path / "stac").read_text() == "not a folder"


def _split_run(output: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, stdout and stderr apart."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "DAGSTER_"))}
    command = [sys.executable, "-m", "geocluster_dagster", "--output", str(output), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_version_json_result_and_warnings_on_stderr(tmp_path):
    from importlib.metadata import version

    shown = _split_run(tmp_path, "--version")
    assert shown.returncode == 0 and shown.stdout.strip() == (
        f"geocluster, version {version('geocluster_dagster')}"
    )
    # --json: stdout holds the result only, one JSON object; a person's lines are on stderr.
    done = _split_run(tmp_path, "--json", "demo")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["partition"] == f"demo|{DEMO_MONTH}" and result["status"] == "succeeded"
    assert set(result["products"]) == {*ASSETS, "stac_item"}
    assert all(Path(path).exists() for path in result["products"].values())
    assert 0 < result["scores"]["silhouette"] <= 1
    assert "dg dev" in result["ui_command"] and "Scores: " in done.stderr
    # A warning (here: no scene in May) goes to stderr, the asset lines to stdout.
    empty = _split_run(tmp_path, "materialize", "--aoi", "demo", "--date", "2023-05")
    assert empty.returncode == 0, empty.stderr
    assert "warning (stac_items): No imagery" in empty.stderr
    assert "warning" not in empty.stdout and "  band_stack " in empty.stdout


def test_the_products_csvs_carry_no_float_noise(tmp_path):
    """237.33, not 237.32999999999998: ten significant digits at most."""
    done = invoke(tmp_path, "demo")
    assert done.exit_code == 0, done.output
    csvs = list(tmp_path.glob("clusters/demo/*/*.csv")) + list(
        tmp_path.glob("diagnostics/demo/*/*.csv")
    )
    assert len(csvs) >= 2
    numbers = [
        cell
        for path in csvs
        for line in path.read_text().splitlines()[1:]
        for cell in line.split(",")
        if re.fullmatch(r"-?\d+\.\d+(e-?\d+)?", cell)
    ]
    assert numbers
    for cell in numbers:
        mantissa = cell.split("e")[0].lstrip("-").replace(".", "").lstrip("0")
        assert len(mantissa) <= 10, cell


def test_the_printed_ui_command_carries_every_setting_the_run_used(monkeypatch):
    """Another GEOCLUSTER_DATE_WINDOWS in the UI and it shows other partitions than the run
    wrote; a URL's query (a token) is not printed."""
    from geocluster_dagster import cli

    for name in cli.UI_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", "/srv/dagster home")
    monkeypatch.setenv("GEOCLUSTER_OUTPUT", "/srv/out")
    monkeypatch.setenv("GEOCLUSTER_DATE_WINDOWS", "half_month")
    monkeypatch.setenv("GEOCLUSTER_STAC_URL", "https://example.org/stac?token=secret")
    command = cli._ui_command()
    assert command == (
        "DAGSTER_HOME='/srv/dagster home' "
        "GEOCLUSTER_STAC_URL='https://example.org/stac?<redacted>' "
        "GEOCLUSTER_DATE_WINDOWS=half_month "
        "GEOCLUSTER_OUTPUT=/srv/out dg dev -m geocluster_dagster.definitions"
    )
    assert "secret" not in command
