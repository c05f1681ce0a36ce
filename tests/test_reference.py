"""One model for many dates: ids that mean the same land cover, on the real Brumadinho pair."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geocluster_dagster.cluster import ClusterSettings, fit_clusterer
from geocluster_dagster.errors import AssetReadError, ConfigError
from geocluster_dagster.model_file import load_model, save_model
from geocluster_dagster.products.cluster_model import open_cluster_model, write_cluster_model
from geocluster_dagster.products.clusters import ModelPlan, open_clusters, write_clusters
from geocluster_dagster.reference import (
    MATCH_MAX_DISTANCE,
    ModelSettings,
    PoolSettings,
    match_to_reference,
)

from .helpers import AFTER, BEFORE, stable_overlap

FEATURES = ("blue", "green", "red", "nir")
BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")


def _blobs(centres, seed=0, n=400):
    rng = np.random.default_rng(seed)
    return np.concatenate([c + rng.normal(0, 0.005, (n, len(FEATURES))) for c in centres])


CENTRES = np.array(
    [
        [0.02, 0.03, 0.02, 0.01],  # water
        [0.03, 0.06, 0.04, 0.35],  # vegetation
        [0.10, 0.12, 0.15, 0.25],  # soil
        [0.30, 0.32, 0.33, 0.40],  # bright
    ]
)


def test_matching_gives_each_cluster_the_id_of_the_reference_cluster_it_is():
    reference = fit_clusterer(_blobs(CENTRES), FEATURES, ClusterSettings(n_clusters=4))
    # Another date: the same covers, slightly shifted, plus a new one (a fresh burn scar).
    shifted = np.vstack([CENTRES + 0.004, [[0.05, 0.05, 0.06, 0.08]]])
    model = fit_clusterer(_blobs(shifted, seed=1), FEATURES, ClusterSettings(n_clusters=5))
    matched, matches = match_to_reference(model, reference)
    for cover in CENTRES:
        ours = matched.predict((cover + 0.004)[None])[0]
        assert ours == reference.predict(cover[None])[0]
    # The burn scar has no counterpart (five clusters for four): a new id, above the reference's.
    flagged = [m for m in matches if not m.matched]
    assert len(flagged) == 1 and flagged[0].id == 5
    assert matched.predict(np.array([[0.05, 0.05, 0.06, 0.08]]))[0] == 5
    assert all(m.distance < 0.1 for m in matches if m.matched)


def test_a_pair_farther_apart_than_the_limit_is_not_matched():
    reference = fit_clusterer(_blobs(CENTRES), FEATURES, ClusterSettings(n_clusters=4))
    moved = CENTRES.copy()
    moved[3] = [0.05, 0.05, 0.06, 0.08]  # the bright cover is gone, a dark new one appeared
    model = fit_clusterer(_blobs(moved, seed=3), FEATURES, ClusterSettings(n_clusters=4))
    _, matches = match_to_reference(model, reference)
    flagged = [m for m in matches if not m.matched]
    assert len(flagged) == 1 and flagged[0].id == 5
    assert flagged[0].distance > MATCH_MAX_DISTANCE
    _, lenient = match_to_reference(model, reference, max_distance=flagged[0].distance + 0.01)
    assert all(m.matched for m in lenient)


def test_a_reference_with_other_features_is_refused_saying_which():
    reference = fit_clusterer(_blobs(CENTRES), FEATURES, ClusterSettings(n_clusters=4))
    model = fit_clusterer(_blobs(CENTRES)[:, :3], FEATURES[:3], ClusterSettings(n_clusters=4))
    with pytest.raises(ConfigError, match=r"missing \['nir'\].*set `features`"):
        match_to_reference(model, reference)


def test_matched_ids_survive_the_model_file_and_a_tampered_id_is_refused(tmp_path):
    reference = fit_clusterer(_blobs(CENTRES), FEATURES, ClusterSettings(n_clusters=4))
    model = fit_clusterer(_blobs(CENTRES[::-1], seed=2), FEATURES, ClusterSettings(n_clusters=4))
    matched, _ = match_to_reference(model, reference)
    path = save_model(matched, tmp_path / "model.json")
    np.testing.assert_array_equal(
        load_model(path).predict(_blobs(CENTRES)), matched.predict(_blobs(CENTRES))
    )
    document = json.loads(path.read_text())
    document["label_ids"] = [1, 1, 2, 3]
    path.write_text(json.dumps(document))
    with pytest.raises(AssetReadError, match="label_ids must be 4 distinct ids"):
        load_model(path)


def test_settings_refuse_what_cannot_work_in_the_users_terms():
    with pytest.raises(ConfigError, match="aoi:<id>"):
        ModelSettings(model="aoi:")
    with pytest.raises(ConfigError, match="match_max_distance"):
        ModelSettings(match_max_distance=0)
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        PoolSettings(dates=("2023-06",))
    with pytest.raises(ConfigError, match="swap them"):
        PoolSettings(first_date="2023-07-01", last_date="2023-06-01")
    pool = PoolSettings(dates=("2023-06-01", "2023-08-01"))
    with pytest.raises(ConfigError, match=r"materialize geotiff for b\|2023-08-01 first"):
        pool.select(["2023-06-01", "2023-07-01"], "b")
    assert PoolSettings(first_date="2023-07-01").select(["2023-06-01", "2023-07-01"], "b") == [
        "2023-07-01"
    ]
    with pytest.raises(ConfigError, match="no materialized geotiff in 2024-01-01..any"):
        PoolSettings(first_date="2024-01-01").select(["2023-06-01"], "b")
    assert ModelSettings(model="aoi:brumadinho").other_aoi == "brumadinho"
    assert ModelSettings(model="~/models/region.json").kind == "path"


# --------------------------------------------------------------------------------------------
# The real pair: before and after the Brumadinho tailings-dam collapse, 16 days apart
# --------------------------------------------------------------------------------------------


def test_one_reference_model_gives_the_same_ids_in_both_dates_except_in_the_mudflow(brumadinho):
    root, images = brumadinho
    settings = ClusterSettings(n_clusters=6)
    facts = write_cluster_model(images, settings, PoolSettings(), root / "reference", aoi_id="b")
    # An equal sample from each date: neither date outweighs the other.
    assert facts.pixels_per_date == {BEFORE: 100_000, AFTER: 100_000}
    assert set(facts.table.columns) >= {
        "cluster",
        "nir_centre",
        f"share_{BEFORE}",
        f"share_{AFTER}",
    }
    reference = open_cluster_model(root / "reference", fix="materialize cluster_model")
    maps = {}
    for date, image in images.items():
        written = write_clusters(
            image, settings, root / f"apply_{date}", aoi_id="b",
            plan=ModelPlan("apply", reference, str(root / "reference")),
        )  # fmt: skip
        assert written.summary["model"]["how"] == "apply"
        maps[date] = open_clusters(root / f"apply_{date}").cluster_map.values
    stable, mudflow = stable_overlap(images, maps[BEFORE], maps[AFTER])
    assert stable.sum() > 90_000 and mudflow.sum() > 3_000  # measured: 101,025 and 4,415 px
    agreement = (maps[BEFORE] == maps[AFTER])[stable].mean()
    in_mudflow = (maps[BEFORE] == maps[AFTER])[mudflow].mean()
    assert agreement > 0.8, agreement  # measured 0.867
    assert in_mudflow < 0.2, in_mudflow  # measured 0.063: the mudflow changed class


def test_each_date_fitted_alone_and_matched_takes_the_reference_ids_of_its_land_covers(
    brumadinho,
):
    root, images = brumadinho
    settings = ClusterSettings(n_clusters=6)
    reference = write_cluster_model(
        images, settings, PoolSettings(), root / "reference_m", aoi_id="b"
    ).model
    for date, image in images.items():
        applied = write_clusters(
            image, settings, root / f"applied_{date}", aoi_id="b",
            plan=ModelPlan("apply", reference, "reference"),
        )  # fmt: skip
        matched = write_clusters(
            image, settings, root / f"matched_{date}", aoi_id="b",
            plan=ModelPlan("match", reference, "reference"),
        )  # fmt: skip
        assert applied.n_clusters == 6
        by_reference = open_clusters(root / f"applied_{date}").cluster_map.values
        ours = open_clusters(root / f"matched_{date}").cluster_map.values
        recorded = matched.summary["model"]["matches"]
        assert len(recorded) == 6 and all("distance" in m for m in recorded)
        for match in matched.matches:
            pixels = by_reference[ours == match.id]
            majority = np.bincount(pixels).argmax()
            if match.matched:
                # Its pixels are, for the most part, what the reference calls that id.
                assert majority == match.id, (date, match)
            else:
                assert match.id > reference.max_id and match.distance > MATCH_MAX_DISTANCE
        assert sum(m.matched for m in matched.matches) >= 4, matched.matches
