"""Change between two dates on real data: the Brumadinho mudflow, and clouds that are unknown.

Both dates are always classified by one model, so change is never the flicker of two fits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely

from geocluster_dagster.change import ChangeSettings, DatedImage, common_model
from geocluster_dagster.change_states import CHANGED, UNKNOWN
from geocluster_dagster.cluster import ClusterSettings
from geocluster_dagster.errors import ConfigError
from geocluster_dagster.model_file import load_model, model_digest
from geocluster_dagster.naming import DENSE_VEGETATION, cover_of
from geocluster_dagster.products.cluster_change import MODEL, read_layers, write_cluster_change
from geocluster_dagster.products.cluster_model import write_cluster_model
from geocluster_dagster.products.clusters import ModelPlan, open_clusters, write_clusters
from geocluster_dagster.quality import judge_plausible_change
from geocluster_dagster.reference import PoolSettings

from .conftest import L7_LABELED
from .helpers import AFTER, BEFORE, landsat7_dataset, stable_overlap


def _dated(images, root, plan_of, settings=None):
    """Each date's GeoTIFF with the model of its cluster map, made as ``plan_of(date)`` says."""
    dated = {}
    for date, image in images.items():
        write_clusters(
            image, settings or ClusterSettings(), root / date, aoi_id="x", plan=plan_of(date)
        )
        dated[date] = DatedImage(date, image, open_clusters(root / date).model)
    return dated


def _applied_reference(images, root):
    """Each date's map made with one reference model (k = 6) of both dates."""
    reference = write_cluster_model(
        images, ClusterSettings(n_clusters=6), PoolSettings(), root / "ref", aoi_id="b"
    ).model
    return _dated(images, root, lambda _: ModelPlan("apply", reference, "ref"))


def _both_dates(images, root, with_reference):
    """Both dates' maps under the default settings, with the AOI's reference model applied to
    both (fitted on both dates) or each fitted alone, and the one model that classifies both."""
    reference = None
    if with_reference:
        reference = write_cluster_model(
            images, ClusterSettings(), PoolSettings(), root / "ref", aoi_id="b"
        ).model
    plan = (
        (lambda _: ModelPlan("apply", reference, "ref")) if reference else (lambda _: ModelPlan())
    )
    dated = _dated(images, root, plan)
    return dated, common_model(dated[BEFORE], dated[AFTER], reference=None)


def _read(folder):
    return read_layers(folder)


@pytest.mark.parametrize("with_reference", [True, False], ids=["reference", "no_reference"])
def test_the_brumadinho_mudflow_changes_and_the_stable_land_does_not_under_the_defaults(
    brumadinho,
    tmp_path,
    with_reference,
):
    """Default settings throughout (k chosen from the data): with the AOI's reference model
    applied to both dates, and with each date fitted alone (then classified by one model of
    both dates)."""
    _, images = brumadinho
    dated, common = _both_dates(images, tmp_path, with_reference)
    assert common.how == ("shared" if with_reference else "pooled")
    facts = write_cluster_change(dated[BEFORE], dated[AFTER], tmp_path / "change", common=common)
    summary, transitions = facts.summary, facts.transitions
    # The matrix accounts for every compared pixel; 30 m pixels are 0.09 ha.
    assert transitions["pixels"].sum() == summary["compared_pixels"] > 100_000
    np.testing.assert_allclose(transitions["hectares"], transitions["pixels"] * 0.09)
    assert summary["changed_hectares"] == pytest.approx(summary["changed_pixels"] * 0.09)
    areas = facts.class_areas
    assert areas["hectares_before"].sum() == pytest.approx(summary["compared_pixels"] * 0.09)
    assert areas["delta_hectares"].sum() == pytest.approx(0, abs=1e-6)
    before, after, state = _read(tmp_path / "change")
    assert ((state == UNKNOWN) == ((before == 0) | (after == 0))).all()
    stable, mudflow = stable_overlap(images, before, after)
    # In the mudflow valley, vegetation became another cover; elsewhere little changed.
    mud_changed, stable_changed = (
        (state[mudflow] == CHANGED).mean(),
        (state[stable] == CHANGED).mean(),
    )
    assert mud_changed > 0.85, mud_changed  # measured 0.92 (reference), 0.92 (no reference)
    assert stable_changed <= 0.10, stable_changed  # measured 0.081, 0.08
    names = common.model.names_by_id
    was = pd.Series([cover_of(names[i]) for i in before[mudflow & (state == CHANGED)]])
    became = pd.Series([cover_of(names[i]) for i in after[mudflow & (state == CHANGED)]])
    assert (was == DENSE_VEGETATION).mean() > 0.8
    assert (became != DENSE_VEGETATION).mean() > 0.9
    # No two classes share a name; a move between two clusters of one cover is not change.
    assert len(set(names.values())) == len(names)
    moves = transitions.assign(
        one_cover=[
            cover_of(a) == cover_of(b)
            for a, b in zip(transitions.from_name, transitions.to_name, strict=True)
        ]
    )
    assert not (moves.changed & moves.one_cover).any()
    assert (moves.same_cover == (moves.one_cover & (moves.from_id != moves.to_id))).all()
    assert len(summary["largest_transitions"]) == 3 and "->" in summary["largest_transitions"][0]
    assert summary["overlap"] > 0.9
    assert load_model(tmp_path / "change" / MODEL).names_by_id == names
    assert summary["model"]["digest"] == model_digest(common.model)
    assert {p.name for p in (tmp_path / "change").iterdir()} >= {
        "change_map.png",
        "transitions.png",
    }


@pytest.mark.parametrize("with_reference", [True, False], ids=["reference", "no_reference"])
def test_comparing_only_confident_labels_removes_false_change_and_keeps_the_mudflow(
    brumadinho, tmp_path, with_reference
):
    """confident_only: pixels not labelled confidently in both dates are left out (unknown),
    and counted. Outside the mudflow less land changes; inside, what is compared still does."""
    _, images = brumadinho
    dated, common = _both_dates(images, tmp_path, with_reference)
    shares = {}
    for only in (False, True):
        folder = tmp_path / f"change_{only}"
        facts = write_cluster_change(
            dated[BEFORE], dated[AFTER], folder, common=common,
            settings=ChangeSettings(confident_only=only),
        )  # fmt: skip
        before, after, state = _read(folder)
        stable, mudflow = stable_overlap(images, before, after)
        compared = state != UNKNOWN
        shares[only] = (
            (state[stable & compared] == CHANGED).mean(),
            (state[mudflow & compared] == CHANGED).mean(),
        )
        both = (before > 0) & (after > 0)
        left_out = int((both & ~compared).sum())
        assert facts.summary["confident_only"] is only
        assert facts.summary["left_out_pixels"] == left_out
        assert facts.summary["compared_pixels"] == int(compared.sum())
    (stable_all, mud_all), (stable_sure, mud_sure) = shares[False], shares[True]
    # measured: stable 0.081 -> 0.055 (reference), 0.085 -> 0.069; mudflow 0.92 -> 0.94, 0.93 -> 0.96
    assert stable_sure < stable_all - 0.01 and stable_sure <= 0.075, shares
    assert mud_sure >= mud_all - 0.01 and mud_sure > 0.9, shares
    assert 0.1 < facts.summary["left_out_share"] < 0.6  # measured 0.30, 0.43


@pytest.mark.parametrize("with_reference", [True, False], ids=["reference", "no_reference"])
def test_sieved_maps_compared_confidently_find_the_mudflow_and_less_elsewhere(
    brumadinho, tmp_path, with_reference
):
    """The maps sieved to 0.5 ha (6 pixels) and only confident labels compared: less change
    on the stable land than under the defaults, the mudflow still changed; the change map's
    from and to bands are the sieved maps and the tables count them."""
    import dataclasses

    _, images = brumadinho
    dated, common = _both_dates(images, tmp_path, with_reference)
    shares, specks = {}, {}
    for unit, only in ((0.0, False), (0.5, True)):
        before_date, after_date = (
            dataclasses.replace(dated[d], min_mapping_unit_ha=unit) for d in (BEFORE, AFTER)
        )
        folder = tmp_path / f"change_{unit}"
        facts = write_cluster_change(
            before_date, after_date, folder, common=common,
            settings=ChangeSettings(confident_only=only),
        )  # fmt: skip
        before, after, state = _read(folder)
        stable, mudflow = stable_overlap(images, before, after)
        compared = state != UNKNOWN
        shares[unit] = (
            (state[stable & compared] == CHANGED).mean(),
            (state[mudflow & compared] == CHANGED).mean(),
        )
        assert facts.transitions["pixels"].sum() == facts.summary["compared_pixels"]
        assert facts.summary["compared_pixels"] == int(compared.sum())
        specks[unit] = _specks(before, 6)
        if unit:
            assert facts.summary["min_mapping_unit"] == {"hectares": 0.5, "pixels": 6}
    assert specks[0.5] < 0.1 * specks[0.0], specks  # the from map is the sieved map
    (stable_default, _), (stable_both, mud_both) = shares[0.0], shares[0.5]
    # measured: stable 0.081 -> 0.058 (reference), 0.085 -> 0.077; mudflow 0.92 -> 0.93, 0.93 -> 0.95
    assert stable_both < stable_default - 0.005, shares
    assert mud_both > 0.9, shares


def _specks(labels: np.ndarray, unit: int) -> int:
    """Regions of one class smaller than ``unit`` pixels (8-connected)."""
    from scipy import ndimage

    found = 0
    for value in np.unique(labels[labels > 0]):
        regions, _ = ndimage.label(labels == value, structure=np.ones((3, 3), bool))
        found += int((np.bincount(regions.ravel())[1:] < unit).sum())
    return found


def test_maps_fitted_alone_are_compared_in_one_model_of_both_dates(brumadinho, tmp_path):
    """Two fits number their clusters each its own way: their ids are never compared. One
    model of both dates classifies both, so identical spectra get identical labels."""
    _, images = brumadinho
    dated = _dated(images, tmp_path, lambda _: ModelPlan(), ClusterSettings(n_clusters=5))
    assert model_digest(dated[BEFORE].model) != model_digest(dated[AFTER].model)
    common = common_model(dated[BEFORE], dated[AFTER])
    assert common.how == "pooled" and common.model.n_clusters == 5  # the later map's settings
    same = DatedImage(AFTER, images[AFTER], dated[AFTER].model)
    # The same image on both dates: nothing changed, whatever model.
    facts = write_cluster_change(
        DatedImage(BEFORE, images[AFTER], dated[BEFORE].model), same, tmp_path / "c", common=common
    )
    assert facts.summary["changed_pixels"] == 0 and facts.summary["same_cover_pixels"] == 0
    assert facts.summary["compared_pixels"] > 100_000


def test_maps_of_one_model_are_compared_with_it_and_the_stored_maps_are_the_change_bands(
    brumadinho,
    tmp_path,
):
    _, images = brumadinho
    dated = _applied_reference(images, tmp_path)
    common = common_model(dated[BEFORE], dated[AFTER])
    assert common.how == "shared"
    write_cluster_change(dated[BEFORE], dated[AFTER], tmp_path / "change", common=common)
    before, after, _ = _read(tmp_path / "change")
    np.testing.assert_array_equal(before, open_clusters(tmp_path / BEFORE).cluster_map.values)
    np.testing.assert_array_equal(after, open_clusters(tmp_path / AFTER).cluster_map.values)


def test_matched_or_refitted_maps_are_classified_by_the_reference(brumadinho, tmp_path):
    """Maps matched to the reference by centres (model: partition), or made with a reference
    since fitted again: their ids need not mean the same cluster, so the current reference
    classifies both dates."""
    _, images = brumadinho
    settings = ClusterSettings(n_clusters=6)
    first, second = (
        write_cluster_model(images, replace_seed(settings, s), PoolSettings(), tmp_path / f"r{s}", aoi_id="b").model
        for s in (0, 1)
    )  # fmt: skip
    matched = _dated(images, tmp_path / "m", lambda _: ModelPlan("match", first, "ref"), settings)
    refitted = _dated(
        images,
        tmp_path / "r",
        lambda d: ModelPlan("apply", first if d == BEFORE else second, "ref"),
    )
    for dated in (matched, refitted):
        common = common_model(dated[BEFORE], dated[AFTER], reference=second, reference_source="r1")
        assert common.how == "reference" and common.model is second
        assert "reference model r1" in common.describe()


def replace_seed(settings, seed):
    import dataclasses

    return dataclasses.replace(settings, seed=seed)


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
        reference = write_cluster_model(
            images, ClusterSettings(n_clusters=5), PoolSettings(), folder / "ref", aoi_id="l7"
        ).model
        dated = _dated(images, folder, lambda _, r=reference: ModelPlan("apply", r, "ref"))
        common = common_model(dated["1999-11-01"], dated["2002-04-01"])
        write_cluster_change(
            dated["1999-11-01"], dated["2002-04-01"], folder / "change", common=common
        )
        results[masked] = _read(folder / "change")[2]
    assert (results[True][cloudy] == UNKNOWN).all()  # masked: unknown, never "changed"
    assert (results[False][cloudy] == CHANGED).mean() > 0.7  # unmasked, cloud reads as change


def test_change_in_an_area_marked_stable_is_counted_and_judged(brumadinho, tmp_path):
    """The mudflow valley marked (wrongly) as stable: the plausibility check warns with the
    numbers; a square of land that did not change passes."""
    _, images = brumadinho
    dated = _applied_reference(images, tmp_path)
    common = common_model(dated[BEFORE], dated[AFTER])
    first = write_cluster_change(dated[BEFORE], dated[AFTER], tmp_path / "first", common=common)
    before, after, state = _read(tmp_path / "first")
    stable_pixels, mudflow = stable_overlap(images, before, after)
    rows, cols = np.nonzero(mudflow)
    image = images[AFTER]
    x, y = image.x.values, image.y.values
    box = shapely.box(x[cols.min()], y[rows.max()], x[cols.max()], y[rows.min()])
    from odc.geo.geom import Geometry

    lonlat = Geometry(box, image.rio.crs).to_crs("EPSG:4326").geom
    verdicts = {}
    # A 40 x 40 px square of the land stable_overlap finds unchanged (no mudflow, no cloud).
    size = 40
    sums = np.cumsum(np.cumsum(np.pad(stable_pixels, ((1, 0), (1, 0))), 0), 1)
    whole = sums[size:, size:] - sums[:-size, size:] - sums[size:, :-size] + sums[:-size, :-size]
    r, c = np.argwhere(whole == size * size)[0]
    square = shapely.box(x[c + 2], y[r + size - 3], x[c + size - 3], y[r + 2])
    quiet = Geometry(square, image.rio.crs).to_crs("EPSG:4326").geom
    for name, area in (("mudflow", lonlat), ("quiet", quiet)):
        path = tmp_path / f"{name}.geojson"
        path.write_text(
            json.dumps(
                {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(area)}
            )
        )
        settings = ChangeSettings(stable_areas=str(path))
        facts = write_cluster_change(
            dated[BEFORE], dated[AFTER], tmp_path / name, common=common, settings=settings
        )
        stable = facts.summary["stable_areas"]
        assert stable["path"] == str(path) and stable["compared_pixels"] > 1_000
        verdicts[name] = judge_plausible_change(facts.summary, 0.2, 0.1)
        verdicts[name + "_share"] = stable["changed_share"]
    assert (
        not verdicts["mudflow"].passed
        and "stable_areas changed land cover" in verdicts["mudflow"].description
    )
    assert verdicts["mudflow_share"] > 0.1  # measured 0.142: the bounding box of the mudflow
    assert verdicts["quiet"].passed, verdicts["quiet"].description
    # The whole-map numbers do not depend on the stable areas.
    assert first.summary["changed_pixels"] == facts.summary["changed_pixels"]


def test_a_confident_change_of_most_of_the_map_is_implausible():
    summary = {"confident": {"changed_share": 0.35, "compared_pixels": 1000}, "stable_areas": None}
    verdict = judge_plausible_change(summary, 0.2, 0.1)
    assert not verdict.passed and "35.0% of the 1000 pixels" in verdict.description
    assert "warn_changed_share=0.2" in verdict.description
    summary["confident"]["changed_share"] = 0.01
    assert judge_plausible_change(summary, 0.2, 0.1).passed


def test_settings_refuse_what_cannot_work():
    dates = ["2019-01-01", "2019-01-16", "2019-02-01"]
    assert ChangeSettings().earlier(dates, "2019-02-01") == "2019-01-16"
    assert ChangeSettings().earlier(dates, "2019-01-01") is None
    assert ChangeSettings(compare_with="2019-01-01").earlier(dates, "2019-02-01") == "2019-01-01"
    with pytest.raises(ConfigError, match="compare_with=2018-12-01 has no clusters map"):
        ChangeSettings(compare_with="2018-12-01").earlier(dates, "2019-02-01")
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        ChangeSettings(compare_with="2019-01")
    with pytest.raises(ConfigError, match="compare_with=2019-02-01 is this partition's own date"):
        ChangeSettings(compare_with="2019-02-01").earlier(dates, "2019-02-01")
    with pytest.raises(ConfigError, match="compare_with=2019-02-01 is after it"):
        ChangeSettings(compare_with="2019-02-01").earlier(dates, "2019-01-16")
    with pytest.raises(ConfigError, match="warn_changed_share=1.5 is invalid"):
        ChangeSettings(warn_changed_share=1.5)


def test_the_earlier_map_is_looked_for_within_the_look_back_the_graph_declares():
    """Dagster's lineage knows the change's inputs only within the look-back (a year of
    windows): a map found only before it is named, not compared behind the graph's back."""
    from geocluster_dagster.defs.partitions import LOOKBACK_WINDOWS, lookback_dates
    from geocluster_dagster.errors import NotComparable

    within = lookback_dates("2020-03-01")
    assert len(within) == LOOKBACK_WINDOWS["month"] and within[-1] == "2020-02-01"
    assert within[0] == "2019-03-01"
    assert lookback_dates("2013-05-01") == ["2013-04-01"]  # the first partition's start
    dates = ["2018-06-01", "2019-05-01"]
    assert ChangeSettings().earlier(dates, "2020-03-01", within=within) == "2019-05-01"
    with pytest.raises(
        NotComparable, match="2018-06-01, is older than the look-back .* compare_with"
    ):
        ChangeSettings().earlier(["2018-06-01"], "2020-03-01", within=within)
    # An explicit compare_with is the user's choice, outside the look-back too.
    chosen = ChangeSettings(compare_with="2018-06-01")
    assert chosen.earlier(["2018-06-01"], "2020-03-01", within=within) == "2018-06-01"
    assert ChangeSettings().earlier([], "2020-03-01", within=within) is None


def test_stable_areas_that_are_not_polygons_are_refused(tmp_path):
    from geocluster_dagster.change import read_stable_areas

    path = tmp_path / "points.geojson"
    path.write_text(json.dumps({"type": "Point", "coordinates": [0, 0]}))
    with pytest.raises(ConfigError, match="holds no valid Polygon"):
        read_stable_areas(str(path), "EPSG:32723")
    with pytest.raises(ConfigError, match="not a readable GeoJSON"):
        read_stable_areas(str(tmp_path / "missing.geojson"), "EPSG:32723")
