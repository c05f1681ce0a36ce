"""The accuracy asset as a user runs it: `geocluster accuracy` on the demo, whose AOI registers
reference points drawn from the synthetic landscape's own ground truth."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from geocluster_dagster.aoi import AOI, reference_of
from geocluster_dagster.demo import DEMO_MONTH, build_demo
from geocluster_dagster.demo.catalog import DEMO_REFERENCE, DEMO_REFERENCE_POINTS

from .helpers import invoke, item_file


def test_the_demo_map_is_assessed_against_its_ground_truth_and_published(tmp_path):
    assert invoke(tmp_path, "demo").exit_code == 0
    done = invoke(tmp_path, "accuracy", "--aoi", "demo", "--date", DEMO_MONTH[:7])
    assert done.exit_code == 0, done.output
    assert "  accuracy " in done.output and "  stac_item " in done.output
    folder = tmp_path / "accuracy" / "demo" / DEMO_MONTH
    document = json.loads((folder / "accuracy.json").read_text())
    # the truth at 500 random points (a few may fall on pixels the map leaves unlabelled)
    assert DEMO_REFERENCE_POINTS - 5 <= document["samples"] <= DEMO_REFERENCE_POINTS
    assert document["reference_label"] == "cover"
    # The reference file is named relative to the product (no path of this machine), and by
    # its checksum.
    assert not Path(document["reference_data"]).is_absolute()
    reference = (folder / document["reference_data"]).resolve()
    assert reference.is_file() and reference.name == Path(DEMO_REFERENCE).name
    assert hashlib.sha256(reference.read_bytes()).hexdigest() == document["reference_data_sha256"]
    # measured 91.5 % (89.1-94.0 %): five covers, k chosen from the data
    assert 0.85 <= document["overall_accuracy"] <= 1.0, document["overall_accuracy"]
    low, high = document["overall_accuracy_ci95"]
    assert low < document["overall_accuracy"] < high
    water = next(m for m in document["matching"] if m["label"] == "water")
    assert water["how"] == "name"  # the cluster named water stands for the reference's water
    item = json.loads(item_file(tmp_path, "demo", DEMO_MONTH).read_text())
    assert {"accuracy", "error_matrix", "plot_error_matrix"} <= set(item["assets"])
    report = (tmp_path / "report" / "demo" / f"{DEMO_MONTH}.html").read_text()
    assert "<h2>Accuracy</h2>" in report and "Olofsson" in report

    # The map remade (another k): the assessment of the old map is not published beside it.
    config = tmp_path / "k4.yaml"
    config.write_text(yaml.safe_dump({"ops": {"clusters": {"config": {"n_clusters": 4}}}}))
    again = invoke(
        tmp_path, "materialize", "--aoi", "demo", "--date", DEMO_MONTH[:7], "--config", str(config)
    )
    assert again.exit_code == 0, again.output
    item = json.loads(item_file(tmp_path, "demo", DEMO_MONTH).read_text())
    assert "accuracy" not in item["assets"]
    report = (tmp_path / "report" / "demo" / f"{DEMO_MONTH}.html").read_text()
    assert "<h2>Accuracy</h2>" not in report


def test_an_aoi_without_reference_data_is_not_assessed_and_says_how_to_register_it(tmp_path):
    demo = build_demo(tmp_path / "demo")
    registry = json.loads(demo.aoi_registry.read_text())
    for feature in registry["features"]:
        feature["properties"].pop("reference_data")
    plain = tmp_path / "aois.geojson"
    plain.write_text(json.dumps(registry))
    env = {"GEOCLUSTER_AOI_REGISTRY": str(plain), "GEOCLUSTER_STAC_URL": str(demo.catalog)}
    out = tmp_path / "out"
    assert (
        invoke(out, "materialize", "--aoi", "demo", "--date", DEMO_MONTH[:7], env=env).exit_code
        == 0
    )
    done = invoke(out, "accuracy", "--aoi", "demo", "--date", DEMO_MONTH[:7], env=env)
    assert done.exit_code == 0, done.output
    said = next(line for line in done.output.splitlines() if line.startswith("  accuracy "))
    assert "not assessed: AOI demo registers no reference data" in said, done.output
    assert "`reference_data` property" in said
    assert not (out / "accuracy" / "demo" / DEMO_MONTH).exists()
    item = json.loads(item_file(out, "demo", DEMO_MONTH).read_text())
    assert "accuracy" not in item["assets"]


def test_reference_data_paths_are_read_relative_to_the_registry(tmp_path):
    import shapely

    aoi = AOI(
        id="a",
        name="a",
        geometry=shapely.box(0, 0, 1, 1),
        properties={"reference_data": "truth/points.gpkg", "reference_label": "lc"},
    )
    registry = tmp_path / "registry" / "aois.geojson"
    registry.parent.mkdir()  # a registry may be a file or a folder of files
    assert reference_of(aoi, registry) == (tmp_path / "registry" / "truth" / "points.gpkg", "lc")
    assert reference_of(aoi, tmp_path / "registry") == (
        tmp_path / "registry" / "truth" / "points.gpkg",
        "lc",
    )
    bare = AOI(id="b", name="b", geometry=shapely.box(0, 0, 1, 1))
    assert reference_of(bare, registry) is None
    assert Path(DEMO_REFERENCE).suffix == ".geojson"
