"""Cloud, shadow and fill masks from Landsat QA_PIXEL bits, Sentinel-2 SCL classes and Fmask codes.

Every function is element-wise, so it works the same on numpy arrays, dask arrays and
xarray objects. Masks are boolean with True meaning *unusable* (masked).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, get_args

from .errors import ConfigError

#: Landsat Collection 2 QA_PIXEL single-bit flags (USGS Landsat 8-9 C2 L2 Science Product Guide).
QA_PIXEL_BITS: dict[str, int] = {
    "fill": 0,
    "dilated_cloud": 1,
    "cirrus": 2,  # OLI only; always 0 for Landsat 4-7
    "cloud": 3,
    "cloud_shadow": 4,
    "snow": 5,
    "clear": 6,
    "water": 7,
}

#: Sentinel-2 L2A Scene Classification (SCL) class values.
SCL_CLASSES: dict[int, str] = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area_pixels",
    3: "cloud_shadows",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow",
}

#: Fmask codes as written by LEDAPS / CFMask (e.g. the mask band of ESPA Landsat 4-7 stacks).
FMASK_CODES: dict[str, tuple[int, ...]] = {
    "clear": (0,),
    "water": (1,),
    "cloud_shadow": (2,),
    "snow": (3,),
    "cloud": (4,),
    "fill": (255,),
}

#: Every flag name `mask_flags` accepts. Each QA encoding ignores the flags it does not have
#: (QA_PIXEL has no "saturated"/"dark_area" class, SCL no "dilated_cloud", Fmask no "cirrus").
MaskFlag = Literal[
    "fill", "dilated_cloud", "cirrus", "cloud", "cloud_shadow", "snow", "saturated", "dark_area"
]
MASKABLE_FLAGS: tuple[MaskFlag, ...] = get_args(MaskFlag)

#: Flags masked by default: whatever hides the surface. These are the QA_PIXEL bits 0-4 that
#: the canonical Collection 2 recipe masks (``QA_PIXEL & 0b11111``: fill, dilated cloud,
#: cirrus, cloud, cloud shadow; USGS, Landsat 8-9 Collection 2 Level 2 Science Product Guide,
#: LSDS-1619, table 6-3). Snow and ice are land cover, not an obstruction: on an ice sheet they
#: are every clear pixel. Add "snow" to mask them too.
DEFAULT_MASK_FLAGS: tuple[MaskFlag, ...] = (
    "fill",
    "dilated_cloud",
    "cirrus",
    "cloud",
    "cloud_shadow",
)

#: The same flag names expressed as SCL classes. "dilated_cloud" has no SCL counterpart.
SCL_FLAG_CLASSES: dict[str, tuple[int, ...]] = {
    "fill": (0,),
    "saturated": (1,),
    "dark_area": (2,),
    "cloud_shadow": (3,),
    "cloud": (8, 9),
    "cirrus": (10,),
    "snow": (11,),
    "dilated_cloud": (),
}


def _check_flags(flags: Iterable[str]) -> tuple[str, ...]:
    flags = tuple(flags)
    unknown = sorted(set(flags) - set(MASKABLE_FLAGS))
    if unknown:
        raise ConfigError(
            f"Unknown mask flag(s) {unknown}; `mask_flags` takes {list(MASKABLE_FLAGS)}."
        )
    return flags


def qa_pixel_flag(qa: Any, flag: str) -> Any:
    """True where the single-bit QA_PIXEL ``flag`` is set."""
    if flag not in QA_PIXEL_BITS:
        raise ConfigError(f"Unknown QA_PIXEL flag {flag!r}; known flags: {sorted(QA_PIXEL_BITS)}.")
    return (qa & (1 << QA_PIXEL_BITS[flag])) != 0


def qa_pixel_confidence(qa: Any, which: str) -> Any:
    """Two-bit confidence (0 none, 1 low, 2 medium, 3 high) of 'cloud', 'cloud_shadow', 'snow' or 'cirrus'."""
    first_bit = {"cloud": 8, "cloud_shadow": 10, "snow": 12, "cirrus": 14}[which]
    return (qa >> first_bit) & 0b11


def qa_pixel_mask(qa: Any, flags: Iterable[str] = DEFAULT_MASK_FLAGS) -> Any:
    """True where any of ``flags`` is set in a Landsat Collection 2 QA_PIXEL band."""
    bits = 0
    for flag in _check_flags(flags):
        if flag in QA_PIXEL_BITS:
            bits |= 1 << QA_PIXEL_BITS[flag]
    return (qa & bits) != 0


def _in_classes(values: Any, classes: Iterable[int]) -> Any:
    classes = tuple(classes)
    if not classes:
        return values != values  # all False, same type and shape as the input
    masked = values == classes[0]
    for value in classes[1:]:
        masked = masked | (values == value)
    return masked


def scl_mask(scl: Any, flags: Iterable[str] = DEFAULT_MASK_FLAGS) -> Any:
    """True where a Sentinel-2 SCL pixel belongs to a class named by ``flags``."""
    flags = _check_flags(flags)
    return _in_classes(scl, [c for flag in flags for c in SCL_FLAG_CLASSES[flag]])


def fmask_mask(fmask: Any, flags: Iterable[str] = DEFAULT_MASK_FLAGS) -> Any:
    """True where an Fmask code is one of ``flags`` (flags Fmask lacks, e.g. cirrus, are ignored)."""
    flags = _check_flags(flags)
    return _in_classes(fmask, [c for flag in flags for c in FMASK_CODES.get(flag, ())])


def mask_reasons(qa: Any, kind: str, flags: Iterable[str]) -> Any:
    """uint16 bit field: bit ``MASKABLE_FLAGS.index(flag)`` set where ``flag`` (one of
    ``flags``) masks the pixel, so a failed partition can say which flag removed its pixels."""
    reasons = (qa != qa).astype("uint16")  # zeros, same type and shape as the input
    for flag in _check_flags(flags):
        hit = qa_mask(qa, kind, (flag,)).astype("uint16")
        reasons = reasons | (hit << MASKABLE_FLAGS.index(flag))
    return reasons


def qa_mask(qa: Any, kind: str, flags: Iterable[str] = DEFAULT_MASK_FLAGS) -> Any:
    """Dispatch on the QA encoding: ``"qa_pixel"``, ``"scl"`` or ``"fmask"``."""
    if kind == "qa_pixel":
        return qa_pixel_mask(qa, flags)
    if kind == "scl":
        return scl_mask(qa, flags)
    if kind == "fmask":
        return fmask_mask(qa, flags)
    raise ConfigError(f"Unknown QA kind {kind!r}; expected 'qa_pixel', 'scl' or 'fmask'.")
