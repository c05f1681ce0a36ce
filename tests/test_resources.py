"""Resources take the deployment's settings (env or resource config) when a run uses them, and
say which they used: setting one field in run config never swaps in the demo for the others."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import dagster as dg
import pytest
from click.testing import CliRunner

from geocluster_dagster.cli import main
from geocluster_dagster.definitions import defs
from geocluster_dagster.defs.assets import stac_items
from geocluster_dagster.defs.outputs import OutputStore
from geocluster_dagster.defs.partitions import partition_key
from geocluster_dagster.defs.resources import (
    ENV_AOI_REGISTRY,
    ENV_OUTPUT,
    ENV_STAC_URL,
    AOIRegistry,
    StacCatalog,
    deployment_setting,
)
from geocluster_dagster.demo import DEMO_MONTH, build_demo
from geocluster_dagster.errors import ConfigError
from geocluster_dagster.storage import expand_path


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in (ENV_OUTPUT, ENV_AOI_REGISTRY, ENV_STAC_URL, "GEOCLUSTER_STAC_SIGN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_resource_run_config_keeps_the_sources_the_environment_names(clean_env, tmp_path):
    demo = build_demo(tmp_path / "demo")
    # A copy elsewhere: if the run fell back to the demo, its source would be the demo's path.
    mine = shutil.copytree(demo.root, tmp_path / "my_catalog")
    catalog = mine / demo.catalog.relative_to(demo.root)
    registry = mine / demo.aoi_registry.relative_to(demo.root)
    clean_env.setenv(ENV_STAC_URL, str(catalog))
    clean_env.setenv(ENV_AOI_REGISTRY, str(registry))
    clean_env.setenv(ENV_OUTPUT, str(tmp_path / "out"))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("aoi", ["demo"])
    result = dg.materialize(
        [stac_items],
        resources=defs.resources,
        instance=instance,
        partition_key=partition_key("demo", DEMO_MONTH),
        run_config={
            "resources": {
                "stac": {"config": {"timeout_s": 120, "max_retries": 2}},
                "aoi_registry": {"config": {"auto_orient": True}},
            }
        },
    )
    metadata = result.asset_materializations_for_node("stac_items")[0].metadata
    assert metadata["source"].value == str(catalog)
    assert metadata["stac_source"].value == f"{catalog} (env {ENV_STAC_URL})"
    assert metadata["aoi_registry"].value == f"{registry} (env {ENV_AOI_REGISTRY})"
    assert metadata["output_root"].value == str(tmp_path / "out")
    assert (tmp_path / "out" / "stac_items" / "demo" / f"{DEMO_MONTH}.json").is_file()
    assert not (tmp_path / "out" / "demo_catalog").exists(), "the demo was built: it was used"


def test_a_configured_field_wins_over_the_environment_which_wins_over_the_default(clean_env):
    assert deployment_setting(None, "stac.url", ENV_STAC_URL, "demo").value == "demo"
    assert (
        "set env GEOCLUSTER_STAC_URL or stac.url"
        in deployment_setting(None, "stac.url", ENV_STAC_URL, "demo").origin
    )
    clean_env.setenv(ENV_STAC_URL, "/data/catalog.json")
    assert str(StacCatalog().setting()) == f"/data/catalog.json (env {ENV_STAC_URL})"
    configured = StacCatalog(url="https://example.org/stac").setting()
    assert (configured.value, configured.origin) == (
        "https://example.org/stac",
        "resource config stac.url",
    )


def test_paths_expand_home_and_variables_or_are_refused(clean_env, tmp_path):
    home = tmp_path / "home"
    clean_env.setenv("SCENES", str(tmp_path / "scenes"))
    assert expand_path("~/out", "x") == home / "out"
    assert expand_path("$SCENES/a.json", "x") == tmp_path / "scenes" / "a.json"
    assert OutputStore(base_dir="~/out").root() == home / "out"
    clean_env.setenv(ENV_OUTPUT, "~/elsewhere")
    assert OutputStore().root() == home / "elsewhere"
    assert StacCatalog(url="$SCENES/catalog.json").source().url == str(
        tmp_path / "scenes" / "catalog.json"
    )
    assert StacCatalog(url="https://example.org/stac").source().url == "https://example.org/stac"
    with pytest.raises(
        ConfigError,
        match=r"aoi_registry.path='\$NOPE/aois' names an environment variable that is not set",
    ):
        AOIRegistry(path="$NOPE/aois").resolved_path()


def test_the_cli_output_root_expands_home(clean_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["aois"], env={ENV_OUTPUT: "~/out"})
    assert result.exit_code == 0, result.output
    assert "demo" in result.output
    assert (tmp_path / "home" / "out" / "demo_catalog").is_dir()
    assert not (tmp_path / "~").exists()


def test_an_unreachable_dask_scheduler_fails_in_its_own_words(monkeypatch):
    import dagster as dg

    from geocluster_dagster.defs import resources

    from .servers.ports import free_port

    monkeypatch.setattr(resources, "DASK_CONNECT_TIMEOUT_S", 2)
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(dg.DagsterResourceFunctionError) as failed:
        with dg.build_resources({"dask": resources.DaskCluster(scheduler_address=address)}):
            pass
    cause = failed.value.__cause__
    assert isinstance(cause, ConfigError), cause
    assert (
        f"Cannot reach the Dask scheduler {address} (set by resource dask.scheduler_address) within 2 s"
        in str(cause)
    )
    assert "unset it to compute in the run's own process" in str(cause)


def test_the_stac_resource_takes_every_default_from_the_plain_settings():
    """One source for each default: the resource's fields feed StacSource and
    RemoteReadSettings, and left unset they give exactly those classes' own defaults."""
    import dataclasses

    from geocluster_dagster.defs.resources import StacCatalog
    from geocluster_dagster.remote import RemoteReadSettings
    from geocluster_dagster.search import StacSource

    resource = StacCatalog(url="https://example.invalid/api")
    source = resource.source()
    assert source == dataclasses.replace(StacSource(url=source.url), sign=source.sign)
    assert resource.read_settings() == RemoteReadSettings()


def test_the_launchpad_s_resource_descriptions_say_what_runs_will_use(tmp_path):
    """The launchpad shows each resource's description above its config: where runs search,
    read the AOIs and write, as the code location loaded them (a URL's token left out)."""
    code = (
        "from geocluster_dagster.definitions import defs\n"
        "for key in ('stac', 'aoi_registry', 'outputs'):\n"
        "    print(key, '=', defs.resources[key].get_resource_definition().description)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOCLUSTER_")}
    env |= {
        "GEOCLUSTER_STAC_URL": "https://stac.example.org/api?token=s3cret",
        "GEOCLUSTER_OUTPUT": str(tmp_path / "out"),
    }
    shown = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    said = dict(line.split(" = ", 1) for line in shown.splitlines())
    runs_use = "Runs of this code location use, unless their run config sets it:"
    assert (
        f"{runs_use} https://stac.example.org/api?<redacted> (env GEOCLUSTER_STAC_URL)"
        in said["stac"]
    )
    assert f"{runs_use} {tmp_path / 'out'} (env GEOCLUSTER_OUTPUT)" in said["outputs"]
    assert f"{runs_use} the demo AOI." in said["aoi_registry"]
    assert "s3cret" not in shown
