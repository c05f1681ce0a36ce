"""Map accuracy against reference data: Olofsson et al. (2014)'s estimator, and the labelled
Landsat 7 scene's training polygons (shared/data)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio

from geocluster_dagster.accuracy import (
    UNMATCHED,
    assess,
    estimate,
    match_clusters,
    read_reference,
    sample_map,
)
from geocluster_dagster.cluster import ClusterSettings
from geocluster_dagster.errors import ConfigError
from geocluster_dagster.products.clusters import CLUSTER_MAP, write_clusters

from .helpers import LANDSAT7, REFLECTANCE, STACK_1999, landsat7_dataset

POLYGONS = LANDSAT7 / "training_data.shp"


def test_the_published_example_of_olofsson_et_al_2014():
    """Section 5 of Olofsson et al. (2014): four strata of 30 m pixels and their error matrix.
    The paper's results: deforestation 21,158 ha +- 6,158 ha (mapped: 18,000 ha), its user's
    accuracy 0.88 +- 0.07 and producer's 0.75 +- 0.21, overall accuracy 0.95 +- 0.02."""
    names = ["deforestation", "forest gain", "stable forest", "stable non-forest"]
    counts = pd.DataFrame(
        [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]],
        index=names,
        columns=names,
    )
    mapped = dict(zip(names, [200_000, 150_000, 3_200_000, 6_450_000], strict=True))
    result = estimate(counts, mapped, pixel_area_ha=0.09)
    deforestation = result.per_class.set_index("class").loc["deforestation"]
    assert deforestation["mapped_ha"] == pytest.approx(18_000)
    assert deforestation["estimated_ha"] == pytest.approx(21_158, abs=1)
    assert deforestation["estimated_ha_ci95"] == pytest.approx(6_158, abs=1)
    assert deforestation["users_accuracy"] == pytest.approx(0.88)
    assert deforestation["users_accuracy_ci95"] == pytest.approx(0.07, abs=0.005)
    assert deforestation["producers_accuracy"] == pytest.approx(0.75, abs=0.005)
    assert deforestation["producers_accuracy_ci95"] == pytest.approx(0.21, abs=0.005)
    assert result.overall == pytest.approx(0.95, abs=0.005)
    assert result.overall_ci[1] - result.overall == pytest.approx(0.02, abs=0.002)
    # the estimated areas add up to the mapped total
    assert result.per_class["estimated_ha"].sum() == pytest.approx(900_000)


def test_clusters_are_matched_by_name_first_then_by_their_samples():
    pairs = pd.DataFrame({"cluster": [1, 1, 1, 2, 2, 3], "label": ["forest"] * 2 + ["water"] * 4})
    names = {1: "dense vegetation", 2: "Water", 3: "built-up", 4: "cloud"}
    matching = match_clusters(pairs, names, ["forest", "water"])
    assert matching.label_of == {1: "forest", 2: "water", 3: "water", 4: UNMATCHED}
    assert matching.how == {1: "majority", 2: "name", 3: "majority", 4: "none"}


@pytest.fixture(scope="module")
def landsat7_map(tmp_path_factory):
    folder = tmp_path_factory.mktemp("l7") / "clusters"
    ds = landsat7_dataset(STACK_1999)[REFLECTANCE]
    facts = write_clusters(ds, ClusterSettings(n_clusters=5), folder, aoi_id="l7")
    return folder, facts


def test_the_training_polygons_sample_the_pixels_their_raster_marks(landsat7_map):
    folder, _ = landsat7_map
    reference = read_reference(POLYGONS, "class")
    assert len(reference.geometries) == 30 and reference.crs == "EPSG:32615"
    pairs = sample_map(folder / CLUSTER_MAP, reference)
    # shared/data/README.md: the polygons rasterized as training_data.gtif mark 718 pixels
    with rasterio.open(LANDSAT7 / "training_data.gtif") as src:
        marked = int(np.count_nonzero(src.read(1)))
    assert marked == 718 and len(pairs) == marked  # rasterized alike: by pixel centres
    assert set(pairs["label"]) == {"forest", "water", "herbaceous", "barren", "urban"}


def test_the_landsat7_map_accuracy_equals_a_direct_count(landsat7_map):
    folder, facts = landsat7_map
    pairs = sample_map(folder / CLUSTER_MAP, read_reference(POLYGONS, "class"))
    sizes = dict(zip(facts.signatures["cluster"], facts.signatures["pixel_count"], strict=True))
    names = dict(zip(facts.signatures["cluster"], facts.signatures["name"], strict=True))
    result, matching = assess(pairs, names, sizes, pixel_area_ha=0.09)
    # Directly: each map class's share of the map times the share of its samples it got right.
    as_label = pairs["cluster"].map(matching.label_of)
    mapped: dict[str, int] = {}
    for cluster, pixels in sizes.items():
        mapped[matching.label_of[cluster]] = mapped.get(matching.label_of[cluster], 0) + pixels
    sampled = {label: n for label, n in mapped.items() if (as_label == label).any()}
    total = sum(sampled.values())
    direct = sum(
        sampled[label]
        / total
        * ((as_label == label) & (pairs["label"] == label)).sum()
        / (as_label == label).sum()
        for label in sampled
    )
    assert result.overall == pytest.approx(direct)
    assert 0.7 < result.overall <= 1.0  # five well-separated covers, k = 5
    low, high = result.overall_ci
    assert low < result.overall < high and high - low < 0.2
    document = json.loads(json.dumps(result.as_dict()))  # plain JSON, as the product writes it
    assert document["method"].startswith("Olofsson et al. 2014")
    assert sum(sum(row.values()) for row in document["error_matrix"].values()) == len(pairs)
    assert any("random sample" in caveat for caveat in result.caveats)


def test_reference_data_a_user_cannot_use_is_refused_in_their_terms(tmp_path):
    with pytest.raises(ConfigError, match="no column 'label'.*reference_label"):
        read_reference(POLYGONS, "label")
    broken = tmp_path / "broken.geojson"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="Cannot read the reference data"):
        read_reference(broken, "class")
    empty = tmp_path / "empty.geojson"
    empty.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"class": ""},
                        "geometry": {"type": "Point", "coordinates": [0, 0]},
                    }
                ],
            }
        )
    )
    with pytest.raises(ConfigError, match="no point or polygon"):
        read_reference(empty, "class")
    with pytest.raises(ConfigError, match="No reference sample falls on a mapped pixel"):
        estimate(pd.DataFrame(), {"water": 10}, 0.09)


def test_the_accuracy_product_of_a_map(landsat7_map, tmp_path):
    from geocluster_dagster.products.accuracy import (
        ACCURACY_JSON,
        CLASS_ACCURACY,
        ERROR_MATRIX,
        FIGURE,
        AccuracySettings,
        write_accuracy,
    )

    clusters, _ = landsat7_map
    facts = write_accuracy(clusters, POLYGONS, tmp_path / "accuracy", title="L7 1999")
    folder = tmp_path / "accuracy"
    assert {p.name for p in folder.iterdir()} == {
        ACCURACY_JSON,
        ERROR_MATRIX,
        CLASS_ACCURACY,
        FIGURE,
    }
    document = json.loads((folder / ACCURACY_JSON).read_text())
    assert document["samples"] == 718 and document["reference_label"] == "class"
    assert document["overall_accuracy"] == pytest.approx(facts.accuracy.overall, abs=1e-6)
    matrix = pd.read_csv(folder / ERROR_MATRIX, index_col="map_class")
    assert int(matrix.to_numpy().sum()) == 718
    measures = {m.key: m.value for m in facts.measures()}
    assert measures["reference_samples"] == 718
    verdict = facts.judge()
    assert (
        verdict.passed == (facts.accuracy.overall >= 0.85)
        and "95 % interval" in verdict.description
    )
    strict = write_accuracy(
        clusters, POLYGONS, tmp_path / "strict", AccuracySettings(warn_overall_accuracy=0.99)
    )
    judged = strict.judge()
    assert not judged.passed and "warn_overall_accuracy=99%" in judged.description
    # an unusable label column leaves no product behind
    with pytest.raises(ConfigError, match="reference_label"):
        write_accuracy(clusters, POLYGONS, tmp_path / "none", label_column="label")
    assert not (tmp_path / "none").exists()
