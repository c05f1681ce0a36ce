"""Class maps that render themselves: colours, category names and attribute tables GIS reads.

A uint8 class map without them opens grey with values 0..k in QGIS. GDAL keeps a band's colour
table inside the GeoTIFF (one per file: a single-band map gets it there), and its category
names and raster attribute table (RAT) in the PAM sidecar ``<file>.aux.xml``, which GDAL, and so
QGIS (Paletted/Unique values, and its RAT support since 3.30), read with the file. The sidecar
also carries the colour tables of multi-band maps (the change map), which TIFF cannot hold.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

RGBA = tuple[int, int, int, int]
TRANSPARENT: RGBA = (0, 0, 0, 0)

# GDAL's RAT field types and usages (gdal.h: GDALRATFieldType, GDALRATFieldUsage).
_INTEGER, _REAL, _STRING = 0, 1, 2
_GENERIC, _PIXEL_COUNT, _NAME, _MIN_MAX = 0, 1, 2, 5
_RED, _GREEN, _BLUE, _ALPHA = 6, 7, 8, 9


def class_colours(ids: Sequence[int]) -> dict[int, RGBA]:
    """The plots' colour of each cluster id (the same id, the same colour, in every map), and
    transparent nodata (0)."""
    from .plot import cluster_colours  # matplotlib's palettes, only when a map is written

    largest = max(ids, default=0)
    palette = cluster_colours(largest)
    colours = {0: TRANSPARENT}
    for i in ids:
        r, g, b = (round(255 * c) for c in palette[int(i) - 1])
        colours[int(i)] = (r, g, b, 255)
    return colours


@dataclass(frozen=True)
class BandCategories:
    """What the values of one band of a class map mean."""

    names: Mapping[int, str]
    """Value -> category name (0, nodata, is left unnamed unless given)."""
    colours: Mapping[int, RGBA]
    counts: Mapping[int, int] | None = None
    """Value -> pixel count, for the attribute table."""
    pixel_area_m2: float | None = None
    description: str = ""


def write_pam(tif: Path, bands: Sequence[BandCategories]) -> Path:
    """Write ``tif``'s sidecar ``<tif>.aux.xml`` with each band's colour table, category names
    and attribute table (value, name, count, area_ha, red, green, blue, alpha)."""
    root = ET.Element("PAMDataset")
    for index, band in enumerate(bands, start=1):
        element = ET.SubElement(root, "PAMRasterBand", band=str(index))
        if band.description:
            ET.SubElement(element, "Description").text = band.description
        ET.SubElement(element, "ColorInterp").text = "Palette"
        largest = max([*band.names, *band.colours, 0])
        categories = ET.SubElement(element, "CategoryNames")
        for value in range(largest + 1):  # GDAL indexes category names by pixel value
            ET.SubElement(categories, "Category").text = band.names.get(value, "")
        table = ET.SubElement(element, "ColorTable")
        for value in range(largest + 1):
            r, g, b, a = band.colours.get(value, TRANSPARENT)
            ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
        _attribute_table(element, band)
    ET.indent(root)
    sidecar = tif.with_name(tif.name + ".aux.xml")
    ET.ElementTree(root).write(sidecar, encoding="UTF-8", xml_declaration=False)
    return sidecar


def _attribute_table(parent: ET.Element, band: BandCategories) -> None:
    fields = [
        ("value", _INTEGER, _MIN_MAX),
        ("name", _STRING, _NAME),
        ("count", _INTEGER, _PIXEL_COUNT),
        ("area_ha", _REAL, _GENERIC),
        ("red", _INTEGER, _RED),
        ("green", _INTEGER, _GREEN),
        ("blue", _INTEGER, _BLUE),
        ("alpha", _INTEGER, _ALPHA),
    ]
    table = ET.SubElement(parent, "GDALRasterAttributeTable", tableType="thematic")
    for index, (name, kind, usage) in enumerate(fields):
        definition = ET.SubElement(table, "FieldDefn", index=str(index))
        ET.SubElement(definition, "Name").text = name
        ET.SubElement(definition, "Type").text = str(kind)
        ET.SubElement(definition, "Usage").text = str(usage)
    hectares = (band.pixel_area_m2 / 10_000.0) if band.pixel_area_m2 else math.nan
    for row, value in enumerate(sorted(v for v in band.names if v != 0)):
        count = (band.counts or {}).get(value, 0)
        colour = band.colours.get(value, TRANSPARENT)
        cells = [value, band.names[value], count, round(count * hectares, 4), *colour]
        element = ET.SubElement(table, "Row", index=str(row))
        for cell in cells:
            ET.SubElement(element, "F").text = "" if cell != cell else str(cell)  # NaN: empty
