"""A land-cover name for each cluster, from its mean signature and published index thresholds.

Each cluster's mean reflectances give its indices (spyndex: NDVI, NDWI, MNDWI, NDSI, NDBI, BI),
and the first rule that holds names it. The rules, in order, and where their thresholds come
from:

1. **snow/ice**: NDSI >= 0.4 and NIR > 0.11 (Hall, Riggs & Salomonson 1995, Remote Sensing of
   Environment 54: 127-140, the SNOMAP test; the NIR test keeps water, whose NDSI is also high,
   out).
2. **cloud**: HOT = blue - 0.5 red - 0.08 > 0 (the Haze Optimized Transform, Zhang, Guindon &
   Cihlar 2002, Remote Sensing of Environment 82: 173-187, in the form Fmask uses: Zhu &
   Woodcock 2012, Remote Sensing of Environment 118: 83-94) and a mean visible reflectance of
   at least 0.2 (bright). Only residual or unmasked cloud meets it: masked cloud is not mapped.
3. **water**: NDWI > 0 (McFeeters 1996, International Journal of Remote Sensing 17: 1425-1432),
   or MNDWI > 0 with NDVI < 0 (Xu 2006, International Journal of Remote Sensing 27: 3025-3033).
4. **shadow/dark**: mean reflectance over the bands below 0.05 and not water: too dark for
   any index to say what it is (cloud or terrain shadow, burnt or very wet ground). This
   threshold is this package's, not a published one.
5. **dense vegetation**: NDVI >= 0.6 ("high values (0.6 to 0.8) indicate temperate and
   tropical rainforests", Weier & Herring 2000, NASA Earth Observatory, *Measuring
   Vegetation*).
6. **built-up**: 0.2 <= NDVI < 0.3 and NDBI > 0 (Zha, Gao & Ni 2003, International Journal of
   Remote Sensing 24: 583-594: built-up surfaces reflect more in SWIR than in NIR; mixtures of
   roofs, roads and gardens keep an NDVI of 0.2-0.3: 0.21 for spyndex's Landsat 8 urban
   samples, 0.23 for the labelled Landsat 7 urban pixels).
7. **sparse vegetation/grassland**: 0.2 <= NDVI < 0.6 ("moderate values represent shrub and
   grassland (0.2 to 0.3)", Weier & Herring 2000, widened up to the dense threshold).
8. **bare soil/rock**: 0 <= NDVI < 0.2 ("very low values of NDVI (0.1 and below) correspond
   to barren areas of rock, sand, or snow", Weier & Herring 2000, up to the bottom of
   the grassland range).
9. **unlabelled** otherwise, or when the bands a rule needs are missing.

Known limits: indices alone do not separate bare soil from dense built-up cores (both reflect
more in SWIR than in NIR; Xu 2008 discusses this), so a city centre with NDVI below 0.2 is
named bare soil/rock; without a SWIR band, built-up cannot be told from sparse vegetation.
Every name records the rule and the index values that decided it, and names can be
overridden per cluster id (``class_names``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError
from .fields import described

WATER, SNOW, DENSE_VEGETATION = "water", "snow/ice", "dense vegetation"
SPARSE_VEGETATION, BARE, BUILT_UP = "sparse vegetation/grassland", "bare soil/rock", "built-up"
CLOUD, DARK, UNLABELLED = "cloud", "shadow/dark", "unlabelled"
CLASS_NAMES = (
    WATER,
    SNOW,
    DENSE_VEGETATION,
    SPARSE_VEGETATION,
    BARE,
    BUILT_UP,
    CLOUD,
    DARK,
    UNLABELLED,
)

#: The indices the rules read, as spyndex names them, and the bands (spyndex symbols) each needs.
INDICES = ("NDVI", "NDWI", "MNDWI", "NDSI", "NDBI", "BI")
_SYMBOLS = {"B": "blue", "G": "green", "R": "red", "N": "nir", "S1": "swir16"}
#: Bands whose mean makes a cluster's overall brightness (reflectances only).
_REFLECTANCES = ("blue", "green", "red", "nir", "swir16", "swir22")


@dataclass(frozen=True)
class NamingSettings:
    """How clusters are named."""

    class_names: Mapping[str, str] | None = described(
        None,
        "Names that replace the proposed ones, by cluster id, e.g. {'3': 'tailings mud'}; "
        "None = the proposed names only.",
    )

    def __post_init__(self) -> None:
        for key, name in (self.class_names or {}).items():
            if not str(key).isdigit() or not 1 <= int(key) <= 254:
                raise ConfigError(
                    f"class_names key {key!r} is not a cluster id: use the ids 1..254 of the map "
                    "(its legend, or signatures.csv's `cluster` column)."
                )
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"class_names[{key!r}] is empty: give the class a name.")


@dataclass(frozen=True)
class ClassName:
    """The name of one cluster and why."""

    id: int
    name: str
    rule: str
    """The rule that named it, with its thresholds, or 'set in class_names'."""
    indices: dict[str, float]
    """The index values of the cluster's mean signature (NaN when a band is missing)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "rule": self.rule,
            "indices": {
                k: (None if math.isnan(v) else round(v, 4)) for k, v in self.indices.items()
            },
        }


def signature_indices(means: Mapping[str, float]) -> dict[str, float]:
    """The rules' indices (spyndex formulas) of one mean signature; NaN where a band is missing."""
    import spyndex  # heavy import, only when clusters are named

    values: dict[str, float] = {}
    for name in INDICES:
        symbols = spyndex.indices[name].bands
        if not all(_SYMBOLS.get(s) in means for s in symbols):
            values[name] = math.nan
            continue
        params = {s: float(means[_SYMBOLS[s]]) for s in symbols}
        with np.errstate(divide="ignore", invalid="ignore"):
            value = float(spyndex.computeIndex(index=name, params=params))
        values[name] = value if math.isfinite(value) else math.nan
    return values


def propose_name(means: Mapping[str, float]) -> tuple[str, str, dict[str, float]]:
    """(name, rule, indices) for a cluster whose mean reflectance per band is ``means``."""
    ix = signature_indices(means)
    ndvi, ndwi, mndwi, ndsi, ndbi = (ix[k] for k in ("NDVI", "NDWI", "MNDWI", "NDSI", "NDBI"))

    def get(band: str) -> float:
        return float(means.get(band, math.nan))

    seen = [v for v in (get("blue"), get("green"), get("red")) if math.isfinite(v)]
    visible = float(np.mean(seen)) if seen else math.nan  # no visible band measured: unknown
    reflectances = [get(b) for b in _REFLECTANCES if b in means]
    brightness = float(np.mean(reflectances)) if reflectances else math.nan
    hot = get("blue") - 0.5 * get("red") - 0.08

    if ndsi >= 0.4 and get("nir") > 0.11:
        return SNOW, "NDSI >= 0.4 and NIR > 0.11 (Hall et al. 1995)", ix
    if hot > 0 and visible >= 0.2:
        return CLOUD, "HOT > 0 and mean visible >= 0.2 (Zhang et al. 2002; Zhu & Woodcock 2012)", ix
    if ndwi > 0:
        return WATER, "NDWI > 0 (McFeeters 1996)", ix
    if mndwi > 0 and ndvi < 0:
        return WATER, "MNDWI > 0 and NDVI < 0 (Xu 2006)", ix
    if brightness < 0.05:
        return DARK, "mean reflectance < 0.05, not water", ix
    if math.isnan(ndvi):
        return UNLABELLED, "no red or NIR band: NDVI unknown", ix
    if ndvi >= 0.6:
        return DENSE_VEGETATION, "NDVI >= 0.6 (Weier & Herring 2000)", ix
    if 0.2 <= ndvi < 0.3 and ndbi > 0:  # NaN (no SWIR) compares False
        return BUILT_UP, "0.2 <= NDVI < 0.3 and NDBI > 0 (Zha et al. 2003)", ix
    if ndvi >= 0.2:
        note = "" if not math.isnan(ndbi) else "; no SWIR band, so built-up cannot be told apart"
        return SPARSE_VEGETATION, f"0.2 <= NDVI < 0.6 (Weier & Herring 2000){note}", ix
    if ndvi >= 0:
        return BARE, "0 <= NDVI < 0.2 (Weier & Herring 2000)", ix
    return UNLABELLED, "NDVI < 0 but neither water, snow nor cloud", ix


def name_clusters(
    means_by_id: Mapping[int, Mapping[str, float]],
    overrides: Mapping[str, str] | None = None,
    *,
    inherited: Mapping[int, str] | None = None,
    source: str = "",
) -> list[ClassName]:
    """A name for every cluster id: set in ``overrides``, else ``inherited`` from the reference
    model the id comes from (``source``), else proposed from the cluster's mean signature. An
    inherited name keeps a land cover's name the same in every date, even where this date's
    mean sits on the other side of a threshold."""
    unknown = sorted(set(overrides or {}) - {str(i) for i in means_by_id}, key=int)
    if unknown:
        raise ConfigError(
            f"class_names names cluster id(s) {unknown}, which the model does not have (its ids: "
            f"{sorted(means_by_id)}): use the ids of the map's legend or signatures.csv."
        )
    names = []
    for cluster_id, means in sorted(means_by_id.items()):
        name, rule, indices = propose_name(means)
        if inherited and int(cluster_id) in inherited:
            name, rule = inherited[int(cluster_id)], f"the name in the reference model {source}"
        if overrides and str(cluster_id) in overrides:
            name, rule = overrides[str(cluster_id)], f"set in class_names (proposed: {name})"
        names.append(ClassName(int(cluster_id), name, rule, indices))
    return names


def means_of(signatures: Any) -> dict[int, dict[str, float]]:
    """Cluster id -> mean reflectance per band, from a signatures table (``<band>_mean``)."""
    bands = [b for b in _REFLECTANCES if f"{b}_mean" in signatures]
    return {
        int(row["cluster"]): {b: float(row[f"{b}_mean"]) for b in bands}
        for _, row in signatures.iterrows()
    }
