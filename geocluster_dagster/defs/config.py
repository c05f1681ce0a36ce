"""Run configuration of each asset, as the Dagster launchpad shows it.

Each class is the launchpad's face of the plain settings dataclass(es) of the module that does
the work: a field takes its default and description from that dataclass (:func:`setting`),
choice fields are the same ``Literal`` types (so the launchpad offers the choices and Dagster
refuses a typo before the run starts), and :func:`to_settings` turns the config back into the
dataclass. ``tests/test_config.py`` fails when a class and its dataclass disagree.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any, TypeVar

import dagster as dg
from pydantic import Field

from ..change import ChangeSettings
from ..cluster import Algorithm, ClusterSettings
from ..composite import CompositeMethod, CompositeSettings
from ..errors import ConfigError
from ..export import CogSettings, Compression
from ..indices import IndexSettings
from ..load import GroupBy, LoadSettings, Resampling
from ..naming import NamingSettings
from ..products.accuracy import AccuracySettings
from ..products.diagnostics import DiagnosticsSettings
from ..quality import ClusterQuality, MosaicQuality, SeparationQuality
from ..reference import ModelSettings, PoolSettings
from ..search import SearchSettings
from ..sieve import SieveSettings
from ..valid_range import OutOfRange

S = TypeVar("S")


class MaskFlagChoice(enum.Enum):
    """The names ``mask.MaskFlag`` allows: Dagster config takes a list of an Enum, not of a
    Literal (tests/test_config.py checks the two agree)."""

    fill = "fill"
    dilated_cloud = "dilated_cloud"
    cirrus = "cirrus"
    cloud = "cloud"
    cloud_shadow = "cloud_shadow"
    snow = "snow"
    saturated = "saturated"
    dark_area = "dark_area"


#: The launchpad's value of each setting whose plain default is None ("not set": the native
#: CRS, no PCA, the previous date, ...). Dagster leaves a null default out of the config it
#: scaffolds, so the field would not appear at all; with one of these values it does, and
#: :func:`to_settings` turns the value back into None. A null typed in still works.
SHOWN_FOR_NONE: dict[str, tuple[object, str]] = {
    # name: (the launchpad's value, what it stands for: added to the field's description)
    "max_items": (0, "0 = no limit"),
    "resolution": (0.0, "0 = the bands' native resolution"),
    "crs": ("native", "native = the scenes' own CRS"),
    "indices": (["ndvi", "lst"], "[ndvi, lst] = NDVI, plus LST when a thermal band is loaded"),
    "pca_components": (0, "0 = no PCA"),
    "class_names": ({}, "{} = every name from the index rules"),
    "first_date": ("", "empty = no bound"),
    "last_date": ("", "empty = no bound"),
    "sample_per_date": (0, "0 = an equal share of sample_size"),
    "compare_with": ("previous", "previous = the AOI's previous date with a map"),
    "stable_areas": ("", "empty = no stable areas"),
}


def setting(settings_class: type, name: str) -> Any:
    """A config field with the default and description of ``settings_class``'s field ``name``.

    Tuples (the dataclasses' immutable defaults) become lists, the form run config takes, given
    as a value rather than a factory: Dagster shows only a value in the launchpad's defaults
    (pydantic copies a list default for each config, so it is never shared). A None default is
    shown as its :data:`SHOWN_FOR_NONE` value.
    """
    spec = {f.name: f for f in dataclasses.fields(settings_class)}[name]
    description = spec.metadata["description"]
    default = spec.default
    if default is None and name in SHOWN_FOR_NONE:
        shown, meaning = SHOWN_FOR_NONE[name]
        return Field(default=shown, description=f"{description} ({meaning})")
    if isinstance(default, tuple):
        return Field(default=list(default), description=description)
    return Field(default=default, description=description)


def to_settings(settings_class: type[S], config: dg.Config) -> S:
    """``settings_class`` with every field the config has (lists as tuples; a launchpad value
    that stands for None, as None)."""
    names = {f.name for f in dataclasses.fields(settings_class)}  # type: ignore[arg-type]
    return settings_class(
        **{
            name: _setting_value(name, getattr(config, name))
            for name in type(config).model_fields
            if name in names
        }
    )


def _setting_value(name: str, value: object) -> object:
    if name in SHOWN_FOR_NONE and value == SHOWN_FOR_NONE[name][0]:
        return None
    return _plain(value)


def _plain(value: object) -> object:
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value.value if isinstance(value, enum.Enum) else value


class SearchConfig(dg.Config):
    """STAC search for the partition's AOI and date window."""

    collection: str = setting(SearchSettings, "collection")
    max_cloud_cover: float | None = setting(SearchSettings, "max_cloud_cover")
    max_items: int | None = setting(SearchSettings, "max_items")


class BandStackConfig(dg.Config):
    """Which bands to read, on which grid, and what to mask."""

    bands: list[str] = setting(LoadSettings, "bands")
    resolution: float | None = setting(LoadSettings, "resolution")
    crs: str | None = setting(LoadSettings, "crs")
    chunk_size: int = setting(LoadSettings, "chunk_size")
    resampling: Resampling = setting(LoadSettings, "resampling")
    mask_clouds: bool = setting(LoadSettings, "mask_clouds")
    mask_flags: list[MaskFlagChoice] = setting(LoadSettings, "mask_flags")
    groupby: GroupBy = setting(LoadSettings, "groupby")
    max_upsampling: float = setting(LoadSettings, "max_upsampling")
    max_grid_pixels: int = setting(LoadSettings, "max_grid_pixels")


class MosaicConfig(dg.Config):
    """How observations are combined and clipped."""

    method: CompositeMethod = setting(CompositeSettings, "method")
    all_touched: bool = setting(CompositeSettings, "all_touched")
    out_of_range: OutOfRange = setting(CompositeSettings, "out_of_range")
    warn_clear_fraction: float = setting(MosaicQuality, "warn_clear_fraction")
    error_clear_fraction: float = setting(MosaicQuality, "error_clear_fraction")


class AccuracyConfig(dg.Config):
    """The reference data's label column, and the accuracy a map needs."""

    reference_label: str = setting(AccuracySettings, "reference_label")
    warn_overall_accuracy: float = setting(AccuracySettings, "warn_overall_accuracy")


class GeoTiffConfig(dg.Config):
    """Spectral indices added to the exported Cloud-Optimized GeoTIFF, and its compression."""

    indices: list[str] | None = setting(IndexSettings, "indices")
    compress: Compression = setting(CogSettings, "compress")
    compress_level: int | None = setting(CogSettings, "compress_level")


class _ClusteringConfig(dg.Config):
    """How a model is fitted: shared by a partition's clusters and an AOI's reference model."""

    # An integer or "auto": Dagster config takes no union of the two, so the launchpad shows it
    # untyped and ClusterSettings checks it when the run starts.
    n_clusters: Any = setting(ClusterSettings, "n_clusters")
    auto_k_min: int = setting(ClusterSettings, "auto_k_min")
    auto_k_max: int = setting(ClusterSettings, "auto_k_max")
    algorithm: Algorithm = setting(ClusterSettings, "algorithm")
    pca_components: int | None = setting(ClusterSettings, "pca_components")
    sample_size: int = setting(ClusterSettings, "sample_size")
    seed: int = setting(ClusterSettings, "seed")
    features: list[str] = setting(ClusterSettings, "features")
    class_names: dict[str, str] | None = setting(NamingSettings, "class_names")


class ClusterConfig(_ClusteringConfig):
    """Unsupervised clustering of the pixels' spectral signatures, and where the ids come from."""

    model: str = setting(ModelSettings, "model")
    match_max_distance: float = setting(ModelSettings, "match_max_distance")
    min_cluster_share: float = setting(ClusterQuality, "min_cluster_share")
    min_mapping_unit_ha: float = setting(SieveSettings, "min_mapping_unit_ha")


class ReferenceModelConfig(_ClusteringConfig):
    """An AOI's reference model: the fit, and which date partitions it pools."""

    dates: list[str] = setting(PoolSettings, "dates")
    first_date: str | None = setting(PoolSettings, "first_date")
    last_date: str | None = setting(PoolSettings, "last_date")
    sample_per_date: int | None = setting(PoolSettings, "sample_per_date")


class DiagnosticsConfig(dg.Config):
    """Plots and scores of the clustering."""

    elbow_k_min: int = setting(DiagnosticsSettings, "elbow_k_min")
    elbow_k_max: int = setting(DiagnosticsSettings, "elbow_k_max")
    elbow_sample_size: int = setting(DiagnosticsSettings, "elbow_sample_size")
    silhouette_sample_size: int = setting(DiagnosticsSettings, "silhouette_sample_size")
    preview_size: int = setting(DiagnosticsSettings, "preview_size")
    density_bins: int = setting(DiagnosticsSettings, "density_bins")
    figures: bool = setting(DiagnosticsSettings, "figures")
    figures_in_ui: bool = setting(DiagnosticsSettings, "figures_in_ui")
    min_silhouette: float = setting(SeparationQuality, "min_silhouette")


class ChangeConfig(dg.Config):
    """Which earlier date the partition's map is compared with."""

    compare_with: str | None = setting(ChangeSettings, "compare_with")
    min_overlap: float = setting(ChangeSettings, "min_overlap")
    warn_changed_share: float = setting(ChangeSettings, "warn_changed_share")
    stable_areas: str | None = setting(ChangeSettings, "stable_areas")
    warn_stable_change: float = setting(ChangeSettings, "warn_stable_change")
    confident_only: bool = setting(ChangeSettings, "confident_only")


#: Each config class and the plain settings it feeds, for the consistency test.
SETTINGS_OF: dict[type[dg.Config], tuple[type, ...]] = {
    SearchConfig: (SearchSettings,),
    BandStackConfig: (LoadSettings,),
    MosaicConfig: (CompositeSettings, MosaicQuality),
    GeoTiffConfig: (IndexSettings, CogSettings),
    ClusterConfig: (ClusterSettings, ModelSettings, NamingSettings, ClusterQuality, SieveSettings),
    ReferenceModelConfig: (ClusterSettings, PoolSettings, NamingSettings),
    DiagnosticsConfig: (DiagnosticsSettings, SeparationQuality),
    ChangeConfig: (ChangeSettings,),
    AccuracyConfig: (AccuracySettings,),
}


#: The config class of every asset that takes run config.
CONFIG_OF: dict[str, type[dg.Config]] = {
    "stac_items": SearchConfig,
    "band_stack": BandStackConfig,
    "mosaic": MosaicConfig,
    "geotiff": GeoTiffConfig,
    "clusters": ClusterConfig,
    "diagnostics": DiagnosticsConfig,
    "cluster_change": ChangeConfig,
    "accuracy": AccuracyConfig,
    "cluster_model": ReferenceModelConfig,
}


class SettingsRefused(ConfigError):
    """A run's setting of ``asset`` that cannot work, found before any asset ran."""

    def __init__(self, asset: str, message: str) -> None:
        super().__init__(message)
        self.asset = asset


def check_settings(run_config: Mapping[str, Any] | None) -> None:
    """Build every asset's settings from a run's config before any asset writes.

    Dagster checks names and types when the run starts; the settings classes check what a type
    cannot say (ranges, elbow_k_min <= elbow_k_max, a choice of "auto" or an integer, ...).
    Checked here, a setting of `clusters` that cannot work fails the run at its first step,
    with the asset and the field named, instead of after the assets before `clusters` have
    been computed again and rewritten.
    """
    ops = (run_config or {}).get("ops") or {}
    for asset, config_class in CONFIG_OF.items():
        values = (ops.get(asset) or {}).get("config") or {}
        try:
            config = config_class(**values)
            for settings_class in SETTINGS_OF[config_class]:
                to_settings(settings_class, config)
        except ConfigError as err:
            raise SettingsRefused(asset, f"ops.{asset}.config: {err}") from err
