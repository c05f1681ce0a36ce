"""Storing physical values on the inputs' own integer grid: ``value = DN * scale + offset``.

Collection 2 Level-2 and Sentinel-2 L2A deliver every band as uint16 DN with a scale and offset
(``raster:bands``); :mod:`geocluster_dagster.load` turns them into float32 physical values.
A working raster written back as float32 spends twice the bytes on the same information, and
float mantissas compress badly: the mosaic of a whole Landsat scene is written and decoded
several times faster as uint16 (measured in benchmarks/README.md).

The stored DN is ``round((value - offset) / scale)``: exact for a value read from the inputs
(first clear observation), and within half a DN step for a value between steps (the median of
an even number of dates, a bilinear resample): 1.4e-5 reflectance for Collection 2, 5e-5 for
Sentinel-2, below either product's stated precision. DN 0 is nodata (the inputs' fill), so
valid values are kept within 1..65535, the range a uint16 input can hold.

Readers get the physical values back through GDAL's standard per-band scale/offset, which
QGIS, rioxarray (``mask_and_scale``) and :func:`geocluster_dagster.export.open_cog` apply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: The stored integer type and its nodata: the inputs' own.
DN_DTYPE = np.dtype("uint16")
DN_NODATA = 0
_DN_MAX = int(np.iinfo(DN_DTYPE).max)

#: The stack attribute that carries each band's encoding from the loader to the writers.
STACK_ATTR = "dn_encoding"


@dataclass(frozen=True)
class DnEncoding:
    """Per-band ``(scale, offset)``, in band order, as float32 (the loader's own arithmetic)."""

    scales: tuple[float, ...]
    offsets: tuple[float, ...]

    @classmethod
    def for_bands(cls, attrs: Mapping[str, object], bands: Sequence[str]) -> DnEncoding | None:
        """The encoding of ``bands`` recorded in a stack's ``attrs``; None unless every band
        has one (an index or a band whose items disagree on scale/offset stays float)."""
        recorded = json.loads(str(attrs.get(STACK_ATTR, "{}")))
        if not bands or any(band not in recorded for band in bands):
            return None
        if any(float(recorded[b][0]) <= 0 for b in bands):
            return None
        return cls(
            scales=tuple(float(np.float32(recorded[b][0])) for b in bands),
            offsets=tuple(float(np.float32(recorded[b][1])) for b in bands),
        )

    def _columns(self) -> tuple[np.ndarray, np.ndarray]:
        shape = (len(self.scales), 1, 1)
        return (
            np.asarray(self.scales, dtype="float64").reshape(shape),
            np.asarray(self.offsets, dtype="float64").reshape(shape),
        )

    def encode(self, block: np.ndarray) -> np.ndarray:
        """(band, y, x) physical float block -> uint16 DN, NaN and inf -> :data:`DN_NODATA`."""
        out = np.empty(block.shape, dtype=DN_DTYPE)
        # Band by band, in place, in float64: a whole block's temporaries cost 3x the time
        # (their memory is new to the process, block after block).
        for band, scale, offset in zip(range(len(out)), self.scales, self.offsets, strict=True):
            dn = block[band].astype("float64")
            dn -= offset
            dn /= scale
            np.rint(dn, out=dn)
            invalid = ~np.isfinite(dn)
            np.clip(dn, 1, _DN_MAX, out=dn)
            dn[invalid] = DN_NODATA
            out[band] = dn
        return out

    def physical_summary(self, summary: np.ndarray) -> np.ndarray:
        """A (band, 4) count/sum/min/max summary of DN blocks, in physical units (further
        columns, counts, are kept as they are)."""
        scales, offsets = (c.reshape(-1) for c in self._columns())
        out = summary.astype("float64")
        count = out[:, 0]
        out[:, 1] = out[:, 1] * scales + count * offsets
        out[:, 2:4] = out[:, 2:4] * scales[:, None] + offsets[:, None]  # scales are positive
        return out


def stack_attr(encodings: Mapping[str, tuple[float, float]]) -> str:
    """The :data:`STACK_ATTR` value for per-band ``(scale, offset)``."""
    return json.dumps({band: [float(s), float(o)] for band, (s, o) in encodings.items()})
