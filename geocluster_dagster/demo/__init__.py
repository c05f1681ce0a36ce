"""Embedded offline demo: a small static STAC catalog of synthetic Landsat 8/9 C2 L2 scenes.

The demo lets the whole pipeline run without network access. ``build_demo(root)`` writes a
self-contained static STAC catalog (``catalog.json`` -> collection ``landsat-c2-l2`` -> 4 items)
whose Cloud-Optimized GeoTIFFs are encoded exactly like Landsat Collection 2 Level-2 assets on
the Microsoft Planetary Computer (uint16 DN with the C2 scale/offset, nodata 0, USGS QA_PIXEL bit
codes), plus an AOI registry (a GeoJSON FeatureCollection holding the demo AOI).

**The landscape is synthetic; the spectra are real.** Every surface value comes from the 120
labelled Landsat 8 C2 L2 pixels that ship with ``spyndex`` (``spyndex/data/spectral.json``:
SR_B1..SR_B7 reflectance, ST_B10 kelvin, classes Vegetation/Urban/Water; ``demo_spectra``).
There are five land-cover classes (``DEMO_CLASSES``):

- ``water``: one real Water sample per water body (a meandering river, a lake, a pond);
- ``forest``: one real Vegetation sample per parcel (neighbouring stands take similar shades);
- ``cropland``: a 65/35 linear mixture of one real Vegetation and one real Urban sample
  (sparse vegetation on bright soil);
- ``urban``: one real Urban sample per 90 m town block or per road (a town on the river);
- ``wetland``: a 50/50 linear mixture of one real Vegetation and one real Water sample.

Parcels are Voronoi cells of a jittered grid. A small per-pixel brightness factor (within 5 %,
the same for all reflective bands) and a few tenths of a kelvin of temperature texture keep
parcels from being flat. Everything is a deterministic function of position in a local
azimuthal-equidistant frame centred on 84 W, 35 N: every tile, in whatever projection, samples
the same ground (``demo_truth``, ``demo_ground``).

The scene straddles the UTM zone 16/17 boundary (84 W). Tile A is in EPSG:32616 (WRS-2 path 19),
tile B in EPSG:32617 (path 18); they overlap by about 90 columns. Both tiles were "acquired" on
two June 2023 dates (Landsat 8, then Landsat 9 eight days later). Each date has cumulus clouds
(bright, flat spectra, 262-272 K), their shadows (ground darkened, shifted away from the sun)
and dilated-cloud rims (thin haze), arranged in WNW-ESE cloud streets that alternate between the
dates, so every pixel is clear on at least one date. Tile A on the Landsat 9 date has a fill
collar on its west edge. All items are marked ``geocluster:synthetic: true``.

Things a reader of the catalog should know:

- Files are named by the USGS product id, as the real ones are
  (``LC08_L2SP_019036_20230610_20230617_02_T1_SR_B4.TIF``); item ids are the PC's
  (``LC08_L2SP_019036_20230610_02_T1``).
- The two tiles of a date carry timestamps minutes apart (two WRS paths), so odc-stac's default
  ``groupby="time"`` gives four time steps; ``groupby="solar_day"`` gives the two dates.
- odc-stac 0.5 takes nodata, data type and unit from ``raster:bands`` but does not apply
  ``scale``/``offset``; decode DN with the scale/offset from ``raster:bands``.
"""

from geocluster_dagster.demo.catalog import (
    DEMO_AOI_ID,
    DEMO_COLLECTION,
    DEMO_MONTH,
    DEMO_VERSION,
    DemoPaths,
    build_demo,
)
from geocluster_dagster.demo.landscape import (
    CROPLAND,
    DEMO_CLASSES,
    FOREST,
    URBAN,
    WATER,
    WETLAND,
    LandCoverPatch,
    demo_ground,
    demo_spectra,
    demo_truth,
)
from geocluster_dagster.demo.scene import DEMO_QA_CODES, SR_OFFSET, SR_SCALE, ST_OFFSET, ST_SCALE

__all__ = [
    "CROPLAND",
    "DEMO_AOI_ID",
    "DEMO_CLASSES",
    "DEMO_COLLECTION",
    "DEMO_MONTH",
    "DEMO_QA_CODES",
    "DEMO_VERSION",
    "FOREST",
    "SR_OFFSET",
    "SR_SCALE",
    "ST_OFFSET",
    "ST_SCALE",
    "URBAN",
    "WATER",
    "WETLAND",
    "DemoPaths",
    "LandCoverPatch",
    "build_demo",
    "demo_ground",
    "demo_spectra",
    "demo_truth",
]
