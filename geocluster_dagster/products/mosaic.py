"""The mosaic product of a partition: the cloud-free composite, clipped to the AOI, one COG.

The one encoding of the partition's bands: a Cloud-Optimized GeoTIFF in the inputs' own uint16
DN where the bands share one (:mod:`geocluster_dagster.encoding`), compressed as
:class:`~geocluster_dagster.export.CogSettings` say, with the statistics of its bands in a tag.
The geotiff product holds this very file as its bands (a link, not a second encoding: see
:mod:`geocluster_dagster.products.geotiff`), so the composite's pixels are encoded once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import xarray as xr
from shapely.geometry.base import BaseGeometry

from .. import __version__
from ..bands import band_unit, profile_named
from ..composite import (
    CompositeSettings,
    CoverageCounts,
    aoi_mask,
    aoi_pixel_count,
    clip,
    composite,
    written_coverage,
)
from ..encoding import STACK_ATTR as ENCODING_ATTR
from ..encoding import DnEncoding
from ..export import COG_SETTINGS_TAG, CogSettings, RasterStats, write_cog
from ..load import STATE_LAYERS
from ..quality import Judgement, MosaicQuality, judge_clear_fraction
from ..valid_range import RangePolicy
from .described import DENOMINATORS, Detail, Facts, Json, Measure, rounded, share

#: The version of what this product's writer makes: raise it when a release changes its
#: files or numbers, so that Dagster shows the partitions made before as stale (code_version).
VERSION = "3"  # 2: values outside their documented valid range counted (and clamped or masked)
# 3: a COG with overviews and its bands' statistics in a tag (the geotiff links it)


@dataclass(frozen=True)
class MosaicFacts(Facts):
    """What writing a mosaic counted."""

    coverage: CoverageCounts
    stats: RasterStats

    def measures(self) -> list[Measure]:
        coverage = self.coverage
        measures = [
            Measure("aoi_pixels", coverage.aoi_pixels, "px", DENOMINATORS["aoi"]),
            Measure("clear_pixels", coverage.clear, "px", "AOI pixels with a clear observation"),
            share(
                "clear",
                coverage.clear,
                coverage.aoi_pixels,
                "aoi",
                "clear pixels (higher is better)",
            ),
        ]
        if coverage.with_data is not None:
            measures.append(
                share(
                    "data",
                    coverage.with_data,
                    coverage.aoi_pixels,
                    "aoi",
                    "pixels any scene covers",
                )
            )
        return measures

    def details(self) -> dict[str, Detail]:
        return {"band_statistics": Json(rounded(self.stats.as_dict()))}

    def judge(self, quality: MosaicQuality) -> Judgement:
        return judge_clear_fraction(self.coverage.clear_fraction, self.coverage.aoi_pixels, quality)


def write_mosaic(
    stack: xr.Dataset,
    aoi: BaseGeometry,
    path: Path,
    settings: CompositeSettings | None = None,
    *,
    where: str,
    tags: dict[str, str] | None = None,
    cog: CogSettings | None = None,
) -> MosaicFacts:
    """Composite ``stack``'s clear observations, clip them to ``aoi`` and write a tiled GeoTIFF.

    Values outside their band's documented valid range are clamped or masked as
    ``settings.out_of_range`` says, and counted (:mod:`geocluster_dagster.valid_range`).

    The stack is read once, while the composite is written. A partition whose AOI covers no
    pixel, or has no clear pixel, is refused (NoOverlap, NoClearPixels) before its file
    replaces an earlier one; ``where`` names the partition in those messages. The file's tags
    are the stack's provenance, ``tags``, the source items and the method, this package's
    version, the ``cog`` settings it is compressed with (default :class:`CogSettings`) and its
    bands' statistics. Bands the inputs encode alike are stored in that uint16 DN encoding
    (:mod:`geocluster_dagster.encoding`).
    """
    settings = settings or CompositeSettings()
    cog = cog or CogSettings()
    inside = aoi_mask(stack, aoi, all_touched=settings.all_touched)
    aoi_pixels = aoi_pixel_count(inside, where=where)
    image = clip(composite(stack.drop_vars(list(STATE_LAYERS)), settings.method), inside)
    counted: list[CoverageCounts] = []

    def refuse_unclear(stats: RasterStats) -> None:
        clear = stats.count[str(next(iter(image.data_vars)))]
        counted.append(written_coverage(stack, inside, aoi_pixels, clear, where=where))

    provenance = {
        **{
            key: value
            for key, value in stack.attrs.items()
            if isinstance(value, str) and key != ENCODING_ATTR  # GDAL's scale/offset say it
        },
        **(tags or {}),
        "source_items": ",".join(stack.item_ids.values.tolist()),
        "composite": settings.method,
        "package": f"geocluster_dagster {__version__}",
        COG_SETTINGS_TAG: cog.as_tag(),
    }
    # The inputs' own uint16 DN encoding halves what is compressed and decoded.
    stats = write_cog(
        image,
        path,
        cog=True,
        tags=provenance,
        compress=cog.compress,
        compress_level=cog.compress_level,
        statistics=True,
        validate=refuse_unclear,
        task="compositing the mosaic",
        units={str(band): band_unit(str(band)) for band in image.data_vars},
        encoding=DnEncoding.for_bands(stack.attrs, [str(b) for b in image.data_vars]),
        valid=range_policy(str(stack.attrs.get("sensor", "")), image, settings),
    )
    return MosaicFacts(coverage=counted[0], stats=stats)


def range_policy(sensor: str, image: xr.Dataset, settings: CompositeSettings) -> RangePolicy | None:
    """The valid range of each of ``image``'s bands for the ``sensor`` a stack names (None for a
    sensor this package has no documented ranges for)."""
    profile = profile_named(sensor)
    if profile is None or not profile.valid_ranges:
        return None
    ranges = tuple(profile.valid_ranges.get(str(band)) for band in image.data_vars)
    return RangePolicy(ranges, settings.out_of_range)
