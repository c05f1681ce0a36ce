"""Change between two dates on real data: the Brumadinho mudflow, and clouds that are unknown."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio

from geocluster_dagster.change import (
    CHANGE_MAP,
    CHANGED,
    UNCHANGED,
    UNKNOWN,
    ChangeSettings,
    DatedMap,
    compare_maps,
)
from geocluster_dagster.cluster import ClusterSettings
from geocluster_dagster.cluster_product import ModelPlan, open_clusters, write_clusters
from geocluster_dagster.errors import ConfigError, NotComparable
from geocluster_dagster.naming import DENSE_VEGETATION
from geocluster_dagster.reference import PoolSettings
from geocluster_dagster.reference_product import write_reference_model

from .conftest import L7_LABELED
from .test_cluster import landsat7_dataset
from .test_reference import AFTER, BEFORE, _stable_overlap, brumadinho  # noqa: F401


def _dated(folder, date):
    stored = open_clusters(folder)
    return DatedMap(
        date, stored.cluster_map_path, stored.model.names_by_id, json.dumps(stored.summary["model"])
    )


def _maps_of(images, root, plan_of):
    """Each date's cluster map, made as ``plan_of(date)`` says."""
    maps = {}
    for date, image in images.items():
        plan = plan_of(date)
        write_clusters(image, ClusterSettings(n_clusters=6), root / date, aoi_id="x", plan=plan)
        maps[date] = _dated(root / date, date)
    return maps


def test_the_brumadinho_mudflow_is_vegetation_that_became_something_else(brumadinho, tmp_path):  # noqa: F811
    root, images = brumadinho
    reference = write_reference_model(
        images, ClusterSettings(n_clusters=6), PoolSettings(), tmp_path / "ref", aoi_id="b"
    ).model
    source = str(tmp_path / "ref" / "model.json")
    maps = _maps_of(images, tmp_path, lambda _: ModelPlan("apply", reference, source))
    facts = compare_maps(maps[BEFORE], maps[AFTER], tmp_path / "change")
    summary, transitions = facts.summary, facts.transitions
    # The matrix accounts for every compared pixel; 30 m pixels are 0.09 ha.
    assert transitions["pixels"].sum() == summary["compared_pixels"] > 100_000
    np.testing.assert_allclose(transitions["hectares"], transitions["pixels"] * 0.09)
    assert summary["changed_hectares"] == pytest.approx(summary["changed_pixels"] * 0.09)
    areas = facts.class_areas
    assert areas["hectares_before"].sum() == pytest.approx(summary["compared_pixels"] * 0.09)
    assert areas["delta_hectares"].sum() == pytest.approx(0, abs=1e-6)
    with rasterio.open(tmp_path / "change" / CHANGE_MAP) as src:
        assert src.descriptions == ("from", "to", "change")
        before, after, state = src.read()
    assert ((state == UNKNOWN) == ((before == 0) | (after == 0))).all()
    stable, mudflow = _stable_overlap(images, before, after)
    # In the mudflow valley, vegetation became another cover; elsewhere little changed.
    assert (state[mudflow] == CHANGED).mean() > 0.85, (state[mudflow] == CHANGED).mean()
    names = reference.names_by_id
    was = pd.Series([names[i] for i in before[mudflow & (state == CHANGED)]])
    became = pd.Series([names[i] for i in after[mudflow & (state == CHANGED)]])
    assert (was == DENSE_VEGETATION).mean() > 0.8
    assert (became != DENSE_VEGETATION).mean() > 0.9
    assert (state[stable] == UNCHANGED).mean() > 0.8  # measured 0.867
    assert len(summary["largest_transitions"]) == 3 and "->" in summary["largest_transitions"][0]
    assert summary["overlap"] > 0.9
    assert {p.name for p in (tmp_path / "change").iterdir()} >= {
        "change_map.png",
        "transitions.png",
    }


def test_maps_fitted_alone_are_not_compared(brumadinho, tmp_path):  # noqa: F811
    _, images = brumadinho
    maps = _maps_of(images, tmp_path, lambda _: ModelPlan())
    with pytest.raises(
        NotComparable, match="fitted alone, so their ids follow brightness.*cluster_model"
    ):
        compare_maps(maps[BEFORE], maps[AFTER], tmp_path / "change")
    assert not (tmp_path / "change").exists()


def test_masked_cloud_is_unknown_not_a_false_change(tmp_path):
    """Landsat 7, 1999 (clear) and 2002 (20 % cloud, 6.6 % shadow by Fmask)."""
    paths = {
        "1999-11-01": L7_LABELED / "LE70220491999322EDC01_stack.gtif",
        "2002-04-01": L7_LABELED / "LE70220492002106EDC00_stack.gtif",
    }
    bands = ["blue", "green", "red", "nir", "swir16", "swir22"]
    with rasterio.open(paths["2002-04-01"]) as src:
        cloudy = np.isin(src.read(8), [2, 4])  # Fmask shadow, cloud
    results = {}
    for masked in (True, False):
        images = {d: landsat7_dataset(p, mask_clouds=masked)[bands] for d, p in paths.items()}
        folder = tmp_path / f"masked_{masked}"
        reference = write_reference_model(
            images, ClusterSettings(n_clusters=5), PoolSettings(), folder / "ref", aoi_id="l7"
        ).model
        maps = _maps_of(images, folder, lambda _, r=reference: ModelPlan("apply", r, "ref"))
        compare_maps(maps["1999-11-01"], maps["2002-04-01"], folder / "change")
        with rasterio.open(folder / "change" / CHANGE_MAP) as src:
            results[masked] = src.read(3)
    assert (results[True][cloudy] == UNKNOWN).all()  # masked: unknown, never "changed"
    assert (results[False][cloudy] == CHANGED).mean() > 0.7  # unmasked, cloud reads as change


def test_the_earlier_date_is_the_latest_before_or_the_one_configured():
    dates = ["2019-01-01", "2019-01-16", "2019-02-01"]
    assert ChangeSettings().earlier(dates, "2019-02-01") == "2019-01-16"
    assert ChangeSettings().earlier(dates, "2019-01-01") is None
    assert ChangeSettings(compare_with="2019-01-01").earlier(dates, "2019-02-01") == "2019-01-01"
    with pytest.raises(ConfigError, match="compare_with=2018-12-01 has no clusters map"):
        ChangeSettings(compare_with="2018-12-01").earlier(dates, "2019-02-01")
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        ChangeSettings(compare_with="2019-01")


def test_a_reference_fitted_again_between_the_dates_is_not_compared(brumadinho, tmp_path):  # noqa: F811
    """Same path, new parameters: the ids of the two maps may mean other covers."""
    _, images = brumadinho
    source = str(tmp_path / "cluster_model" / "b" / "model.json")
    first, second = (
        write_reference_model(
            images, ClusterSettings(n_clusters=6, seed=seed), PoolSettings(), tmp_path / f"r{seed}", aoi_id="b"
        ).model
        for seed in (0, 1)
    )  # fmt: skip
    maps = _maps_of(
        images,
        tmp_path,
        lambda date: ModelPlan("apply", first if date == BEFORE else second, source),
    )
    with pytest.raises(NotComparable, match="was fitted again between them"):
        compare_maps(maps[BEFORE], maps[AFTER], tmp_path / "change")
    same = _maps_of(images, tmp_path / "same", lambda _: ModelPlan("apply", first, source))
    compare_maps(same[BEFORE], same[AFTER], tmp_path / "change")  # one model: compared
