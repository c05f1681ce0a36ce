"""Band naming across providers, on real STAC documents from PC, Earth Search and USGS."""

from __future__ import annotations

import json

import pystac
import pytest

from geocluster_dagster.bands import (
    LANDSAT_C2_L2,
    SENTINEL2_L2A,
    asset_scaling,
    find_asset_key,
    find_qa_key,
    plan_bands,
    sensor_profile,
)
from geocluster_dagster.errors import BandNotFound, ConfigError

from .conftest import L8_008059, L8_008059_PREFIX, S2_29RKH, STAC_DIR


def _items(path) -> list[pystac.Item]:
    doc = json.loads(path.read_text())
    features = doc["features"] if doc.get("type") == "FeatureCollection" else [doc]
    return [pystac.Item.from_dict(f) for f in features]


PC_LANDSAT = STAC_DIR / "pc_landsat-c2-l2_items_page_LC09_path084.json"
PC_S2_ITEM = STAC_DIR / "pc_sentinel-2-l2a_item_S2B_MSIL2A_20190629T212529_R043_T06VVN.json"
PC_S2_SEARCH = STAC_DIR / "pc_search_sentinel-2-l2a_20190101_33items.json"
USGS_ITEM = STAC_DIR / "usgs_landsat-c2l2-sr_item_LC08_L2SP_028030_20200114.json"
EARTH_SEARCH_S2 = S2_29RKH / "S2A_29RKH_20200219_0_L2A.json"
USGS_OLD_ITEM = L8_008059 / f"{L8_008059_PREFIX}_SR_stac.json"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (PC_LANDSAT, {"red": "red", "nir": "nir08", "swir22": "swir22", "qa": "qa_pixel"}),
        (USGS_ITEM, {"red": "red", "nir": "nir08", "swir16": "swir16", "qa": "qa_pixel"}),
        (
            USGS_OLD_ITEM,
            {"red": "SR_B4.TIF", "nir": "SR_B5.TIF", "coastal": "SR_B1.TIF", "qa": "QA_PIXEL.TIF"},
        ),
        (PC_S2_ITEM, {"red": "B04", "nir": "B08", "nir08": "B8A", "swir16": "B11", "qa": "SCL"}),
        (
            EARTH_SEARCH_S2,
            {"red": "red", "nir": "nir", "nir08": "nir08", "swir22": "swir22", "qa": "scl"},
        ),
    ],
)
def test_common_names_resolve_to_each_providers_asset_keys(path, expected):
    item = _items(path)[0]
    for band, key in expected.items():
        found = find_qa_key(item) if band == "qa" else find_asset_key(item, band)
        assert found == key, (path.name, band)


def test_earth_search_prefers_the_cog_over_the_jp2_twin():
    item = _items(EARTH_SEARCH_S2)[0]
    assert "red-jp2" in item.assets
    assert find_asset_key(item, "red") == "red"


def test_sensor_detection():
    assert sensor_profile(_items(PC_LANDSAT)[0]) is LANDSAT_C2_L2
    assert sensor_profile(_items(USGS_ITEM)[0]) is LANDSAT_C2_L2
    assert sensor_profile(_items(PC_S2_ITEM)[0]) is SENTINEL2_L2A
    assert sensor_profile(_items(EARTH_SEARCH_S2)[0]) is SENTINEL2_L2A


def test_scale_offset_come_from_raster_bands_when_present():
    item = _items(PC_LANDSAT)[0]
    s = asset_scaling(item, "red", "red", LANDSAT_C2_L2)
    assert (s.scale, s.offset, s.nodata) == (2.75e-05, -0.2, 0)
    # Earth Search v0 declares scale 1e-4 and offset 0 (processing baseline 02.14).
    es = _items(EARTH_SEARCH_S2)[0]
    s2 = asset_scaling(es, "red", "red", SENTINEL2_L2A)
    assert (s2.scale, s2.offset) == (0.0001, 0.0)


def test_landsat_fallbacks_when_the_item_has_no_raster_bands():
    item = _items(USGS_ITEM)[0]  # USGS items carry no raster:bands
    assert "raster:bands" not in item.assets["red"].extra_fields
    sr = asset_scaling(item, "red", "red", LANDSAT_C2_L2)
    assert (sr.scale, sr.offset, sr.nodata) == (0.0000275, -0.2, 0)
    old = _items(USGS_OLD_ITEM)[0]
    st = asset_scaling(old, "SR_B4.TIF", "lwir", LANDSAT_C2_L2)
    assert (st.scale, st.offset) == (0.00341802, 149.0)


def test_sentinel2_boa_offset_follows_the_processing_baseline():
    item = _items(PC_S2_ITEM)[0]  # PC: no raster:bands, baseline 02.12
    assert asset_scaling(item, "B04", "red", SENTINEL2_L2A).offset == 0.0
    newer = item.clone()
    newer.properties["s2:processing_baseline"] = "04.00"
    assert asset_scaling(newer, "B04", "red", SENTINEL2_L2A).offset == pytest.approx(-0.1)
    assert asset_scaling(newer, "B04", "red", SENTINEL2_L2A).scale == pytest.approx(0.0001)


def test_every_item_of_the_33_item_search_plans_the_same_assets():
    items = _items(PC_S2_SEARCH)
    assert len(items) == 33
    plan = plan_bands(items, ["blue", "green", "red", "nir"])
    assert plan.assets == {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"}
    assert plan.qa_asset == "SCL"


def test_missing_band_names_item_band_and_fix():
    item = _items(PC_LANDSAT)[0]  # L2SR items (no surface temperature) have no lwir11
    with pytest.raises(BandNotFound) as err:
        find_asset_key(item, "lwir")
    message = str(err.value)
    assert item.id in message and "'lwir'" in message and "bands" in message
    with pytest.raises(BandNotFound, match="Sentinel-2 L2A has no band"):
        plan_bands(_items(PC_S2_ITEM), ["red", "lwir"])


def test_mixed_sensors_are_refused():
    with pytest.raises(ConfigError, match="mix sensors"):
        plan_bands(_items(PC_LANDSAT)[:1] + _items(PC_S2_ITEM), ["red"])
