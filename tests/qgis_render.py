"""Open rasters in QGIS as a user does (default renderer, no style given) and render each.

Run by Debian's python3 with python3-qgis (not the project's venv), from tests/helpers.py:

    python3 tests/qgis_render.py OUT.json PNG_FOLDER FILE.tif [FILE.tif ...]

Writes, per file: whether QGIS opened it, its band count, the renderer QGIS chose, the
paletted renderer's classes (value, label, colour), and the share of the rendered image's
pixels in each colour (``#rrggbb``, transparent ones left out), with the PNG it rendered.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    Qgis,
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402

SIZE = 256


def render(path: Path, png: Path) -> dict:
    layer = QgsRasterLayer(str(path), path.stem)
    facts: dict = {"valid": layer.isValid(), "qgis": Qgis.QGIS_VERSION}
    if not layer.isValid():
        return facts
    renderer = layer.renderer()
    facts.update(bands=layer.bandCount(), renderer=renderer.type())
    if renderer.type() == "paletted":
        facts["classes"] = [
            {"value": int(c.value), "label": c.label, "colour": c.color.name()}
            for c in renderer.classes()
        ]
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(QSize(SIZE, SIZE))
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    image.save(str(png))
    colours: Counter[str] = Counter()
    for y in range(image.height()):
        for x in range(image.width()):
            colour = image.pixelColor(x, y)
            if colour.alpha() > 0:
                colours[colour.name()] += 1
    total = sum(colours.values()) or 1
    facts["colour_shares"] = {c: n / total for c, n in colours.most_common()}
    return facts


def main(argv: list[str]) -> int:
    out, folder, files = Path(argv[1]), Path(argv[2]), [Path(a) for a in argv[3:]]
    app = QgsApplication([], False)
    app.initQgis()
    try:
        results = {str(f): render(f, folder / f"{f.stem}.png") for f in files}
    finally:
        app.exitQgis()
    out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
