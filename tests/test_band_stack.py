"""The band stack is stored as the recipe that reopens it, lazily and exactly."""

from __future__ import annotations

import json

import pystac
import pytest
import shapely
import xarray as xr

from geocluster_dagster.demo import DEMO_MONTH, build_demo
from geocluster_dagster.errors import AssetReadError
from geocluster_dagster.load import LoadSettings, load_band_stack
from geocluster_dagster.products.band_stack import (
    BandStackRecipe,
    open_band_stack,
    write_band_stack,
)
from geocluster_dagster.remote import RemoteReadSettings
from geocluster_dagster.search import StacSource, search_items


@pytest.fixture(scope="module")
def demo_recipe(tmp_path_factory):
    demo = build_demo(tmp_path_factory.mktemp("demo"))
    aoi = shapely.geometry.shape(
        json.loads(demo.aoi_registry.read_text())["features"][0]["geometry"]
    )
    source = StacSource(url=str(demo.catalog))
    start = pystac.utils.str_to_datetime(f"{DEMO_MONTH}T00:00:00Z")
    items = search_items(
        source,
        collection="landsat-c2-l2",
        geometry=aoi,
        start=start,
        end=start.replace(month=start.month + 1),
    )
    settings = LoadSettings(bands=("red", "nir", "lwir"), chunk_size=256, mask_flags=("cloud",))
    recipe = BandStackRecipe(
        items=items,
        aoi=aoi,
        settings=settings,
        source=source,
        remote=RemoteReadSettings(attempts=2, retry_codes=(503,)),
    )
    return recipe, load_band_stack(items, aoi, settings)


def test_a_stored_recipe_reopens_the_same_lazy_stack(demo_recipe, tmp_path):
    recipe, direct = demo_recipe
    path = tmp_path / "band_stack" / "demo.json"
    written = write_band_stack(recipe, path).stack
    assert path.stat().st_size < 200_000  # items and settings, no pixels
    assert written.chunks == direct.chunks  # what writing it returns is the same lazy stack

    reopened = open_band_stack(path)
    assert reopened.chunks == direct.chunks  # lazy, chunked like the original
    assert json.loads(reopened.attrs.pop("load_config"))["mask_flags"] == ["cloud"]
    xr.testing.assert_identical(reopened.compute(), direct.compute())

    again = BandStackRecipe.from_dict(json.loads(path.read_text()))
    assert again.settings == recipe.settings and again.remote == recipe.remote
    assert again.source == recipe.source and again.aoi.equals(recipe.aoi)


def test_a_damaged_recipe_says_to_materialize_again(tmp_path):
    path = tmp_path / "band_stack.json"
    path.write_text(json.dumps({"type": "geocluster_dagster.BandStackRecipe", "items": {}}))
    with pytest.raises(AssetReadError, match="materialize band_stack"):
        open_band_stack(path)
