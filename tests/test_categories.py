"""Class maps that GDAL (and so QGIS) draw with their names and colours, read back with GDAL."""

from __future__ import annotations

import rasterio
from rio_cogeo.cogeo import cog_validate

from geocluster_dagster.categories import class_colours
from geocluster_dagster.change import DatedImage, common_model
from geocluster_dagster.cluster import ClusterSettings
from geocluster_dagster.products.cluster_change import CHANGE_MAP, write_cluster_change
from geocluster_dagster.products.clusters import (
    CLUSTER_MAP,
    ModelPlan,
    open_clusters,
    write_clusters,
)

from .helpers import STACK_1999, STACK_2002, gdalinfo_json, landsat7_dataset

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


def test_the_change_map_names_its_three_bands(tmp_path):
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
    path = tmp_path / "change" / CHANGE_MAP
    assert cog_validate(str(path), quiet=True)[0]
    info = gdalinfo_json(path)
    assert [b["description"] for b in info["bands"]] == ["from", "to", "change"]
    assert info["bands"][2]["categories"] == [
        "",
        "unchanged",
        "changed",
        "same cover, other cluster",
    ]
    assert info["bands"][1]["categories"][1:] == [model.names_by_id[i] for i in range(1, 6)]
