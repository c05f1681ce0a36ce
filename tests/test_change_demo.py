"""Change on the demo, along the path the CLI recommends, with the default settings.

The demo's ground is the same on both dates (only clouds, shadows and their rims differ, and
they are masked), so a true change map shows no change; a patch of forest painted as town on
the second date must show as change, and little else."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp

from geocluster_dagster.change_states import CHANGED, UNKNOWN
from geocluster_dagster.demo import FOREST, URBAN, LandCoverPatch, build_demo, demo_truth
from geocluster_dagster.products.cluster_change import CHANGE_MAP

from .helpers import invoke

FIRST, SECOND = "2023-06-01", "2023-06-16"  # the two half-month windows of the two dates
#: A stand of forest in the middle west of the demo AOI, cleared for a town block on the 18th.
PATCH = LandCoverPatch(lon=-84.0456, lat=35.0135, radius_m=500.0, cover=URBAN)


def _materialize_both(out, env):
    for date in (FIRST, SECOND):
        result = invoke(out, "materialize", "--aoi", "demo", "--date", date, env=env)
        assert result.exit_code == 0, result.output
    return result


def _change(out):
    folder = out / "cluster_change" / "demo" / SECOND
    summary = json.loads((folder / "summary.json").read_text())
    checks = json.loads((folder.parent / f"{SECOND}.checks.json").read_text())
    return folder, summary, {c["name"]: c for c in checks}


def _names_are_distinct(out):
    for date in (FIRST, SECOND):
        signatures = json.loads((out / "clusters" / "demo" / date / "signatures.json").read_text())
        names = [row["name"] for row in signatures]
        assert len(set(names)) == len(names), names


def test_an_unchanged_landscape_shows_no_change_with_and_without_a_reference(tmp_path):
    env = {"GEOCLUSTER_DATE_WINDOWS": "half_month"}
    out = tmp_path / "out"
    # 1. Two dates, each fitted alone: compared in one model of both dates.
    _materialize_both(out, env)
    _, summary, checks = _change(out)
    assert summary["model"]["how"] == "pooled"
    assert summary["compared_pixels"] > 40_000
    assert summary["changed_share"] <= 0.01, summary
    assert all(c["passed"] for c in checks.values()), checks
    assert set(checks) == {"comparable_ids", "overlap", "plausible_change"}
    _names_are_distinct(out)
    # The dates as people read them: the scenes' acquisition days, then the windows' first and
    # last days (not the windows' keys), from each date's own search.
    days = {
        date: sorted({f["properties"]["datetime"][:10] for f in json.loads(
            (out / "stac_items" / "demo" / f"{date}.json").read_text())["features"]})
        for date in (FIRST, SECOND)
    }  # fmt: skip
    assert summary["dates_compared"] == (
        f"scenes of {', '.join(days[FIRST])} -> {', '.join(days[SECOND])} "
        "(windows 2023-06-01 to 2023-06-15 -> 2023-06-16 to 2023-06-30)"
    )
    # 2. The CLI's next step: the AOI's reference model, then both dates again (default model:
    # auto applies it).
    fitted = invoke(out, "reference", "--aoi", "demo", env=env)
    assert fitted.exit_code == 0, fitted.output
    _materialize_both(out, env)
    _, summary, checks = _change(out)
    assert summary["model"]["how"] == "shared"
    assert summary["model"]["source"].endswith("cluster_model/demo/model.json")
    assert summary["changed_share"] <= 0.01, summary
    assert all(c["passed"] for c in checks.values()), checks
    _names_are_distinct(out)
    report = (out / "report" / "demo" / f"{SECOND}.html").read_text()
    assert f"{summary['changed_share']:.1%} of the compared pixels changed land cover" in report
    assert "classified by the model both maps were made with" in report


@pytest.fixture(scope="module")
def patched(tmp_path_factory):
    root = tmp_path_factory.mktemp("patched")
    demo = build_demo(root / "demo", patch=PATCH)
    env = {
        "GEOCLUSTER_DATE_WINDOWS": "half_month",
        "GEOCLUSTER_STAC_URL": str(demo.catalog),
        "GEOCLUSTER_AOI_REGISTRY": str(demo.aoi_registry),
    }
    _materialize_both(root / "out", env)
    return root / "out"


def test_a_painted_patch_is_the_change_and_little_else(patched):
    folder, summary, checks = _change(patched)
    with rasterio.open(folder / CHANGE_MAP) as src:
        state = src.read(1)
        rows, cols = np.indices(state.shape)
        xs, ys = src.xy(rows.ravel(), cols.ravel())
        lon, lat = warp(src.crs, "EPSG:4326", xs, ys)
    from geocluster_dagster.demo.landscape import to_local

    inside = PATCH.inside(*to_local(np.asarray(lon), np.asarray(lat), "EPSG:4326")).reshape(
        state.shape
    )
    # The patch's ground was forest before (the demo's truth, away from its edge pixels).
    truth = demo_truth(np.asarray(lon), np.asarray(lat), "EPSG:4326").reshape(state.shape)
    assert (truth[inside] == FOREST).mean() > 0.95
    compared = state != UNKNOWN
    patch_compared = inside & compared
    assert patch_compared.sum() > 200, patch_compared.sum()
    patch_changed = (state[patch_compared] == CHANGED).mean()
    elsewhere_changed = (state[~inside & compared] == CHANGED).mean()
    assert patch_changed > 0.9, patch_changed
    assert elsewhere_changed <= 0.01, elsewhere_changed
    # The summary's change is the patch's: all but a sliver of the changed pixels are in it.
    assert (inside[state == CHANGED]).mean() > 0.9
    assert summary["changed_pixels"] == int((state == CHANGED).sum())
    assert checks["comparable_ids"]["passed"] and checks["plausible_change"]["passed"]
