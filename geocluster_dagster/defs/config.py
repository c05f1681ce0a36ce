"""Run configuration of each asset, shown (with these descriptions) in the Dagster launchpad.

Each class turns into the plain settings object of the module that does the work.
"""

from typing import Literal

import dagster as dg
from pydantic import Field

from ..cluster import ClusterSettings
from ..composite import CompositeSettings
from ..load import LoadSettings
from ..mask import DEFAULT_MASK_FLAGS


class SearchConfig(dg.Config):
    """STAC search for the partition's AOI and month."""

    collection: str = Field(
        default="landsat-c2-l2",
        description="STAC collection: 'landsat-c2-l2' or 'sentinel-2-l2a' (provider ids work too).",
    )
    max_cloud_cover: float | None = Field(
        default=60.0,
        description="Keep scenes with eo:cloud_cover at most this (percent); None = no limit.",
    )
    max_items: int | None = Field(
        default=None,
        description="Keep at most this many items (the first ones in time order); None = all.",
    )


class BandStackConfig(dg.Config):
    """Which bands to read, on which grid, and what to mask."""

    bands: list[str] = Field(
        default_factory=list,
        description="Common band names (blue, green, red, nir, swir16, swir22, lwir, coastal, ...); empty = the sensor's defaults.",
    )
    resolution: float | None = Field(
        default=None,
        description="Output pixel size in CRS units; None = native (30 m Landsat, 10 m Sentinel-2).",
    )
    crs: str | None = Field(
        default=None,
        description="Output CRS, e.g. 'EPSG:32616'; None = the items' most common CRS.",
    )
    chunk_size: int = Field(default=1024, description="Dask chunk edge in pixels.")
    resampling: str = Field(
        default="nearest",
        description="Resampling of spectral bands when reprojecting (nearest, bilinear, cubic, average); QA is always nearest.",
    )
    mask_clouds: bool = Field(
        default=True, description="Mask with the QA band (Landsat QA_PIXEL, Sentinel-2 SCL)."
    )
    mask_flags: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MASK_FLAGS),
        description="QA conditions to mask: fill, dilated_cloud, cirrus, cloud, cloud_shadow, snow, saturated, dark_area.",
    )
    groupby: str = Field(
        default="solar_day",
        description="'solar_day' fuses same-day tiles into one observation; 'id' keeps every item apart.",
    )

    def settings(self) -> LoadSettings:
        return LoadSettings(
            bands=tuple(self.bands) or None,
            resolution=self.resolution,
            crs=self.crs,
            chunk_size=self.chunk_size,
            resampling=self.resampling,
            mask_clouds=self.mask_clouds,
            mask_flags=tuple(self.mask_flags),
            groupby=self.groupby,
        )


class MosaicConfig(dg.Config):
    """How observations are combined and clipped."""

    method: str = Field(
        default="median",
        description="'median' of clear observations, or 'first_clear' (least cloudy scene first).",
    )
    all_touched: bool = Field(
        default=False,
        description="Keep every pixel the AOI polygon touches (default: pixel centre inside).",
    )

    def settings(self) -> CompositeSettings:
        return CompositeSettings(method=self.method, all_touched=self.all_touched)  # type: ignore[arg-type]


class GeoTiffConfig(dg.Config):
    """Spectral indices added to the exported Cloud-Optimized GeoTIFF."""

    indices: list[str] | None = Field(
        default=None,
        description="Index names: 'ndvi', 'lst' or any Awesome Spectral Indices short name (NDWI, EVI, SAVI, NDBI, ...); None = NDVI, plus LST when a thermal band is loaded.",
    )
    compress: Literal["deflate", "zstd", "lzw"] = Field(
        default="deflate",
        description="COG compression: deflate (readable everywhere), zstd (2-3x faster to write, GDAL >= 2.3) or lzw.",
    )
    compress_level: int | None = Field(
        default=1,
        description="Compression level (deflate 1-12, zstd 1-22; ignored by lzw); None = GDAL's default (deflate 6, zstd 9). Level 1 writes a scene's COG about 1.8x faster than deflate 6 for a file about 3% larger.",
    )


class ClusterConfig(dg.Config):
    """Unsupervised clustering of the pixels' spectral signatures."""

    n_clusters: int = Field(default=6, description="Number of clusters k.")
    algorithm: str = Field(
        default="minibatch_kmeans",
        description="minibatch_kmeans, kmeans, bisecting_kmeans or gaussian_mixture.",
    )
    pca_components: int | None = Field(
        default=None, description="PCA components after standardising; None = no PCA."
    )
    sample_size: int = Field(
        default=200_000,
        description="Pixels sampled (seeded) to fit the model; every pixel is then predicted.",
    )
    seed: int = Field(default=0, description="Random seed: same seed and inputs give the same map.")
    features: list[str] = Field(
        default_factory=list,
        description="GeoTIFF bands used as features; empty = the reflectance bands (no thermal, no indices).",
    )

    def settings(self) -> ClusterSettings:
        return ClusterSettings(
            n_clusters=self.n_clusters,
            algorithm=self.algorithm,  # type: ignore[arg-type]
            pca_components=self.pca_components,
            sample_size=self.sample_size,
            seed=self.seed,
        )


class DiagnosticsConfig(dg.Config):
    """Plots and scores of the clustering."""

    elbow_k_min: int = Field(default=2, description="Smallest k of the elbow curve.")
    elbow_k_max: int = Field(default=12, description="Largest k of the elbow curve.")
    elbow_sample_size: int = Field(
        default=20_000,
        description="Pixels (seeded subset of the fit sample) the elbow curve refits k-means on.",
    )
    silhouette_sample_size: int = Field(
        default=10_000,
        description="Pixels (seeded sample) for the silhouette: it is quadratic in pixels.",
    )
    preview_size: int = Field(
        default=1024, description="Longest side in pixels of map previews (read from overviews)."
    )
    density_bins: int = Field(
        default=256, description="Bins per axis of the red-vs-NIR density scatter."
    )
