"""Class maps that GDAL and QGIS draw with their names and colours, read back with GDAL and
rendered by QGIS."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rio_cogeo.cogeo import cog_validate

from geocluster_dagster.categories import class_colours
from geocluster_dagster.change import DatedImage, common_model
from geocluster_dagster.cluster import ClusterSettings
from geocluster_dagster.products.cluster_change import LAYERS, write_cluster_change
from geocluster_dagster.products.clusters import (
    CLUSTER_MAP,
    ModelPlan,
    open_clusters,
    write_clusters,
)

from .helpers import STACK_1999, STACK_2002, gdalinfo_json, landsat7_dataset, qgis_render

BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]


def test_the_cluster_map_carries_its_colours_names_and_attribute_table(tmp_path):
    facts = write_clusters(
        landsat7_dataset(STACK_1999)[BANDS], ClusterSettings(n_clusters=5), tmp_path / "c", aoi_id="l7"
    )  # fmt: skip
    path = tmp_path / "c" / CLUSTER_MAP
    assert cog_validate(str(path), quiet=True)[0]
    info = gdalinfo_json(path)
    band = info["bands"][0]
    names = [c.name for c in facts.classes]
    assert band["colorInterpretation"] == "Palette"
    assert band["categories"] == ["", *names]
    colours = class_colours(list(range(1, 6)))
    assert [tuple(e) for e in band["colorTable"]["entries"]] == [colours[i] for i in range(6)]
    fields = [f["name"] for f in info["rat"]["fieldDefn"]]
    assert fields == ["value", "name", "count", "area_ha", "red", "green", "blue", "alpha"]
    rows = {r["f"][0]: r["f"] for r in info["rat"]["row"]}
    for _, sig in facts.signatures.iterrows():
        value, name, count, area, *rgba = rows[int(sig["cluster"])]
        assert (name, count) == (sig["name"], int(sig["pixel_count"]))
        assert area == round(count * 0.09, 4) and tuple(rgba) == colours[value]
    with rasterio.open(path) as src:  # rasterio reads the colour table from the file itself
        assert src.colormap(1)[1] == colours[1]
    # The same id keeps its colour in another map that has it (here: the 2002 date, applied).
    again = write_clusters(
        landsat7_dataset(STACK_2002)[BANDS], ClusterSettings(), tmp_path / "d", aoi_id="l7",
        plan=ModelPlan("apply", open_clusters(tmp_path / "c").model, "ref"),
    )  # fmt: skip
    assert (
        gdalinfo_json(tmp_path / "d" / CLUSTER_MAP)["bands"][0]["colorTable"] == band["colorTable"]
    )
    assert [c.name for c in again.classes] == names


@pytest.fixture(scope="module")
def change(tmp_path_factory):
    """The change product of the labelled Landsat 7 pair (five clusters of the 1999 date),
    with the model both dates were classified by."""
    tmp_path = tmp_path_factory.mktemp("change")
    model = None
    dated = {}
    for date, stack in (("1999-11-01", STACK_1999), ("2002-04-01", STACK_2002)):
        plan = ModelPlan("apply", model, "ref") if model else ModelPlan()
        image = landsat7_dataset(stack, mask_clouds=True)[BANDS]
        write_clusters(image, ClusterSettings(n_clusters=5), tmp_path / date, aoi_id="l7", plan=plan)  # fmt: skip
        stored = open_clusters(tmp_path / date)
        model = model or stored.model
        dated[date] = DatedImage(date, image, stored.model)
    before, after = dated["1999-11-01"], dated["2002-04-01"]
    write_cluster_change(before, after, tmp_path / "change", common=common_model(before, after))
    return tmp_path / "change", model


def test_each_change_layer_is_a_paletted_cog_with_its_own_categories(change):
    """One single-band COG per layer, each with its colour table and category names: a
    3-band uint8 file opens in QGIS as an RGB composite, and holds one colour table only."""
    folder, model = change
    info = {}
    for band, file in LAYERS:
        path = folder / file
        assert cog_validate(str(path), quiet=True)[0], file
        (info[band],) = gdalinfo_json(path)["bands"]
        assert info[band]["description"] == band
        assert info[band]["colorInterpretation"] == "Palette", file
        assert info[band]["colorTable"]["count"] > 0, file
    assert info["change"]["categories"] == ["", "unchanged", "changed", "same cover, other cluster"]
    names = [model.names_by_id[i] for i in range(1, 6)]
    assert info["from"]["categories"][1:] == info["to"]["categories"][1:] == names
    # the colours of the classes: the cluster map's for from and to, the states' for change
    assert info["change"]["colorTable"]["entries"][2] != info["change"]["colorTable"]["entries"][1]
    assert info["from"]["colorTable"]["entries"][1] == info["to"]["colorTable"]["entries"][1]


def test_qgis_draws_each_change_layer_in_its_classes_colours_on_opening(change, tmp_path):
    """Opened in QGIS with no style (3.22, as Debian 12 ships it): each layer is drawn by the
    paletted renderer with the classes' names, and the image it renders has the colours of
    the classes in the shares the layer holds them."""
    folder, _ = change
    drawn = qgis_render([folder / file for _, file in LAYERS], tmp_path)
    for _, file in LAYERS:
        facts = drawn[str(folder / file)]
        assert facts["valid"] and facts["bands"] == 1, facts
        assert facts["renderer"] == "paletted", f"{file}: QGIS drew it as {facts['renderer']}"
        info = gdalinfo_json(folder / file)["bands"][0]
        labels = {c["value"]: c["label"] for c in facts["classes"]}
        named = {v: n for v, n in enumerate(info["categories"]) if n}
        assert {v: labels[v] for v in named} == named, file
        colours = {c["value"]: c["colour"] for c in facts["classes"]}
        with rasterio.open(folder / file) as src:
            values = src.read(1, out_shape=(256, 256), resampling=Resampling.nearest)
        values = values[values != 0]
        expected = {colours[v]: float(np.mean(values == v)) for v in np.unique(values)}
        for colour, share in expected.items():
            rendered = facts["colour_shares"].get(colour, 0.0)
            assert abs(rendered - share) < 0.03, (file, colour, rendered, share)
