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

Two clusters the rules give the same name (two shades of forest, say) are told apart by their
brightness (mean reflectance): "dense vegetation (darker)" and "dense vegetation (brighter)", so
no two classes of one map share a name. The part before the qualifier is the cluster's **land
cover** (:func:`cover_of`): a pixel that moves between two clusters of one cover has not changed
land cover, and change is reported by cover as well as by cluster.

Known limits: indices alone do not separate bare soil from dense built-up cores (both reflect
more in SWIR than in NIR; Xu 2008 discusses this), so a city centre with NDVI below 0.2 is
named bare soil/rock; without a SWIR band, built-up cannot be told from sparse vegetation.
Every name records the rule and the index values that decided it, and names can be
overridden per cluster id (``class_names``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
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

#: The longest name class_names may give a class: every legend and category table shows it whole.
MAX_NAME_LENGTH = 60

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
            if len(name) > MAX_NAME_LENGTH:
                raise ConfigError(
                    f"class_names[{key!r}] is {len(name)} characters long: give a name of at "
                    f"most {MAX_NAME_LENGTH} (it is shown whole in legends, GDAL categories, "
                    "QGIS and the report; describe the class elsewhere)."
                )


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


def _indices(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rules' indices (spyndex formulas) of arrays of reflectances; NaN where a band is
    missing or the index is undefined."""
    import spyndex  # heavy import, only when clusters are named

    from .indices import evaluate_index

    size = len(next(iter(values.values()))) if values else 0
    result: dict[str, np.ndarray] = {}
    for name in INDICES:
        symbols = spyndex.indices[name].bands
        if not all(_SYMBOLS.get(s) in values for s in symbols):
            result[name] = np.full(size, np.nan)
            continue
        params = {s: np.asarray(values[_SYMBOLS[s]], dtype=np.float64) for s in symbols}
        with np.errstate(divide="ignore", invalid="ignore"):
            index = np.asarray(evaluate_index(name, params), dtype=np.float64)
        result[name] = np.where(np.isfinite(index), index, np.nan)
    return result


def _rules(
    values: Mapping[str, np.ndarray],
) -> tuple[list[tuple[str, str, np.ndarray]], dict[str, np.ndarray]]:
    """Every naming rule in order as (name, rule, where it holds), for arrays of reflectances,
    and the index arrays; the first rule that holds names a signature (NaN compares False)."""
    ix = _indices(values)
    size = len(next(iter(ix.values())))
    ndvi, ndwi, mndwi, ndsi, ndbi = (ix[k] for k in ("NDVI", "NDWI", "MNDWI", "NDSI", "NDBI"))

    def get(band: str) -> np.ndarray:
        return np.asarray(values[band], np.float64) if band in values else np.full(size, np.nan)

    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a mean of no measured band is NaN
        visible = np.nanmean([get(b) for b in ("blue", "green", "red")], axis=0)
        brightness = np.nanmean([get(b) for b in _REFLECTANCES], axis=0)
    hot = get("blue") - 0.5 * get("red") - 0.08
    no_swir = "; no SWIR band, so built-up cannot be told apart" if np.isnan(ndbi).all() else ""
    rules = [
        (
            SNOW,
            "NDSI >= 0.4 and NIR > 0.11 (Hall et al. 1995)",
            (ndsi >= 0.4) & (get("nir") > 0.11),
        ),
        (
            CLOUD,
            "HOT > 0 and mean visible >= 0.2 (Zhang et al. 2002; Zhu & Woodcock 2012)",
            (hot > 0) & (visible >= 0.2),
        ),
        (WATER, "NDWI > 0 (McFeeters 1996)", ndwi > 0),
        (WATER, "MNDWI > 0 and NDVI < 0 (Xu 2006)", (mndwi > 0) & (ndvi < 0)),
        (DARK, "mean reflectance < 0.05, not water", brightness < 0.05),
        (UNLABELLED, "no red or NIR band: NDVI unknown", np.isnan(ndvi)),
        (DENSE_VEGETATION, "NDVI >= 0.6 (Weier & Herring 2000)", ndvi >= 0.6),
        (
            BUILT_UP,
            "0.2 <= NDVI < 0.3 and NDBI > 0 (Zha et al. 2003)",
            (ndvi >= 0.2) & (ndvi < 0.3) & (ndbi > 0),
        ),
        (SPARSE_VEGETATION, f"0.2 <= NDVI < 0.6 (Weier & Herring 2000){no_swir}", ndvi >= 0.2),
        (BARE, "0 <= NDVI < 0.2 (Weier & Herring 2000)", ndvi >= 0),
        (UNLABELLED, "NDVI < 0 but neither water, snow nor cloud", np.ones(size, dtype=bool)),
    ]
    return rules, ix


def signature_indices(means: Mapping[str, float]) -> dict[str, float]:
    """The rules' indices (spyndex formulas) of one mean signature; NaN where a band is missing."""
    ix = _indices({band: np.array([float(v)]) for band, v in means.items()})
    return {name: float(values[0]) for name, values in ix.items()}


def propose_name(means: Mapping[str, float]) -> tuple[str, str, dict[str, float]]:
    """(name, rule, indices) for a cluster whose mean reflectance per band is ``means``."""
    rules, ix = _rules({band: np.array([float(v)]) for band, v in means.items()})
    name, rule = next((name, rule) for name, rule, holds in rules if holds[0])
    return name, rule, {k: float(v[0]) for k, v in ix.items()}


def pixel_covers(X: np.ndarray, features: Sequence[str]) -> np.ndarray:
    """The land cover the rules give each row of ``X`` (reflectances, columns ``features``):
    the name each pixel would get as a cluster of its own. Object array of names."""
    values = {band: X[:, i] for i, band in enumerate(features) if band in _REFLECTANCES}
    rules, _ = _rules(values)
    names: np.ndarray = np.select(
        [holds for _, _, holds in rules],
        np.array([name for name, _, _ in rules], dtype=object),
        default=UNLABELLED,
    )
    return names


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
    return _distinct(names, {int(i): _brightness(m) for i, m in means_by_id.items()})


#: The qualifiers :func:`_distinct` gives clusters of one name, darkest first, by their count.
_QUALIFIERS = {2: ("darker", "brighter"), 3: ("darkest", "mid-brightness", "brightest")}
_QUALIFIED = re.compile(
    r" \((?:darker|brighter|darkest|mid-brightness|brightest|brightness \d+ of \d+)\)$"
)


def _qualifiers(n: int) -> tuple[str, ...]:
    return _QUALIFIERS.get(n) or tuple(f"brightness {i} of {n}" for i in range(1, n + 1))


def cover_of(name: str) -> str:
    """The land cover of a class name: the name without the brightness qualifier that told two
    clusters of one cover apart ("dense vegetation (darker)" -> "dense vegetation")."""
    return _QUALIFIED.sub("", name)


def _brightness(means: Mapping[str, float]) -> float:
    values = [float(means[b]) for b in _REFLECTANCES if b in means and math.isfinite(means[b])]
    return float(np.mean(values)) if values else math.nan


def _distinct(names: list[ClassName], brightness: Mapping[int, float]) -> list[ClassName]:
    """``names`` with every name that more than one cluster has qualified by brightness, darkest
    first, so that a legend, a GDAL category or a transition never shows one name twice."""
    by_name: dict[str, list[ClassName]] = defaultdict(list)
    for named in names:
        by_name[named.name].append(named)
    renamed: dict[int, ClassName] = {}
    for name, group in by_name.items():
        if len(group) < 2:
            continue
        ordered = sorted(group, key=lambda c: (np.nan_to_num(brightness.get(c.id, 0.0)), c.id))
        for named, qualifier in zip(ordered, _qualifiers(len(group)), strict=True):
            renamed[named.id] = ClassName(
                named.id,
                f"{name} ({qualifier})",
                f"{named.rule}; {qualifier} of the {len(group)} clusters so named "
                "(mean reflectance)",
                named.indices,
            )
    result = [renamed.get(c.id, c) for c in names]
    taken: set[str] = set()
    for index, named in enumerate(result):
        if named.name in taken:  # a qualified name that another class already had, as given
            result[index] = dataclasses.replace(named, name=f"{named.name} #{named.id}")
        taken.add(result[index].name)
    return result


def means_of(signatures: Any) -> dict[int, dict[str, float]]:
    """Cluster id -> mean reflectance per band, from a signatures table (``<band>_mean``)."""
    bands = [b for b in _REFLECTANCES if f"{b}_mean" in signatures]
    return {
        int(row["cluster"]): {b: float(row[f"{b}_mean"]) for b in bands}
        for _, row in signatures.iterrows()
    }
