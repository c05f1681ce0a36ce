"""The `geocluster` command as a user runs it on the embedded demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from geocluster_dagster.demo import DEMO_MONTH

ASSETS = ("stac_items", "band_stack", "mosaic", "geotiff", "clusters", "diagnostics")


class _Run:
    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.exit_code, self.output = done.returncode, done.stdout + done.stderr


def _invoke(output: Path, *args: str) -> _Run:
    """The command in its own process, as a user runs it (no DAGSTER_HOME: the command keeps
    its instance under the output root; no registry or catalog: the demo's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "DAGSTER_"))}
    command = [sys.executable, "-m", "geocluster_dagster", "--output", str(output), *args]
    return _Run(subprocess.run(command, env=env, capture_output=True, text=True, timeout=600))


def test_demo_materializes_every_asset_and_prints_where_and_the_scores(tmp_path):
    result = _invoke(tmp_path, "demo")
    assert result.exit_code == 0, result.output
    for asset in ASSETS:
        assert f"  {asset:<12} -> {tmp_path}/{asset}/demo/{DEMO_MONTH}" in result.output
    scores = next(line for line in result.output.splitlines() if line.startswith("Scores: "))
    for name in ("silhouette", "calinski_harabasz", "davies_bouldin", "inertia"):
        assert f"'{name}': " in scores
    # the UI it points at writes where this run wrote
    assert f"GEOCLUSTER_OUTPUT={tmp_path} dagster dev -m geocluster_dagster.definitions" in (
        result.output
    )


def test_a_misspelt_choice_in_the_run_config_is_refused_before_anything_runs(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"ops": {"mosaic": {"config": {"method": "medain"}}}}))
    result = _invoke(
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
