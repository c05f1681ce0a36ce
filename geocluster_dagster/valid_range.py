"""The valid range of each band as its producer documents it, and what becomes of values outside.

Surface reflectance is a ratio of 0 to 1, but atmospheric correction over dark targets (water,
deep shadow) overshoots and writes values below 0, and saturated bright targets above 1.
Producers say which values to trust:

* **Landsat Collection 2 Level-2** (USGS LSDS-1619, *Landsat 8-9 Collection 2 Level 2 Science
  Product Guide*, and LSDS-1618 for Landsat 4-7): surface reflectance is valid for
  DN 7,273-43,636, i.e. 0.0000075-0.99999 after the scale 2.75e-5 and offset -0.2; surface
  temperature (ST_B10 / ST_B6) for DN 293-61,440, i.e. 150.0-359.0 K after the scale
  0.00341802 and offset 149.0.
* **Sentinel-2 L2A** (ESA, *Sentinel-2 Products Specification Document*, and the processing
  baseline 04.00 note of January 2022): bottom-of-atmosphere reflectance is DN / 10000
  (after the -1000 DN ``BOA_ADD_OFFSET`` from baseline 04.00, which ESA added so that dark
  surfaces keep their noise instead of being cut at 0), so the physical range is 0-1.

What becomes of a value outside its band's range is the mosaic's ``out_of_range`` setting:

* ``keep`` (the default): the band keeps the value the producer delivered (USGS and ESA
  deliver them too), but no **index** is computed from it: an index whose inputs are not valid
  reflectance is nodata, so NDVI and the other normalised differences stay within -1..1
  (on the real Brumadinho crops the raw NDVI of such pixels reaches -85 and +85).
* ``clamp``: set to the nearest bound (ESA's own L2A did so at 0 before baseline 04.00).
* ``mask``: nodata in that band (the clustering, which needs every feature band, then leaves
  the pixel unlabelled).

Either way the share of values that were outside is counted and reported (the mosaic's
``band_statistics``, its ``valid_range`` tag and the geotiff's ``physical_reflectance``
check), so nothing changes without a word. Why ``keep`` is the default: on the Brumadinho
pair, clamping or masking the ~1 % of dark pixels below the range changed the automatic
choice of k (7 -> 6 or 5) and made the change map less true (false change on stable land
8.1 % -> 10.6 % clamped; the mudflow found 92 % -> 83 % clamped, 38 % masked with the AOI's
reference model): the clustering's response to those pixels must be made robust first.

Bounds are applied to the composite, where every band of every pixel passes once, with a
tolerance of half a DN step: a value the inputs encode at the bound itself is inside.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import xarray as xr

from .errors import ConfigError

OutOfRange = Literal["keep", "clamp", "mask"]

#: The tag of a written raster that records the ranges, the policy and the values outside.
VALID_RANGE_TAG = "valid_range"

#: The valid DN ranges USGS documents for Collection 2 Level-2 (LSDS-1619 / LSDS-1618).
LANDSAT_SR_VALID_DN = (7273, 43636)
LANDSAT_ST_VALID_DN = (293, 61440)
LANDSAT_SR_SCALE, LANDSAT_SR_OFFSET = 2.75e-5, -0.2
LANDSAT_ST_SCALE, LANDSAT_ST_OFFSET = 0.00341802, 149.0
#: Sentinel-2 L2A reflectance: 0 to 1 after quantification (DN / 10000) and BOA_ADD_OFFSET.
SENTINEL2_VALID_REFLECTANCE = (0.0, 1.0)
SENTINEL2_DN_STEP = 1e-4


@dataclass(frozen=True)
class ValidRange:
    """One band's valid physical values, and the tolerance of half its DN step."""

    low: float
    high: float
    tolerance: float
    source: str

    @classmethod
    def from_dn(cls, dn: tuple[int, int], scale: float, offset: float, source: str) -> ValidRange:
        return cls(dn[0] * scale + offset, dn[1] * scale + offset, scale / 2, source)

    def as_dict(self) -> dict[str, object]:
        return {
            "low": round(self.low, 7),
            "high": round(self.high, 7),
            "tolerance": self.tolerance,
            "source": self.source,
        }


LANDSAT_SR = ValidRange.from_dn(
    LANDSAT_SR_VALID_DN, LANDSAT_SR_SCALE, LANDSAT_SR_OFFSET, "USGS LSDS-1619/1618: DN 7273-43636"
)
LANDSAT_ST = ValidRange.from_dn(
    LANDSAT_ST_VALID_DN, LANDSAT_ST_SCALE, LANDSAT_ST_OFFSET, "USGS LSDS-1619/1618: DN 293-61440"
)
SENTINEL2_SR = ValidRange(
    *SENTINEL2_VALID_REFLECTANCE, SENTINEL2_DN_STEP / 2, "ESA S2 L2A: reflectance 0-1"
)


def check_policy(policy: str) -> None:
    """Refuse a policy this module does not know, naming the setting."""
    if policy not in get_args(OutOfRange):
        raise ConfigError(
            f"`out_of_range` must be one of {list(get_args(OutOfRange))} (mosaic), got {policy!r}."
        )


@dataclass(frozen=True)
class RangePolicy:
    """The valid range of each band of a block (None: no documented range) and the policy."""

    ranges: tuple[ValidRange | None, ...]
    policy: OutOfRange = "keep"

    def __post_init__(self) -> None:
        check_policy(self.policy)

    def apply(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(band, y, x) physical block -> (the block within range, (band, 2) counts of the
        values outside the range and of the values checked).

        NaN (nodata) is neither counted nor changed. A new array is returned when a value
        changes; ``block`` is left as it was (a dask task's result may be shared)."""
        if len(self.ranges) != block.shape[0]:
            raise ValueError(f"{len(self.ranges)} ranges for a block of {block.shape[0]} bands")
        out = block if self.policy == "keep" else block.copy()
        counts = np.zeros((block.shape[0], 2), dtype="int64")
        outside = counts[:, 0]
        for index, valid in enumerate(self.ranges):
            if valid is None:
                continue
            values = out[index]
            counts[index, 1] = int(np.count_nonzero(~np.isnan(values)))
            with np.errstate(invalid="ignore"):
                below = values < valid.low - valid.tolerance
                above = values > valid.high + valid.tolerance
            wrong = below | above
            outside[index] = int(np.count_nonzero(wrong))
            if not outside[index]:
                continue
            if self.policy == "clamp":
                values[below] = valid.low
                values[above] = valid.high
            elif self.policy == "mask":
                values[wrong] = np.nan
        return out, counts

    def tag(self, names: Sequence[str], outside: Mapping[str, tuple[int, int]]) -> str:
        """The ``valid_range`` tag of a written raster: per band, the range, its source, the
        policy, how many values were outside it and how many were checked."""
        return json.dumps(
            {
                name: {
                    **valid.as_dict(),
                    "policy": self.policy,
                    "outside": int(outside.get(name, (0, 0))[0]),
                    "checked": int(outside.get(name, (0, 0))[1]),
                }
                for name, valid in zip(names, self.ranges, strict=True)
                if valid is not None
            }
        )


#: How each policy's outcome reads in a sentence.
DONE_TO_THEM = {
    "keep": "kept in the bands (no index computed from them)",
    "clamp": "clamped to it",
    "mask": "masked",
}


def outside_shares(tag: Mapping[str, Mapping[str, object]]) -> dict[str, float]:
    """Per band of a ``valid_range`` tag, the share of its checked values that were outside."""
    shares = {}
    for band, entry in tag.items():
        checked = int(str(entry.get("checked", 0)))
        if checked:
            shares[band] = int(str(entry.get("outside", 0))) / checked
    return shares


def within(values: xr.DataArray, valid: Mapping[str, object]) -> xr.DataArray:
    """``values`` where they lie in the range a ``valid_range`` tag entry states, else NaN."""
    low, high = float(str(valid["low"])), float(str(valid["high"]))
    tolerance = float(str(valid.get("tolerance", 0.0)))
    inside = (values >= low - tolerance) & (values <= high + tolerance)
    kept: xr.DataArray = values.where(inside)
    return kept


def read_tag(value: object) -> dict[str, dict[str, object]]:
    """The ``valid_range`` tag of a raster (empty when the raster has none)."""
    if not value:
        return {}
    parsed = json.loads(str(value))
    return parsed if isinstance(parsed, dict) else {}
