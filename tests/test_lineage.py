"""Lineage Dagster can see: a date's change depends on the earlier dates' maps, staleness
follows the products' own data versions, and the automation sensor remakes exactly the later
change a remade map invalidates.

Runs in its own process with half-month date windows (the demo has one scene date in each half
of June 2023): the partitions are fixed when the code location is imported. Staleness is read
with the resolver Dagster's UI and GraphQL API use."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

_SCRIPT = r"""
import json, sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
import dagster as dg
from dagster._core.definitions.data_version import CachingStaleStatusResolver
from dagster._core.loader import LoadingContextForTest

from geocluster_dagster.definitions import defs
from geocluster_dagster.defs.assets import ASSETS, PIPELINE_ASSETS
from geocluster_dagster.defs.outputs import OutputStore
from geocluster_dagster.defs.partitions import partition_key
from geocluster_dagster.defs.resources import AOIRegistry, DaskCluster, StacCatalog
from geocluster_dagster.demo import build_demo

root = Path(sys.argv[1])
demo = build_demo(root / "demo")
resources = {
    "aoi_registry": AOIRegistry(path=str(demo.aoi_registry)),
    "stac": StacCatalog(url=str(demo.catalog)),
    "dask": DaskCluster(),
    "outputs": OutputStore(base_dir=str(root / "out")),
}
instance = dg.DagsterInstance.ephemeral()
instance.add_dynamic_partitions("aoi", ["demo"])
FIRST, SECOND = "2023-06-01", "2023-06-16"
report = {}
cursor = None


def materialize(date, clusters=None):
    config = {"ops": {"clusters": {"config": clusters}}} if clusters else {}
    result = dg.materialize(PIPELINE_ASSETS, partition_key=partition_key("demo", date),
                            instance=instance, resources=resources, run_config=config)
    assert result.success


def fit_reference(n_clusters):
    result = dg.materialize(
        ASSETS, selection=["cluster_model"], partition_key="demo", instance=instance,
        resources=resources,
        run_config={"ops": {"cluster_model": {"config": {"n_clusters": n_clusters}}}})
    assert result.success


def status():
    resolver = CachingStaleStatusResolver(
        instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    seen = {}
    for asset in ("clusters", "cluster_change", "stac_item"):
        for date in (FIRST, SECOND):
            key = dg.AssetKey(asset)
            part = partition_key("demo", date)
            causes = resolver.get_stale_causes(key, part)
            seen[f"{asset} {date}"] = {
                "status": resolver.get_status(key, part).value,
                "causes": sorted({f"{c.dependency.asset_key.to_user_string()} "
                                  f"{c.dependency.partition_key}" for c in causes
                                  if c.dependency is not None}),
            }
    return seen


def automation():
    global cursor
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    cursor = result.cursor
    requested = {}
    for key in ("cluster_change", "stac_item", "clusters", "diagnostics", "geotiff", "mosaic"):
        parts = result.get_requested_partitions(dg.AssetKey(key)) if result.total_requested else set()
        if parts:
            requested[key] = sorted(str(p) for p in parts)
    return requested


materialize(FIRST)
materialize(SECOND)
report["made"] = {"status": status(), "requested": automation()}
# The first date's map remade with another k: a new map, the later change compares with it.
materialize(FIRST, clusters={"n_clusters": 5})
report["first_remade"] = {"status": status(), "requested": automation()}
# The same run again: the same map, the same data version: nothing to remake.
materialize(SECOND)
materialize(FIRST, clusters={"n_clusters": 5})
report["first_same_again"] = {"status": status(), "requested": automation()}
# The AOI's reference model, both dates' maps made with it, then a refit with another k.
fit_reference(4)
materialize(FIRST)
materialize(SECOND)
report["with_reference"] = {"status": status()}
fit_reference(6)
report["refitted"] = {"status": status()}
graph = defs.resolve_asset_graph()
report["change_parents"] = sorted(k.to_user_string() for k in graph.get(dg.AssetKey("cluster_change")).parent_keys)
report["code_versions"] = {k.to_user_string(): graph.get(k).code_version for k in graph.get_all_asset_keys()}
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    root = tmp_path_factory.mktemp("lineage")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "DAGSTER_"))}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(root)],
        env={**env, "GEOCLUSTER_DATE_WINDOWS": "half_month"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-5000:]
    return json.loads(lines[-1].removeprefix("REPORT "))


FIRST, SECOND = "2023-06-01", "2023-06-16"


def test_the_change_depends_on_the_earlier_dates_maps_and_every_asset_has_a_code_version(lineage):
    assert lineage["change_parents"] == ["cluster_model", "clusters", "geotiff"]
    assert set(lineage["code_versions"]) >= {"stac_items", "clusters", "cluster_change"}
    assert all(version for version in lineage["code_versions"].values())


def test_a_remade_earlier_map_makes_the_later_change_stale_and_automation_remakes_it(lineage):
    made = lineage["made"]
    assert all(s["status"] == "FRESH" for s in made["status"].values()), made["status"]
    assert made["requested"] == {}

    remade = lineage["first_remade"]
    later = remade["status"][f"cluster_change {SECOND}"]
    assert later["status"] == "STALE"
    assert f"clusters demo|{FIRST}" in later["causes"], later
    # This date's own products were remade together: fresh.
    assert remade["status"][f"cluster_change {FIRST}"]["status"] == "FRESH"
    assert remade["status"][f"clusters {SECOND}"]["status"] == "FRESH"
    # Exactly the later date's change, and the Item that publishes it.
    assert remade["requested"] == {
        "cluster_change": [f"demo|{SECOND}"],
        "stac_item": [f"demo|{SECOND}"],
    }


def test_the_same_map_made_again_changes_nothing_downstream(lineage):
    again = lineage["first_same_again"]
    assert again["requested"] == {}
    assert again["status"][f"cluster_change {SECOND}"]["status"] == "FRESH"


def test_a_refitted_reference_marks_the_maps_made_with_it_stale(lineage):
    assert all(
        lineage["with_reference"]["status"][f"clusters {d}"]["status"] == "FRESH"
        for d in (FIRST, SECOND)
    ), lineage["with_reference"]
    for date in (FIRST, SECOND):
        refitted = lineage["refitted"]["status"][f"clusters {date}"]
        assert refitted["status"] == "STALE"
        assert "cluster_model demo" in refitted["causes"], refitted
