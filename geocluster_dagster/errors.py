"""One root error for everything this package refuses to do, and what to do about it.

Every subclass also inherits the matching builtin, so callers can catch either
``GeoclusterError`` or e.g. ``ValueError``. Messages say what failed, which item,
band or AOI, and which setting fixes it.
"""

from __future__ import annotations


class GeoclusterError(Exception):
    """Base class for every error raised on purpose by geocluster_dagster."""


class InvalidAOI(GeoclusterError, ValueError):
    """An area of interest is malformed: bad geometry, wrong type, swapped axes, bad id."""


class NoItemsFound(GeoclusterError, LookupError):
    """A STAC search returned nothing for the AOI, time window and filters."""


class BandNotFound(GeoclusterError, LookupError):
    """A requested band (or the QA band) is not among an item's assets."""

    def __str__(self) -> str:  # LookupError would otherwise repr() a KeyError-like message
        return str(self.args[0]) if self.args else ""


class AssetReadError(GeoclusterError, OSError):
    """An asset URL or file could not be opened, or is not a readable GeoTIFF."""


class NoOverlap(GeoclusterError, ValueError):
    """The rasters do not cover any part of the AOI."""


class NoClearPixels(GeoclusterError, ValueError):
    """Every pixel in the AOI is masked (cloud, shadow, fill, nodata)."""


class TooFewPixels(GeoclusterError, ValueError):
    """There are fewer valid pixels than the clustering needs (e.g. k larger than pixels)."""


class OutputNotWritable(GeoclusterError, OSError):
    """The output location cannot be written (permissions, missing mount, disk full)."""


class ConfigError(GeoclusterError, ValueError):
    """A setting has a value that cannot work; the message names the setting."""


class PartitionBusy(GeoclusterError, TimeoutError):
    """Another run holds the partition's lock for longer than this run may wait."""


class NotComparable(ConfigError):
    """Two maps whose cluster ids need not mean the same land cover (no common reference)."""


class InstanceUnavailable(GeoclusterError, RuntimeError):
    """The Dagster instance (DAGSTER_HOME) cannot be opened: its dagster.yaml or database."""
