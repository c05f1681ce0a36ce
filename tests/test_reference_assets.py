"""cluster_model and the clusters `model` setting, materialized in-process on the demo."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pytest
import rasterio

from geocluster_dagster.defs.assets import cluster_model
from geocluster_dagster.defs.outputs import OutputStore
from geocluster_dagster.defs.resources import AOIRegistry, DaskCluster, StacCatalog
from geocluster_dagster.demo import DEMO_MONTH, build_demo
from geocluster_dagster.model_file import load_model

from .helpers import failure_message, materialization, run

CLUSTERS_ONLY = ["clusters", "diagnostics"]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """The demo partition materialized once (k=5), and its resources."""
    demo = build_demo(tmp_path_factory.mktemp("demo") / "catalog")
    out = tmp_path_factory.mktemp("out")
    instance = dg.DagsterInstance.ephemeral()
    result = run(
        out,
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=DaskCluster(),
        run_config={"ops": {"clusters": {"config": {"n_clusters": 5}}}},
        instance=instance,
    )
    assert result.success
    return demo, out, instance


def _rerun(graph, config, selection=CLUSTERS_ONLY):
    demo, out, instance = graph
    return run(
        out,
        registry=demo.aoi_registry,
        catalog=str(demo.catalog),
        dask_cluster=DaskCluster(),
        selection=selection,
        run_config={"ops": {"clusters": {"config": config}}},
        instance=instance,
    )


def _fit_reference(graph, config=None):
    demo, out, instance = graph
    return dg.materialize(
        [cluster_model],
        partition_key="demo",
        instance=instance,
        run_config={"ops": {"cluster_model": {"config": config or {"n_clusters": 4}}}},
        raise_on_error=False,
        resources={
            "aoi_registry": AOIRegistry(path=str(demo.aoi_registry)),
            "stac": StacCatalog(url=str(demo.catalog)),
            "dask": DaskCluster(),
            "outputs": OutputStore(base_dir=str(out)),
        },
    )


def test_aoi_reference_without_a_reference_says_how_to_make_one(graph):
    result = _rerun(graph, {"model": "aoi_reference"})
    message = failure_message(result)
    assert "There is no cluster model at" in message
    assert "materialize cluster_model for AOI 'demo' first" in message
    assert "clusters.model: auto" in message


def test_a_reference_of_missing_dates_is_refused_naming_them(graph):
    result = _fit_reference(graph, {"dates": ["2023-05-01"]})
    message = failure_message(result)
    assert "dates ['2023-05-01'] of AOI 'demo' have no geotiff" in message
    assert f"materialized: ['{DEMO_MONTH}']" in message


def test_the_reference_is_applied_or_matched_and_the_map_says_which(graph):
    demo, out, _ = graph
    fitted = _fit_reference(graph)
    assert fitted.success
    metadata = materialization(fitted, "cluster_model").metadata
    assert metadata["dates_pooled"].value == DEMO_MONTH
    assert metadata["n_clusters"].value == 4
    reference = load_model(out / "cluster_model" / "demo" / "model.json")

    applied = _rerun(graph, {"model": "aoi_reference"})
    assert applied.success
    clusters = materialization(applied, "clusters").metadata
    assert "the reference model" in clusters["model"].value and "applied" in clusters["model"].value
    assert clusters["n_clusters"].value == 4  # the reference's k, not the partition's 5
    folder = out / "clusters" / "demo" / DEMO_MONTH
    np.testing.assert_array_equal(load_model(folder / "model.json").centers(), reference.centers())
    with rasterio.open(folder / "cluster_map.tif") as src:
        applied_map = src.read(1)
    assert set(np.unique(applied_map)) <= {0, 1, 2, 3, 4}

    # model: auto (the default) applies the AOI's reference once it has one.
    auto = _rerun(graph, {"n_clusters": 5})
    assert auto.success
    assert "applied" in materialization(auto, "clusters").metadata["model"].value
    with rasterio.open(folder / "cluster_map.tif") as src:
        np.testing.assert_array_equal(src.read(1), applied_map)

    # model: partition fits k=5 on the partition and matches it to the reference.
    matched = _rerun(graph, {"n_clusters": 5, "model": "partition"})
    assert matched.success
    clusters = materialization(matched, "clusters").metadata
    assert "ids matched to the reference" in clusters["model"].value
    assert "| cluster | id | distance | matched |" in clusters["matches"].value
    summary = json.loads((folder / "summary.json").read_text())
    matches = summary["model"]["matches"]
    assert len(matches) == 5 and sum(m["matched"] for m in matches) >= 3
    ids = [m["id"] for m in matches]
    assert len(set(ids)) == 5 and all(
        i > 4 for m, i in zip(matches, ids, strict=True) if not m["matched"]
    )
    signatures = [row["cluster"] for row in json.loads((folder / "signatures.json").read_text())]
    assert signatures == sorted(ids)

    # A model file given by path (e.g. one region model for many AOIs) is applied as it is.
    elsewhere = out / "shared_model.json"
    elsewhere.write_text((out / "cluster_model" / "demo" / "model.json").read_text())
    by_path = _rerun(graph, {"model": str(elsewhere)})
    assert by_path.success
    assert str(elsewhere) in materialization(by_path, "clusters").metadata["model"].value
    with rasterio.open(folder / "cluster_map.tif") as src:
        np.testing.assert_array_equal(src.read(1), applied_map)
