"""The output STAC catalog: valid offline, complete, and odc-stac reads the products back."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import odc.stac
import pystac
import pytest
import rasterio
from pystac import STACObjectType
from pystac.validation import JsonSchemaSTACValidator

from geocluster_dagster import __version__
from geocluster_dagster.demo import DEMO_MONTH
from geocluster_dagster.products.catalog import EXTENSIONS

from .helpers import item_file, run
from .servers.ports import installed


@pytest.fixture(scope="module")
def outputs(demo, dask_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = run(
        out, registry=demo.aoi_registry, catalog=str(demo.catalog), dask_cluster=dask_cluster
    )
    assert result.success
    return out


def test_every_document_is_valid_stac(outputs):
    root = outputs / "stac"
    validator = JsonSchemaSTACValidator()  # core schemas from pystac's own copies: no network
    for name, kind in [
        ("catalog.json", STACObjectType.CATALOG),
        ("demo/collection.json", STACObjectType.COLLECTION),
        (f"demo/{DEMO_MONTH[:4]}/catalog.json", STACObjectType.CATALOG),
        (f"demo/{DEMO_MONTH[:4]}/{DEMO_MONTH}.json", STACObjectType.ITEM),
    ]:
        document = json.loads((root / name).read_text())
        validator.validate_core(document, kind, "1.1.0", href=str(root / name))
    items = list(pystac.Catalog.from_file(str(root / "catalog.json")).get_items(recursive=True))
    assert [i.id for i in items] == [f"demo_{DEMO_MONTH}"]


#: Byte-for-byte copies of the published extension schemas (tests/schemas/README.md).
SCHEMAS = Path(__file__).parent / "schemas"


def extension_validators():
    """A Draft 7 validator per published extension schema URL, from the local copies only."""
    from jsonschema import Draft7Validator
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource

    schemas = {}
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        schemas[schema["$id"].rstrip("#")] = schema

    def offline(uri):
        raise NoSuchResource(ref=uri)  # the test runs offline: no schema is fetched

    registry = Registry(retrieve=offline).with_resources(
        (uri, Resource.from_contents(schema)) for uri, schema in schemas.items()
    )
    return {uri: Draft7Validator(schema, registry=registry) for uri, schema in schemas.items()}


def test_every_document_is_valid_against_every_extension_it_declares(outputs):
    validators = extension_validators()
    documents = sorted((outputs / "stac").rglob("*.json"))
    declared = set()
    for path in documents:
        document = json.loads(path.read_text())
        for uri in document.get("stac_extensions", []):
            declared.add(uri)
            assert uri in validators, (
                f"{path.name} declares {uri}: put its published schema in tests/schemas"
            )
            errors = flattened(validators[uri], document)
            assert not errors, f"{path.relative_to(outputs)} against {uri}:\n{errors[:2000]}"
    # every extension the products declare was checked on at least one document
    assert set(EXTENSIONS.values()) <= declared, set(EXTENSIONS.values()) - declared


def test_the_extension_schemas_catch_what_the_published_versions_forbid(outputs):
    """The local copies are the published ones: a class `name` that is not a slug
    (classification v2.0.0) and `raster:bands` without a list are refused."""
    validators = extension_validators()
    item_path = outputs / "stac" / "demo" / DEMO_MONTH[:4] / f"{DEMO_MONTH}.json"
    item = json.loads(item_path.read_text())
    classification = EXTENSIONS["classification"]
    assert not list(validators[classification].iter_errors(item))
    asset = next(a for a in item["assets"].values() if "classification:classes" in json.dumps(a))
    classes = asset.get("classification:classes") or asset["bands"][0]["classification:classes"]
    classes[0]["name"] = "dense vegetation"
    assert "'dense vegetation' does not match" in flattened(validators[classification], item)
    raster = EXTENSIONS["raster"]
    broken = json.loads(item_path.read_text())
    broken["assets"][next(iter(broken["assets"]))]["raster:bands"] = {"nodata": 0}
    assert list(validators[raster].iter_errors(broken))


def flattened(validator, document):
    """Every message of a validation, with those inside oneOf/anyOf branches."""
    pending, messages = list(validator.iter_errors(document)), []
    while pending:
        error = pending.pop()
        messages.append(error.message)
        pending.extend(error.context or ())
    return "\n".join(messages)


def test_the_item_describes_every_product_and_where_it_came_from(outputs, demo):
    item = pystac.Item.from_file(str(item_file(outputs, "demo", DEMO_MONTH)))
    props = item.properties
    geotiff = outputs / "geotiff" / "demo" / DEMO_MONTH
    with rasterio.open(geotiff / "bands.tif") as src:
        # each raster asset carries its own grid; figures and tables carry none
        for key in ("bands", "indices", "cluster_map", "confidence"):
            grid = item.assets[key].extra_fields
            assert grid["proj:code"] == f"EPSG:{src.crs.to_epsg()}", key
            assert grid["proj:shape"] == [src.height, src.width], key
            assert grid["proj:transform"] == list(src.transform)[:6], key
        assert not [k for k in props if k.startswith("proj:")]
        assert not [k for k, a in item.assets.items() if a.media_type == "image/png" and
                    "proj:shape" in a.extra_fields]  # fmt: skip
        names = {"bands": list(src.descriptions)}
        scaling = dict(
            zip(src.descriptions, zip(src.scales, src.offsets, strict=True), strict=True)
        )
    with rasterio.open(geotiff / "indices.tif") as src:
        names["indices"] = list(src.descriptions)
    assert props["start_datetime"].startswith(DEMO_MONTH) and item.datetime is None
    # The window as people and STAC clients read it: its last second, not July's first.
    assert props["end_datetime"] == "2023-06-30T23:59:59Z", props["end_datetime"]
    assert props["processing:software"]["geocluster_dagster"] == __version__
    assert "fill,dilated_cloud,cirrus,cloud,cloud_shadow" in props["processing:lineage"]
    bands = {key: item.assets[key].extra_fields["bands"] for key in ("bands", "indices")}
    assert {key: [b["name"] for b in found] for key, found in bands.items()} == names
    units = {b["name"]: b.get("unit") for b in bands["bands"] + bands["indices"]}
    assert units["red"] == "reflectance" and units["ndvi"] == "index" and units["lwir"] == "K"
    assert all(b["nodata"] == "nan" and "statistics" in b for b in bands["indices"])
    # DN bands: nodata 0, the file's scale/offset, statistics in physical units
    raster = item.assets["bands"].extra_fields["raster:bands"]
    for band, described in zip(bands["bands"], raster, strict=True):
        scale, offset = scaling[band["name"]]
        assert band["nodata"] == 0 and band["data_type"] == "uint16"
        assert (band["raster:scale"], band["raster:offset"]) == (scale, offset)
        assert (described["scale"], described["offset"]) == (scale, offset)
    red = next(b for b in bands["bands"] if b["name"] == "red")["statistics"]
    assert 0 < red["minimum"] < red["mean"] < red["maximum"] < 1  # reflectance, not DN
    classes = item.assets["cluster_map"].extra_fields["classification:classes"]
    summary = json.loads((outputs / "clusters" / "demo" / DEMO_MONTH / "summary.json").read_text())
    assert [(c["value"], c["title"]) for c in classes] == [
        (c["id"], c["name"]) for c in summary["classes"]
    ]
    # classification v2.0.0: `name` is machine-readable (its schema's pattern), `title` the label
    assert all(re.fullmatch(r"[0-9A-Za-z\-_]+", c["name"]) for c in classes), classes
    assert len({c["name"] for c in classes}) == len(classes)
    assert "https://stac-extensions.github.io/eo/v1.1.0/schema.json" in item.stac_extensions
    assert all(len(c["color_hint"]) == 6 for c in classes)
    for key, asset in item.assets.items():
        path = (item_file(outputs, "demo", DEMO_MONTH).parent / asset.href).resolve()
        digest = "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert asset.extra_fields["file:checksum"] == digest, key
        assert asset.extra_fields["file:size"] == path.stat().st_size, key
    sources = [link for link in item.links if link.rel == "derived_from"]
    scenes = json.loads((outputs / "stac_items" / "demo" / f"{DEMO_MONTH}.json").read_text())
    assert len(sources) == len(scenes["features"]) == 4
    assert [link for link in item.links if link.rel == "via"][0].href == str(demo.catalog)
    # Describing the products changed none of them (GDAL would leave statistics in a sidecar).
    assert not list((outputs / "geotiff").rglob("*.aux.xml"))


def test_odc_stac_loads_the_geotiff_back_unchanged(outputs):
    item = pystac.Item.from_file(str(item_file(outputs, "demo", DEMO_MONTH)))
    loaded = odc.stac.load([item], bands=["red", "nir", "ndvi"], chunks={}).isel(time=0)
    folder = outputs / "geotiff" / "demo" / DEMO_MONTH
    for band, name in (("red", "bands.tif"), ("nir", "bands.tif"), ("ndvi", "indices.tif")):
        with rasterio.open(folder / name) as src:
            stored = src.read(list(src.descriptions).index(band) + 1)
        np.testing.assert_array_equal(loaded[band].values, stored)


def test_odc_stac_loads_every_raster_of_the_item_without_a_band_list(outputs):
    """The natural call: every raster product, each in its own type, and no figure taken for a
    band (the figures are PNGs without a grid)."""
    item = pystac.Item.from_file(str(item_file(outputs, "demo", DEMO_MONTH)))
    loaded = odc.stac.load([item], chunks={}).isel(time=0)
    assert {"red", "lwir", "ndvi", "lst", "cluster_map", "confidence"} <= set(loaded.data_vars)
    assert not [name for name in loaded.data_vars if str(name).startswith("plot_")]
    assert loaded["cluster_map"].dtype == np.uint8 and loaded["confidence"].dtype == np.uint8
    with rasterio.open(outputs / "clusters" / "demo" / DEMO_MONTH / "cluster_map.tif") as src:
        np.testing.assert_array_equal(loaded["cluster_map"].values, src.read(1))


def test_the_report_holds_every_figure_and_check_and_renders_in_a_browser(outputs, tmp_path):

    from playwright.sync_api import sync_playwright

    report = outputs / "report" / "demo" / f"{DEMO_MONTH}.html"
    text = report.read_text()
    diagnostics = outputs / "diagnostics" / "demo" / DEMO_MONTH
    assert text.count("data:image/png;base64,") == len(list(diagnostics.glob("*.png")))
    for check in ("has_scenes", "clear_fraction", "valid_cog", "names_assigned", "silhouette"):
        assert f"<td>{check}</td>" in text
    item = pystac.Item.from_file(str(item_file(outputs, "demo", DEMO_MONTH)))
    assert item.assets["report"].href.endswith(f"report/demo/{DEMO_MONTH}.html")
    browser_path = installed("chromium", "chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(report.as_uri())
        # Every figure decodes and is shown at its own width (legends legible), not shrunk.
        widths = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => [i.naturalWidth, i.width])"
        )
        links = page.eval_on_selector_all("a", "links => links.map(a => a.getAttribute('href'))")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert len(widths) >= 8 and all(
        natural >= 800 and shown >= 0.9 * min(natural, 1100) for natural, shown in widths
    )
    for href in links:
        assert (report.parent / href).resolve().exists(), href
    assert (tmp_path / "report.png").stat().st_size > 100_000


def test_the_report_says_where_when_and_with_what_in_units(outputs, demo):
    """What a colleague reading the report alone needs: the place (name, centre, area), the
    window and the acquisition dates, when and with which software and settings it was made,
    and the unit of every number in the signature tables."""
    from datetime import datetime, timezone

    import shapely

    from geocluster_dagster.aoi import load_registry
    from geocluster_dagster.products.stac_items import open_stac_items

    text = (outputs / "report" / "demo" / f"{DEMO_MONTH}.html").read_text()
    about = text[text.index("About this map") : text.index("<h2>Checks")]
    aoi = load_registry(demo.aoi_registry)["demo"]
    assert aoi.name in about
    centre = aoi.geometry.centroid
    assert f"{centre.y:.4f}° N, {abs(centre.x):.4f}° W" in about
    # the area, against the AOI projected to its UTM zone (not the report's own geodesic sum)
    from pyproj import Transformer

    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32616", always_xy=True).transform
    projected = shapely.transform(aoi.geometry, lambda xy: np.column_stack(to_utm(*xy.T)))
    utm_km2 = projected.area / 1e6
    reported = float(re.search(r"([\d,.]+) km²", about).group(1).replace(",", ""))
    assert abs(reported - utm_km2) / utm_km2 < 0.005
    days = sorted({i.datetime.strftime("%Y-%m-%d") for i in open_stac_items(
        outputs / "stac_items" / "demo" / f"{DEMO_MONTH}.json")})  # fmt: skip
    assert f"{', '.join(days)} (" in about
    assert f"{DEMO_MONTH} to 2023-06-30 (inclusive)" in about
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert f"<dd>{today} " in about
    assert f"geocluster_dagster {__version__}" in about
    assert f"rasterio {rasterio.__version__}" in about
    assert "<dt>Setting: composite</dt><dd>median</dd>" in about
    assert "<dt>Setting: model</dt><dd>how: fit</dd>" in about
    for header in ("red mean (reflectance 0–1)", "lst mean (°C)", "lwir mean (K)", "area ha (ha)"):
        assert f"<th>{header}</th>" in text, header


def test_the_report_sent_alone_keeps_its_figures_and_links_to_the_published_root(outputs, tmp_path):
    """With the output root published (public_url), the report's links are absolute there,
    so the one file mailed on its own still reaches every product; its figures are inside it."""
    from geocluster_dagster.products.report import ReportInputs, write_report

    folder = {p: outputs / p / "demo" / DEMO_MONTH for p in ("geotiff", "clusters", "diagnostics")}
    inputs = ReportInputs(
        title="mailed",
        items=outputs / "stac_items" / "demo" / f"{DEMO_MONTH}.json",
        mosaic=outputs / "mosaic" / "demo" / f"{DEMO_MONTH}.tif",
        geotiff=folder["geotiff"],
        clusters=folder["clusters"],
        diagnostics=folder["diagnostics"],
        output_root=outputs,
        public_url="https://data.example.org/geocluster/",
    )
    mailed = tmp_path / "inbox" / "report.html"
    mailed.parent.mkdir()
    write_report(inputs, mailed)
    text = mailed.read_text()
    hrefs = re.findall(r'href="([^"]+)"', text)
    assert len(hrefs) >= 5
    for href in hrefs:
        assert href.startswith("https://data.example.org/geocluster/"), href
        assert (outputs / href.removeprefix("https://data.example.org/geocluster/")).exists()
    assert re.findall(r'<img[^>]+src="([^"]+)"', text)
    assert all(
        src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]+)"', text)
    )
    assert str(outputs) not in text and str(tmp_path) not in text


def _bare_item(aoi_id: str, date: str) -> dict:
    """The smallest Item a partition could publish: a footprint, a window, no assets."""
    start = f"{date}T00:00:00Z"
    return pystac.Item(
        id=f"{aoi_id}_{date}",
        geometry={"type": "Point", "coordinates": [10.0, 0.0]},
        bbox=[10.0, 0.0, 10.0, 0.0],
        datetime=None,
        start_datetime=pystac.utils.str_to_datetime(start),
        end_datetime=pystac.utils.str_to_datetime(start),
        properties={},
    ).to_dict(include_self_link=False)


def test_adding_an_item_costs_the_same_at_the_last_partition_as_at_the_first(tmp_path):
    """Ten years of months of one AOI, among other AOIs: the bytes the catalog rewrites to add
    a partition depend on the date window's year, not on how many Items the catalog holds."""
    from geocluster_dagster.products.catalog import publish_item, withdraw_item

    months = [f"{year}-{month:02d}-01" for year in range(2014, 2024) for month in range(1, 13)]
    others = [f"aoi_{n}" for n in range(20)]
    cost = []
    for index, date in enumerate(months):
        cost.append(publish_item(_bare_item("lake", date), tmp_path, "lake", date).bytes_written)
        if index < len(others):  # the other AOIs join while this one's Items pile up
            publish_item(_bare_item(others[index], date), tmp_path, others[index], date)
    # The tenth year's additions cost what the first year's did, give or take the collection's
    # one entry per year: a catalog listing every Item in one document would cost ~10x more.
    first, last = max(cost[:12]), max(cost[-12:])
    assert last < 1.5 * first, (first, last)
    catalog = pystac.Catalog.from_file(str(tmp_path / "stac" / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    assert len(items) == len(months) + len(others)
    validator = JsonSchemaSTACValidator()
    for obj in catalog.walk():
        for child in obj[1]:
            validator.validate_core(
                child.to_dict(),
                STACObjectType.COLLECTION
                if isinstance(child, pystac.Collection)
                else STACObjectType.CATALOG,
                "1.1.0",
            )
    lake = pystac.Collection.from_file(str(tmp_path / "stac" / "lake" / "collection.json"))
    assert lake.extent.temporal.intervals[0][0].year == 2014
    assert lake.extent.temporal.intervals[0][1].year == 2023
    # Withdrawing the last Item of a year takes the year out of the collection.
    assert withdraw_item(tmp_path, "aoi_0", months[0])
    aoi_0 = json.loads((tmp_path / "stac" / "aoi_0" / "collection.json").read_text())
    assert not [link for link in aoi_0["links"] if link["rel"] == "child"]
    assert not (tmp_path / "stac" / "aoi_0" / "2014").exists() or not list(
        (tmp_path / "stac" / "aoi_0" / "2014").glob("*.json")
    )


def test_an_item_of_the_one_collection_layout_moves_when_published_again(tmp_path):
    """Earlier versions kept every Item in stac/outputs/: publishing the partition again moves
    its Item, and the root stops linking the old collection."""
    from geocluster_dagster.products.catalog import publish_item

    legacy = tmp_path / "stac" / "outputs" / "demo" / "2023-06-01.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text("{}")
    root = tmp_path / "stac" / "catalog.json"
    root.write_text(json.dumps({"links": [{"rel": "child", "href": "./outputs/collection.json"}]}))
    published = publish_item(_bare_item("demo", "2023-06-01"), tmp_path, "demo", "2023-06-01")
    assert not legacy.exists() and published.path.exists()
    children = [
        link["href"] for link in json.loads(root.read_text())["links"] if link["rel"] == "child"
    ]
    assert children == ["./demo/collection.json"]


def test_the_change_layers_are_assets_odc_stac_loads_and_the_schemas_accept(outputs, tmp_path):
    """The change product's layers (from, to, change) are one asset each, named, typed and
    classified in the Item, so that odc-stac loads each as the uint8 it is, with no band
    list; the Item stays valid against every extension it declares."""
    from datetime import datetime, timezone

    import shapely

    from geocluster_dagster.change import DatedImage, common_model
    from geocluster_dagster.products.catalog import PartitionProducts, build_item
    from geocluster_dagster.products.cluster_change import read_layers, write_cluster_change
    from geocluster_dagster.products.clusters import open_clusters
    from geocluster_dagster.products.geotiff import open_geotiff

    geotiff = outputs / "geotiff" / "demo" / DEMO_MONTH
    clusters = outputs / "clusters" / "demo" / DEMO_MONTH
    image, model = open_geotiff(geotiff), open_clusters(clusters).model
    before, after = DatedImage("2023-05-01", image, model), DatedImage(DEMO_MONTH, image, model)
    write_cluster_change(before, after, tmp_path / "change", common=common_model(before, after))
    products = PartitionProducts(
        aoi_id="demo",
        date_key=DEMO_MONTH,
        start=datetime(2023, 6, 1, tzinfo=timezone.utc),
        end=datetime(2023, 7, 1, tzinfo=timezone.utc),
        aoi=shapely.box(*image.rio.transform_bounds("EPSG:4326")),
        geotiff=geotiff,
        clusters=clusters,
        change=tmp_path / "change",
    )
    path = tmp_path / "item.json"
    build_item(products, path).save_object(include_self_link=False, dest_href=str(path))
    document = json.loads(path.read_text())
    validators = extension_validators()
    for uri in document["stac_extensions"]:
        assert not flattened(validators[uri], document), uri
    item = pystac.Item.from_file(str(path))
    layers = {"change_map": "change", "change_from": "from", "change_to": "to"}
    for key, band in layers.items():
        asset = item.assets[key].extra_fields
        assert [b["name"] for b in asset["bands"]] == [band]
        assert asset["classification:classes"][0]["value"] in (0, 1)
    states = [c["name"] for c in item.assets["change_map"].extra_fields["classification:classes"]]
    assert states == ["unknown", "unchanged", "changed", "same-cover-other-cluster"]
    loaded = odc.stac.load([item], chunks={}).isel(time=0)  # no band list
    stored = read_layers(tmp_path / "change")
    for index, key in enumerate(("change_from", "change_to", "change_map")):
        assert loaded[key].dtype == np.uint8
        np.testing.assert_array_equal(loaded[key].values, stored[index])


#: What names the inputs as they were found (STAC items, the lazy stack's recipe): a reference
#: to where the scenes are, not part of the products sent on.
INPUT_RECORDS = ("stac_items", "band_stack")


def test_the_output_root_moved_elsewhere_still_holds_every_product_and_names_no_old_path(
    outputs, tmp_path
):
    moved = tmp_path / "elsewhere"
    shutil.copytree(outputs, moved, symlinks=True)  # the folder products' links, as they are
    old = str(outputs)
    files = _product_files(moved)
    documents = [path for path in files if path.suffix in (".json", ".html", ".csv", ".xml")]
    assert len(documents) > 15  # STAC, summaries, signatures, scores, checks, the report
    for path in documents:
        text = path.read_text()
        if path.suffix == ".json" and '"stac_version"' in text:
            # links to the input scenes (derived_from, via) name where those are; nothing else
            document = json.loads(text)
            document["links"] = [
                link
                for link in document.get("links", [])
                if link["rel"] not in ("derived_from", "via")
            ]
            text = json.dumps(document)
        assert old not in text, path.relative_to(moved)
    for tif in (path for path in files if path.suffix == ".tif"):
        with rasterio.open(tif) as src:
            assert old not in json.dumps(src.tags()), tif.relative_to(moved)
    # Read from the new place: every asset of every Item resolves there, and loads.
    catalog = pystac.Catalog.from_file(str(moved / "stac" / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    for item in items:
        for key, asset in item.assets.items():
            href = asset.get_absolute_href()
            assert href.startswith(str(moved)) and Path(href).exists(), (key, href)
    loaded = odc.stac.load(items, bands=["red", "cluster_map"], chunks={}).isel(time=0)
    with rasterio.open(moved / "clusters" / "demo" / DEMO_MONTH / "cluster_map.tif") as src:
        np.testing.assert_array_equal(loaded["cluster_map"].values, src.read(1))
    summary = json.loads((moved / "clusters" / "demo" / DEMO_MONTH / "summary.json").read_text())
    # the geotiff the clusters were made of, named relative to the clusters' folder
    source = moved / "clusters" / "demo" / DEMO_MONTH / summary["source"]
    assert source.resolve() == (moved / "geotiff" / "demo" / DEMO_MONTH / "bands.tif").resolve()


def _product_files(root: Path) -> list[Path]:
    """Every file of the products under ``root``, a folder product's through its link (its
    hidden version folder is not visited twice), the input records and Dagster's own state left
    out."""
    found = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative = Path(folder).relative_to(root).parts
        if relative and relative[0] in INPUT_RECORDS:
            continue
        found += [Path(folder) / name for name in names if not name.startswith(".")]
    return found
