"""Figures and maps as images the Dagster UI shows: markdown data-URI PNGs of a bounded size.

The UI opens a markdown metadata entry in a modal that draws its image at the image's own
pixel size (up to 80 % of the window), so an entry must carry the figure at a size that can be
read: :data:`UI_IMAGE_PX` on the longer side. Each entry is stored in the event log of every
materialization, so it is quantized to a 64-colour palette (a plot or a class map loses nothing
visible) and shrunk further if it would pass :data:`UI_IMAGE_CHARS`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from rasterio.enums import Resampling

from .errors import AssetReadError
from .storage import location

if TYPE_CHECKING:
    from PIL.Image import Image

#: Longer side, in pixels, of every image the UI shows (it fits the modal of a 1600 px window).
UI_IMAGE_PX = 1000
#: Longest markdown entry of one image, in characters (~110 kB of PNG).
UI_IMAGE_CHARS = 150_000
#: The maps every materialization carries (the cluster map, the change map): smaller, as each
#: is stored in the event log of every partition (the files and the report have them in full).
UI_MAP_PX = 600
UI_MAP_CHARS = 20_000


def figure_markdown(
    png_path: Path | str, max_px: int = UI_IMAGE_PX, max_chars: int = UI_IMAGE_CHARS
) -> str:
    """A PNG figure as a markdown data-URI image of at most ``max_px`` and ``max_chars``."""
    from PIL import Image  # Pillow ships with matplotlib

    png_path = location(png_path)
    try:
        with png_path.open("rb") as handle, Image.open(handle) as image:
            rgba = image.convert("RGBA")
    except OSError as exc:
        raise AssetReadError(f"cannot read the plot {png_path} for the UI: {exc}.") from exc
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return _markdown(flat, png_path.stem, max_px, max_chars, smooth=True)


def class_map_markdown(
    tif_path: Path | str,
    max_px: int = UI_IMAGE_PX,
    max_chars: int = UI_IMAGE_CHARS,
    *,
    legend: Sequence[tuple[int, str, float]] = (),
) -> str:
    """A single-band class map (a GeoTIFF with a colour table) as a markdown image, drawn in
    its own colours from its overviews (never at full resolution); nodata is white.

    ``legend`` rows (class value, name, share of the map) follow the image as a table, each
    with a swatch of the class's colour, so the map can be read without leaving the UI."""
    from PIL import Image

    tif_path = location(tif_path)
    try:
        with rasterio.open(str(tif_path)) as src:
            # A small AOI is drawn larger (each pixel a block), a scene smaller (from overviews).
            scale = max(src.height, src.width) / max_px
            shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
            labels = src.read(1, out_shape=shape, resampling=Resampling.nearest)
            try:
                table = src.colormap(1)
            except ValueError as err:  # no colour table
                raise AssetReadError(f"{tif_path} has no colour table to draw it with.") from err
    except rasterio.errors.RasterioIOError as exc:
        raise AssetReadError(f"cannot read the map {tif_path} for the UI: {exc}.") from exc
    lookup = np.full((256, 3), 255, dtype=np.uint8)
    for value, (r, g, b, alpha) in table.items():
        if alpha and 0 <= value < 256:
            lookup[value] = (r, g, b)
    image = Image.fromarray(lookup[labels.astype(np.uint8)], mode="RGB")
    markdown = _markdown(image, tif_path.stem, max_px, max_chars, smooth=False)  # no blending
    if not legend:
        return markdown
    rows = ["| colour | class | name | share of the map |", "|---|---|---|---|"]
    rows += [
        f"| {_swatch(lookup[value])} | {value} | {name} | {share:.1%} |"
        for value, name, share in legend
    ]
    return markdown + "\n\n" + "\n".join(rows)


def _swatch(rgb: np.ndarray, px: int = 18) -> str:
    """A ``px`` square of one colour as a markdown data-URI image (about 100 characters)."""
    from PIL import Image

    return _png_markdown(Image.new("RGB", (px, px), tuple(int(c) for c in rgb)), "")


def _png_markdown(image: Image, alt: str) -> str:
    """``image`` as a markdown image of a PNG data URI (zlib's default level: ``optimize``
    costs 4x the time for 3 % fewer bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')})"


def _markdown(image: Image, alt: str, max_px: int, max_chars: int, *, smooth: bool) -> str:
    from PIL import Image as PILImage

    resample = PILImage.Resampling.LANCZOS if smooth else PILImage.Resampling.NEAREST
    size = max_px
    while True:
        small = image.copy()
        small.thumbnail((size, size), resample)
        # Octree: 20x faster than median cut on a 1000 px figure, and a smaller PNG of it.
        small = small.quantize(colors=64, method=PILImage.Quantize.FASTOCTREE)
        markdown = _png_markdown(small, alt)
        if len(markdown) <= max_chars or size <= 32:
            return markdown
        # A PNG's size goes roughly with its area: aim just under the limit in one step.
        size = max(32, int(size * min(0.8, 0.95 * (max_chars / len(markdown)) ** 0.5)))
