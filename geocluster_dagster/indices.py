"""Spectral indices: NDVI and land surface temperature built in, any Awesome Spectral Indices name via spyndex.

Indices are computed lazily on the band variables of a composite and added as new float32
variables named in lower case (``ndvi``, ``lst``, ``ndwi``, ...).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from .errors import BandNotFound, ConfigError
from .fields import described

#: spyndex band symbols -> this package's common band names.
SPYNDEX_BANDS: dict[str, str] = {
    "A": "coastal",
    "B": "blue",
    "G": "green",
    "R": "red",
    "RE1": "rededge1",
    "RE2": "rededge2",
    "RE3": "rededge3",
    "N": "nir",
    "N2": "nir08",
    "S1": "swir16",
    "S2": "swir22",
    "T": "lwir",
    "T1": "lwir",
}

#: Indices this module computes itself (spyndex has no LST: Collection 2 ST_B10 already *is* LST).
BUILTIN_INDICES: dict[str, tuple[str, ...]] = {"ndvi": ("red", "nir"), "lst": ("lwir",)}

INDEX_UNITS: dict[str, str] = {"lst": "degC"}


@dataclass(frozen=True)
class IndexSettings:
    """Which spectral indices the exported GeoTIFF carries besides the bands."""

    indices: tuple[str, ...] | None = described(
        None,
        "Index names: 'ndvi', 'lst' or any Awesome Spectral Indices short "
        "name (NDWI, EVI, SAVI, NDBI, ...); None = NDVI, plus LST when a thermal band is "
        "loaded; empty = no index.",
    )

    def names_for(self, ds: xr.Dataset) -> list[str]:
        """The configured indices, or the defaults for the bands ``ds`` has."""
        if self.indices is not None:
            return list(self.indices)
        return ["ndvi", *(["lst"] if "lwir" in ds.data_vars else [])]


def _finite(values: xr.DataArray) -> xr.DataArray:
    """Division by zero (e.g. nir + red == 0) gives inf; that is missing, not a value."""
    finite: xr.DataArray = values.where(np.isfinite(values)).astype("float32")
    return finite


def required_bands(name: str) -> tuple[str, ...]:
    """Common band names an index needs."""
    key = name.lower()
    if key in BUILTIN_INDICES:
        return BUILTIN_INDICES[key]
    index = _spyndex_index(name)
    missing = [b for b in index.bands if b not in SPYNDEX_BANDS and b not in _constants()]
    if missing:
        raise ConfigError(
            f"Spectral index {index.short_name!r} needs inputs {missing} this package does not load; "
            "pick another index."
        )
    return tuple(SPYNDEX_BANDS[b] for b in index.bands if b in SPYNDEX_BANDS)


def _constants() -> dict[str, Any]:
    import spyndex

    return dict(spyndex.constants)


@functools.cache
def _formula(short_name: str) -> Any:
    """The compiled formula of a spyndex index, from the catalogue spyndex loaded at import."""
    import spyndex

    return compile(spyndex.indices[short_name].formula, short_name, "eval")


def evaluate_index(short_name: str, params: dict[str, Any]) -> Any:
    """spyndex's formula of index ``short_name`` evaluated on ``params`` (its symbols: arrays,
    DataArrays or numbers), as ``spyndex.computeIndex`` evaluates it; without its re-reading
    and parsing its whole JSON catalogue on every call (1 ms a call, and the clusters' elbow
    names every cluster of every k with five indices: 0.4 s of a small AOI's run)."""
    return eval(_formula(short_name), {}, params)  # noqa: S307 - spyndex's packaged formulas


def _spyndex_index(name: str) -> Any:
    """The spyndex index called ``name`` (any case), or a ConfigError naming close matches."""
    import spyndex  # heavy import (pandas, dask, ...) only when an index asks for it

    by_lower = {key.lower(): key for key in spyndex.indices}
    if name.lower() not in by_lower:
        close = difflib.get_close_matches(name.lower(), list(by_lower) + list(BUILTIN_INDICES), n=3)
        raise ConfigError(
            f"Unknown spectral index {name!r}. `indices` takes 'ndvi', 'lst' or any Awesome Spectral "
            f"Indices short name (spyndex.indices)"
            + (f"; did you mean {[by_lower.get(c, c) for c in close]}?" if close else ".")
        )
    return spyndex.indices[by_lower[name.lower()]]


def compute_index(ds: xr.Dataset, name: str) -> xr.DataArray:
    """One index as a lazy float32 DataArray named ``name.lower()``."""
    key = name.lower()
    missing = [b for b in required_bands(name) if b not in ds.data_vars]
    if missing:
        raise BandNotFound(
            f"Index {name!r} needs band(s) {missing}, which the composite lacks (it has "
            f"{sorted(map(str, ds.data_vars))}). Add them to `bands`, or drop {name!r} from `indices`"
            + (" (Sentinel-2 has no thermal band)." if "lwir" in missing else ".")
        )
    if key == "ndvi":
        values = (ds["nir"] - ds["red"]) / (ds["nir"] + ds["red"])
    elif key == "lst":
        values = ds["lwir"] - 273.15
    else:
        import spyndex

        index = _spyndex_index(name)
        params = {
            symbol: ds[SPYNDEX_BANDS[symbol]] for symbol in index.bands if symbol in SPYNDEX_BANDS
        }
        params.update(
            {
                symbol: spyndex.constants[symbol].default
                for symbol in index.bands
                if symbol not in params
            }
        )
        values = evaluate_index(index.short_name, params)
    out: xr.DataArray = _finite(values).rename(key)
    out.attrs = {"long_name": key, "units": INDEX_UNITS.get(key, "1")}
    return out


def add_indices(ds: xr.Dataset, names: Sequence[str]) -> xr.Dataset:
    """The dataset with one new variable per index name (duplicates ignored)."""
    out: xr.Dataset = ds.copy()
    for name in dict.fromkeys(n.lower() for n in names):
        if name in ds.data_vars:
            raise ConfigError(f"Index name {name!r} clashes with a band of the same name.")
        out[name] = compute_index(ds, name)
    return out
