"""Date windows of the deployment's choice: months, half-months, quarters, years."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone

import dagster as dg
import pytest

from geocluster_dagster.defs.partitions import date_partitions_for
from geocluster_dagster.errors import ConfigError
from geocluster_dagster.storage import remove_quietly

from .conftest import BRUMADINHO
from .helpers import item_file


def _acquired(folder) -> datetime:
    """DATE_ACQUIRED of a real Landsat MTL file."""
    (mtl,) = folder.glob("*_MTL.txt")
    day = re.search(r"DATE_ACQUIRED = (\d{4}-\d{2}-\d{2})", mtl.read_text())[1]
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc)


def _key(windows: dg.TimeWindowPartitionsDefinition, moment: datetime) -> str:
    return windows.get_partition_key_for_timestamp(moment.timestamp())


def test_two_passes_16_days_apart_land_in_different_half_months():
    before, after = (_acquired(BRUMADINHO / day) for day in ("20190114", "20190130"))
    assert (after - before).days == 16
    half = date_partitions_for("half_month")
    assert (_key(half, before), _key(half, after)) == ("2019-01-01", "2019-01-16")
    window = half.time_window_for_partition_key("2019-01-16")
    assert (window.start.day, window.end.month, window.end.day) == (16, 2, 1)
    # in months (the default) both dates are one partition
    assert _key(date_partitions_for("month"), before) == _key(date_partitions_for("month"), after)


def test_the_default_monthly_windows_are_unchanged():
    keys = date_partitions_for("month").get_partition_keys()
    reference = dg.MonthlyPartitionsDefinition(start_date="2013-04-01", end_offset=1)
    assert keys == reference.get_partition_keys() and keys[0] == "2013-04-01"


def test_quarters_and_years_start_on_their_first_day():
    quarters = date_partitions_for("quarter").get_partition_keys()
    assert quarters[:3] == ["2013-04-01", "2013-07-01", "2013-10-01"]
    years = date_partitions_for("year").get_partition_keys()
    assert years[:2] == ["2013-01-01", "2014-01-01"]


def test_an_unknown_kind_of_window_names_the_setting():
    with pytest.raises(ConfigError, match="GEOCLUSTER_DATE_WINDOWS='fortnight'.*half_month"):
        date_partitions_for("fortnight")


def test_the_demo_in_half_month_windows_keeps_one_date_per_partition(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "DAGSTER_"))}
    env["GEOCLUSTER_DATE_WINDOWS"] = "half_month"
    command = [sys.executable, "-m", "geocluster_dagster", "--output", str(tmp_path)]
    command += ["materialize", "--aoi", "demo", "--date", "2023-06-20"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    items = json.loads((tmp_path / "stac_items" / "demo" / "2023-06-16.json").read_text())
    days = {feature["properties"]["datetime"][:10] for feature in items["features"]}
    assert days == {"2023-06-18"}  # Landsat 9's pass; Landsat 8's (06-10) is the first half
    assert (tmp_path / "diagnostics" / "demo" / "2023-06-16" / "scores.json").exists()


@pytest.mark.slow
def test_half_months_of_one_aoi_share_ids_through_its_reference_model(tmp_path):
    """The demo's Landsat 8 and Landsat 9 passes in two half-month partitions: with the AOI's
    reference model, the same ground has the same id in both maps."""
    import rasterio
    import yaml

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "DAGSTER_"))}
    env["GEOCLUSTER_DATE_WINDOWS"] = "half_month"

    def cli(*args: str) -> str:
        command = [sys.executable, "-m", "geocluster_dagster", "--output", str(tmp_path), *args]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout + done.stderr

    dates = ("2023-06-01", "2023-06-16")
    for date in dates:
        out = cli("materialize", "--aoi", "demo", "--date", date)
    # Fitted alone, the two maps' ids need not match: both dates are classified by one model
    # fitted on both, and one landscape seen twice shows no change.
    alone = json.loads(
        (tmp_path / "cluster_change" / "demo" / "2023-06-16" / "summary.json").read_text()
    )
    assert alone["model"]["how"] == "pooled" and alone["changed_share"] < 0.01
    assert "cluster_change not computed" not in out
    assert "Pooling 2 date partitions of demo: 2023-06-01, 2023-06-16" in cli(
        "-v",
        "reference",
        "--aoi",
        "demo",  # the run's log, which -v prints
    )
    config = tmp_path / "reference.yaml"
    config.write_text(yaml.safe_dump({"ops": {"clusters": {"config": {"model": "aoi_reference"}}}}))
    maps = {}
    for date in dates:
        cli("materialize", "--aoi", "demo", "--date", date, "--config", str(config))
        with rasterio.open(tmp_path / "clusters" / "demo" / date / "cluster_map.tif") as src:
            maps[date] = src.read(1)
    first, second = maps.values()
    both = (first > 0) & (second > 0)
    assert both.sum() > 40_000  # the passes overlap outside clouds and the fill collar
    assert (first == second)[both].mean() > 0.99  # measured 1.0: one ground, one model
    change = json.loads(
        (tmp_path / "cluster_change" / "demo" / "2023-06-16" / "summary.json").read_text()
    )
    assert change["from_date"] == "2023-06-01" and change["compared_pixels"] == both.sum()
    assert change["changed_share"] < 0.01  # one landscape seen twice
    assert not (tmp_path / "cluster_change" / "demo" / "2023-06-01").exists()  # nothing earlier
    # Without the reference, and 06-01 made again without SWIR bands, 06-16 (fitted alone, on
    # SWIR too) no longer compares with 06-01: the change product of the earlier run goes, so
    # that neither the STAC Item nor the report publishes it.
    remove_quietly(tmp_path / "cluster_model" / "demo")  # a link to its version folder
    no_swir = tmp_path / "no_swir.yaml"
    no_swir.write_text(
        yaml.safe_dump(
            {"ops": {"band_stack": {"config": {"bands": ["blue", "green", "red", "nir"]}}}}
        )
    )
    cli("materialize", "--aoi", "demo", "--date", "2023-06-01", "--config", str(no_swir))
    out = cli("materialize", "--aoi", "demo", "--date", "2023-06-16")
    assert "cluster_change not computed: Cannot compare 2023-06-01 with 2023-06-16" in out
    assert "lacks the features ['swir16', 'swir22']" in out and "same band_stack bands" in out
    # ... once: not again in the step's line nor in its check's line.
    assert out.count("Cannot compare 2023-06-01 with 2023-06-16") == 1, out
    assert "nothing compared (why: the warning above)" in out
    assert not (tmp_path / "cluster_change" / "demo" / "2023-06-16").exists()
    item = json.loads(item_file(tmp_path, "demo", "2023-06-16").read_text())
    assert not any("change" in key for key in item["assets"]), item["assets"]


def test_a_windows_label_names_its_last_day_not_the_next_windows_first():
    from geocluster_dagster.defs.partitions import window_of

    window = window_of("demo|2023-06-01")
    assert window.label == "AOI 'demo', 2023-06-01 to 2023-06-30"
    assert window.last_day.strftime("%Y-%m-%d") == "2023-06-30"
