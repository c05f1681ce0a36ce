"""An asset backfill (the kind the UI's asset pages launch, not a job's) over a month without
imagery and a month with it, run by the real daemon: it ends *succeeded*, and the empty month's
assets are materialized as "no imagery", told apart from partitions never run."""

from __future__ import annotations

import os
import time

import dagster as dg
import pytest

from geocluster_dagster.demo import DEMO_MONTH, build_demo

from .servers.dagster_daemon import running_daemon

pytestmark = pytest.mark.servers

EMPTY = "2023-05-01"  # the demo's scenes are of June 2023


def test_an_asset_backfill_over_a_month_without_imagery_succeeds(tmp_path):
    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

    from geocluster_dagster.definitions import defs

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    demo = build_demo(tmp_path / "demo")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "DAGSTER_"))},
        "DAGSTER_HOME": str(home),
        "GEOCLUSTER_OUTPUT": str(tmp_path / "out"),
        "GEOCLUSTER_AOI_REGISTRY": str(demo.aoi_registry),
        "GEOCLUSTER_STAC_URL": str(demo.catalog),
    }
    pipeline = [
        "stac_items", "band_stack", "mosaic", "geotiff", "clusters", "cluster_change",
        "diagnostics", "stac_item",
    ]  # fmt: skip
    keys = [f"demo|{EMPTY}", f"demo|{DEMO_MONTH}"]
    with running_daemon(env, tmp_path, tmp_path / "daemon.log", owned_by=str(tmp_path)):
        with dg.DagsterInstance.from_config(str(home)) as instance:
            backfill = PartitionBackfill.from_asset_partitions(
                backfill_id="emptymonth",
                asset_graph=defs.resolve_asset_graph(),
                partition_names=keys,
                asset_selection=[dg.AssetKey(name) for name in pipeline],
                backfill_timestamp=time.time(),
                tags={},
                dynamic_partitions_store=instance,
                all_partitions=False,
                title=None,
                description=None,
                run_config=None,
            )
            instance.add_backfill(backfill)
            deadline = time.monotonic() + 600
            status = instance.get_backfill("emptymonth").status
            while status == BulkActionStatus.REQUESTED and time.monotonic() < deadline:
                time.sleep(2)
                status = instance.get_backfill("emptymonth").status
            log = (tmp_path / "daemon.log").read_text()[-4000:]
            assert status == BulkActionStatus.COMPLETED_SUCCESS, (status, log)

            for name in pipeline:
                records = instance.fetch_materializations(dg.AssetKey(name), limit=100).records
                by_partition = {
                    r.partition_key: r.asset_materialization.metadata
                    for r in records
                    if r.partition_key in keys
                }
                assert set(by_partition) == set(keys), name
                if name != "stac_items":
                    assert "no_imagery" in by_partition[f"demo|{EMPTY}"], name
                    assert "output_path" not in by_partition[f"demo|{EMPTY}"], name
                assert "no_imagery" not in by_partition[f"demo|{DEMO_MONTH}"], name
            # A partition never run is still missing: told apart from "no imagery".
            made = instance.get_materialized_partitions(dg.AssetKey("clusters"))
            assert made == set(keys)
            # The backfill also planned the changes of the year after June (they read its
            # map): those dates have no map yet, and say so instead of failing.
            records = instance.fetch_materializations(
                dg.AssetKey("cluster_change"), limit=100
            ).records
            later = {
                r.partition_key: r.asset_materialization.metadata["not_compared"].value
                for r in records
                if r.partition_key not in keys
            }
            assert "demo|2023-07-01" in later and len(later) == 12, sorted(later)
            assert all("has no map of its own yet" in reason for reason in later.values())
            # ... and the Items that would publish those changes, if the backfill planned them
            # too (Dagster may: they read the changes), say there is nothing to publish yet.
            for record in instance.fetch_materializations(
                dg.AssetKey("stac_item"), limit=100
            ).records:
                if record.partition_key not in keys:
                    metadata = record.asset_materialization.metadata
                    assert "was never searched" in metadata["not_published"].value
