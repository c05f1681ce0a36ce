"""A backfill over several AOI partitions: every partition completes with its own, complete outputs."""

from __future__ import annotations

import hashlib
import json

import dagster as dg
import numpy as np
import rasterio
import shapely
from rasterio.warp import transform_bounds
from shapely.geometry.polygon import orient

from geocluster_dagster.defs.assets import ASSETS
from geocluster_dagster.defs.jobs import pipeline_job
from geocluster_dagster.defs.outputs import OutputStore
from geocluster_dagster.defs.partitions import partition_key
from geocluster_dagster.defs.resources import AOIRegistry, DaskCluster, StacCatalog
from geocluster_dagster.demo import DEMO_MONTH, build_demo

AOIS = ("west", "centre", "east")


def _split_registry(demo, path):
    """Three AOIs: the demo polygon cut into vertical thirds."""
    polygon = shapely.geometry.shape(
        json.loads(demo.aoi_registry.read_text())["features"][0]["geometry"]
    )
    west, south, east, north = polygon.bounds
    edges = np.linspace(west, east, len(AOIS) + 1)
    features = []
    for aoi_id, x0, x1 in zip(AOIS, edges[:-1], edges[1:], strict=True):
        part = orient(polygon.intersection(shapely.box(x0, south, x1, north)).buffer(0), 1.0)
        features.append(
            {
                "type": "Feature",
                "id": aoi_id,
                "properties": {"name": aoi_id},
                "geometry": shapely.geometry.mapping(part),
            }
        )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_backfill_of_several_aoi_partitions(tmp_path):
    demo = build_demo(tmp_path / "demo")
    registry = _split_registry(demo, tmp_path / "aois.geojson")
    out = tmp_path / "out"
    resources = {
        "aoi_registry": AOIRegistry(path=str(registry)),
        "stac": StacCatalog(url=str(demo.catalog)),
        "dask": DaskCluster(),
        "outputs": OutputStore(base_dir=str(out)),
    }
    definitions = dg.Definitions(assets=ASSETS, jobs=[pipeline_job], resources=resources)
    job = definitions.resolve_job_def(pipeline_job.name)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("aoi", list(AOIS))
        run_config = {
            "ops": {
                "clusters": {"config": {"n_clusters": 4}},
                "diagnostics": {"config": {"elbow_k_max": 5}},
            }
        }
        results = [
            job.execute_in_process(
                partition_key=partition_key(aoi, DEMO_MONTH),
                instance=instance,
                run_config=run_config,
            )
            for aoi in AOIS
        ]
        assert all(r.success for r in results)
        materialized = instance.get_materialized_partitions(dg.AssetKey("diagnostics"))
        assert {str(k) for k in materialized} == {f"{aoi}|{DEMO_MONTH}" for aoi in AOIS}

    digests, footprints = set(), []
    for aoi in AOIS:
        for relative in (
            "stac_items/{a}/{m}.json",
            "band_stack/{a}/{m}.json",
            "mosaic/{a}/{m}.tif",
            "geotiff/{a}/{m}/bands.tif",
            "geotiff/{a}/{m}/indices.tif",
            "clusters/{a}/{m}/cluster_map.tif",
            "clusters/{a}/{m}/signatures.csv",
            "diagnostics/{a}/{m}/scores.json",
            "diagnostics/{a}/{m}/cluster_map.png",
        ):
            assert (out / relative.format(a=aoi, m=DEMO_MONTH)).exists(), (aoi, relative)
        geotiff = out / "geotiff" / aoi / DEMO_MONTH / "bands.tif"
        digests.add(hashlib.sha256(geotiff.read_bytes()).hexdigest())
        with rasterio.open(geotiff) as src:
            assert src.tags()["aoi_id"] == aoi
            # Each partition is on its items' own grid: the east AOI only touches the zone 17 tile.
            footprints.append(shapely.box(*transform_bounds(src.crs, "EPSG:4326", *src.bounds)))
    assert len(digests) == len(AOIS)  # distinct outputs, none overwritten by another partition
    assert (
        footprints[0].bounds[0] < footprints[1].bounds[0] < footprints[2].bounds[0]
    )  # west to east
