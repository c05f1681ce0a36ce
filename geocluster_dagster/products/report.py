"""One self-contained HTML report per partition: what was used, what came out, what the checks say.

The report is read from the partition's products on disk (nothing is recomputed), with every
figure embedded (base64 PNG), so the one file can be opened anywhere or sent by mail: it says
where (the place, its coordinates and area; the maps outline the AOI and carry a scale bar and
a north arrow), when (the window, the scenes' acquisition dates, the processing date), with
what (software versions, the STAC source, the settings the products record) and in which units.
Links to the product files are absolute when the output root is published (``public_url``),
else relative to the report, which lives under ``report/<aoi>/<date>.html``.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import rasterio
from shapely.geometry.base import BaseGeometry

from ..quality import Judgement
from ..remote import redact
from ..storage import atomic_path, write_json
from .geotiff import BANDS, INDICES

#: The figures, in the order an analyst reads them, with their captions.
FIGURES = (
    ("cluster_map", "Cluster map"),
    ("confidence", "Confidence of the labels"),
    ("true_colour", "True colour"),
    ("false_colour", "False colour (NIR, red, green)"),
    ("signatures", "Spectral signatures"),
    ("cluster_sizes", "Cluster sizes"),
    ("silhouette", "Silhouette"),
    ("elbow", "Elbow curve"),
    ("red_nir_density", "Red vs NIR"),
)
CHANGE_FIGURES = (("change_map", "Change map"), ("transitions", "Transitions"))


def checks_file(product: Path) -> Path:
    """Where a product's check verdicts are kept: beside it."""
    return product.with_name(product.name + ".checks.json")


def record_checks(product: Path, judgements: Sequence[Judgement]) -> None:
    """Keep the verdicts of a product's checks beside it (:func:`checks_file`)."""
    write_json([dataclasses.asdict(j) for j in judgements], checks_file(product))


@dataclass(frozen=True)
class Place:
    """Where the map is: the AOI's id, its name and its lon/lat geometry."""

    aoi_id: str
    name: str
    geometry: BaseGeometry

    def describe(self) -> dict[str, str]:
        """The place as a reader of the report needs it: name, centre, bounds, area."""
        from pyproj import Geod

        centre = self.geometry.centroid
        west, south, east, north = self.geometry.bounds
        area_m2, _ = Geod(ellps="WGS84").geometry_area_perimeter(self.geometry)
        return {
            "Place": self.name if self.name == self.aoi_id else f"{self.name} (AOI {self.aoi_id})",
            "Centre": f"{_latitude(centre.y)}, {_longitude(centre.x)} (WGS 84)",
            "Bounds": f"{_latitude(south)} to {_latitude(north)}, "
            f"{_longitude(west)} to {_longitude(east)}",
            "Area": f"{abs(area_m2) / 1e6:,.2f} km²",
        }


def _latitude(value: float) -> str:
    return f"{abs(value):.4f}° {'N' if value >= 0 else 'S'}"


def _longitude(value: float) -> str:
    return f"{abs(value):.4f}° {'E' if value >= 0 else 'W'}"


@dataclass(frozen=True)
class ReportInputs:
    """The partition's products on disk, and what the report says about how they were made."""

    title: str
    items: Path
    mosaic: Path
    geotiff: Path
    clusters: Path
    diagnostics: Path
    change: Path | None = None
    accuracy: Path | None = None
    """The accuracy product, when it assessed this map."""
    place: Place | None = None
    window: str = ""
    """The date window, as people read it (first and last day)."""
    made_with: Mapping[str, Any] = field(default_factory=dict)
    """The settings the products record (the STAC Item's ``processing:lineage``)."""
    software: Mapping[str, str] = field(default_factory=dict)
    source: str = ""
    """The STAC source searched."""
    output_root: Path | None = None
    public_url: str | None = None
    """Where ``output_root`` is published: the file links point there, so that they work in
    the report sent on its own."""


#: The units of the signatures' columns by the unit GDAL records on the band, as a reader
#: expects them written (reflectance is a 0-1 ratio).
UNIT_NAMES = {"reflectance": "reflectance 0–1", "K": "K", "degree_Celsius": "°C", "index": "index"}
#: The units of the signatures' own columns.
COLUMN_UNITS = {
    "pixel_count": "px",
    "fraction": "share 0–1",
    "area_ha": "ha",
    "low_confidence_share": "share 0–1",
    "confidence_mean": "%",
}


def band_units(geotiff: Path) -> dict[str, str]:
    """Each band's unit, as GDAL records it in the geotiff product's files."""
    units = {}
    for name in (BANDS, INDICES):
        if (geotiff / name).exists():
            with rasterio.open(str(geotiff / name)) as src:  # str: the root may be a bucket
                for band, unit in zip(src.descriptions, src.units, strict=True):
                    if band and unit:
                        units[band] = UNIT_NAMES.get(unit, unit)
    return units


def with_units(frame: pd.DataFrame, units: Mapping[str, str]) -> pd.DataFrame:
    """The signature table with every measured column's unit in its header
    (``lst_mean`` -> ``lst mean (°C)``)."""

    def header(column: str) -> str:
        band, _, statistic = column.rpartition("_")
        if statistic in ("mean", "std") and band in units:
            return f"{band} {statistic} ({units[band]})"
        if column in COLUMN_UNITS:
            return f"{column.replace('_', ' ')} ({COLUMN_UNITS[column]})"
        return column

    renamed: pd.DataFrame = frame.rename(columns=header)
    return renamed


def _png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame) -> str:
    rendered: str = frame.to_html(
        index=False, border=0, classes="table", float_format=lambda v: f"{v:,.4g}"
    )
    return rendered


def _link(report: Path, target: Path, text: str, inputs: ReportInputs) -> str:
    """A link to a product file: absolute under ``public_url`` when the root is published,
    else relative to the report; the path within the output root is shown either way."""
    root = inputs.output_root
    within = os.path.relpath(str(target), str(root)) if root else target.name
    if inputs.public_url and root:
        href = f"{inputs.public_url.rstrip('/')}/{Path(within).as_posix()}"
    else:
        href = os.path.relpath(str(target), str(report.parent))
    return (
        f'<a href="{html.escape(href)}">{html.escape(text)}</a> '
        f"<code>{html.escape(Path(within).as_posix())}</code>"
    )


def _source(source: str, root: Path | None) -> str:
    """The STAC source as the report names it: a URL without its query (it may hold a token);
    a catalog inside the output folder by its path there, so that the report names no path of
    the machine that made it."""
    if "://" in source:
        return redact(source)
    prefix = str(root).rstrip("/") + "/" if root is not None else None
    if prefix and source.startswith(prefix):  # strings: the root may be a bucket
        return f"{source.removeprefix(prefix)} (in the output folder)"
    return source


def _setting_text(value: Any) -> str:
    """A recorded setting as a reader reads it: lists joined, mappings as ``key: value``
    without the unset ones."""
    if isinstance(value, Mapping):
        return "; ".join(
            f"{k}: {_setting_text(v)}" for k, v in value.items() if v not in (None, "", [], {})
        )
    if isinstance(value, list | tuple):
        return ", ".join(_setting_text(v) for v in value)
    return str(value)


def _about(inputs: ReportInputs, scenes: pd.DataFrame) -> str:
    """Where, when and how the map was made: the report's first section."""
    facts: dict[str, str] = dict(inputs.place.describe()) if inputs.place else {}
    if inputs.window:
        facts["Date window"] = inputs.window
    if len(scenes):
        days = sorted({str(a)[:10] for a in scenes["acquired"] if a})
        facts["Acquired"] = f"{', '.join(days)} ({len(scenes)} scene(s), UTC dates)"
    facts["Processed"] = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    if inputs.software:
        facts["Software"] = ", ".join(f"{k} {v}" for k, v in inputs.software.items())
    if inputs.source:
        facts["STAC source"] = _source(inputs.source, inputs.output_root)
    for key, value in inputs.made_with.items():
        if value not in (None, "", [], {}):
            facts[f"Setting: {key}"] = _setting_text(value)
    return "<h2>About this map</h2>" + _definitions(facts)


def _definitions(facts: Mapping[str, Any]) -> str:
    """``facts`` as an HTML definition list, escaped."""
    rows = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts.items()
    )
    return f"<dl>{rows}</dl>"


def _checks(products: Sequence[Path]) -> str:
    rows = []
    for product in products:
        path = checks_file(product)
        if not path.exists():
            continue
        for check in json.loads(path.read_text()):
            verdict = "pass" if check["passed"] else check["severity"].upper()
            rows.append(
                {
                    "asset": product.parent.parent.name,
                    "check": check["name"],
                    "result": verdict,
                    "what was measured": check["description"],
                }
            )
    if not rows:
        return "<p>No check results on disk.</p>"
    frame = pd.DataFrame(rows)
    body: str = frame.to_html(index=False, border=0, classes="table checks", escape=True)
    return body.replace("<td>WARN</td>", '<td class="warn">WARN</td>').replace(
        "<td>ERROR</td>", '<td class="error">ERROR</td>'
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0 1.5rem; }
.table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1rem; }
.table th, .table td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #eee; text-align: left; }
.warn { color: #a15c00; font-weight: bold; } .error { color: #b00020; font-weight: bold; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { font-weight: bold; }
"""


def write_report(inputs: ReportInputs, target: Path) -> Path:
    """Write the partition's report to ``target`` (atomically) and return its path."""
    items = json.loads(inputs.items.read_text()).get("features", [])
    summary = json.loads((inputs.clusters / "summary.json").read_text())
    scores = json.loads((inputs.diagnostics / "scores.json").read_text())
    with (inputs.clusters / "signatures.csv").open("rb") as handle:
        signatures = pd.read_csv(handle)
    scenes = pd.DataFrame(
        [
            {
                "scene": f["id"],
                "acquired": str(f["properties"].get("datetime", ""))[:16],
                "cloud %": f["properties"].get("eo:cloud_cover"),
            }
            for f in items
        ]
    )
    choice = summary.get("k_choice") or {}
    facts = {
        "clusters": summary["n_clusters"],
        "k": choice.get("reason", "set in run config (n_clusters)"),
        "model": (summary.get("model") or {}).get("how", "fit"),
        "reference": (summary.get("model") or {}).get("reference") or "none",
        "features": ", ".join(summary["features"]),
        "silhouette": f"{scores['silhouette']:.3f}",
        "Calinski-Harabasz": f"{scores['calinski_harabasz']:,.0f}",
        "Davies-Bouldin": f"{scores['davies_bouldin']:.3f}",
    }
    columns = [
        c
        for c in ("cluster", "name", "pixel_count", "area_ha", "fraction", "low_confidence_share")
        if c in signatures
    ]
    means = [c for c in signatures.columns if c.endswith("_mean")]
    units = band_units(inputs.geotiff)
    parts = [
        f"<h1>{html.escape(inputs.title)}</h1>",
        _about(inputs, scenes),
        "<h2>Checks</h2>",
        _checks(
            [inputs.items, inputs.mosaic, inputs.geotiff, inputs.clusters, inputs.diagnostics]
            + ([inputs.change] if inputs.change else [])
        ),  # fmt: skip
        "<h2>Scenes used</h2>",
        _table(scenes) if len(scenes) else "<p>No scene.</p>",
        "<h2>Clustering</h2>" + _definitions(facts),
        _table(with_units(signatures[columns], units)),
        "<h3>Mean signature per cluster</h3>",
        _table(
            with_units(
                signatures[["cluster", *(["name"] if "name" in signatures else []), *means]], units
            )
        ),
    ]
    for stem, caption in FIGURES:
        png = inputs.diagnostics / f"{stem}.png"
        if png.exists():
            parts += [f"<h2>{caption}</h2>", _png(png)]
    if inputs.change is not None and (inputs.change / "summary.json").exists():
        change = json.loads((inputs.change / "summary.json").read_text())
        confident = change.get("confident") or {}
        stable = change.get("stable_areas")
        largest = "; ".join(html.escape(t) for t in change["largest_transitions"])
        model = (change.get("model") or {}).get("description")
        parts.append(
            f"<h2>Change since {html.escape(str(change['from_date']))}</h2><p>"
            + (
                f"Both dates classified by {html.escape(model)}, so an id means the same "
                "cluster in both. "
                if model
                else ""
            )
            + f"{change['changed_share']:.1%} of the compared pixels changed land cover "
            f"({change['changed_hectares']:,.1f} ha); "
            f"{change.get('same_cover_share', 0):.1%} moved to another cluster of the same cover "
            "(not counted as change). "
            + (
                f"Among the pixels both dates label confidently, "
                f"{confident['changed_share']:.1%} changed. "
                if confident
                else ""
            )
            + (
                f"In the areas marked stable, {stable['changed_share']:.1%} changed. "
                if stable
                else ""
            )
            + (
                f"Only pixels both dates label confidently were compared (confident_only): "
                f"{change['left_out_share']:.1%} of those both dates label were left out. "
                if change.get("confident_only")
                else ""
            )
            + (f"Largest transitions: {largest}." if largest else "No land cover changed.")
            + "</p>"
        )
        for stem, caption in CHANGE_FIGURES:
            png = inputs.change / f"{stem}.png"
            if png.exists():
                parts += [f"<h3>{caption}</h3>", _png(png)]
    if inputs.accuracy is not None:
        parts += _accuracy_section(inputs.accuracy)
    files = [
        (inputs.geotiff / BANDS, "GeoTIFF of the spectral bands"),
        (inputs.geotiff / INDICES, "GeoTIFF of the spectral indices"),
        (inputs.clusters / "cluster_map.tif", "cluster map"),
        (inputs.clusters / "signatures.csv", "signatures"),
        (inputs.clusters / "model.json", "model"),
        (inputs.items, "STAC items searched"),
    ]
    where = (
        f"published at {html.escape(inputs.public_url)}"
        if inputs.public_url and inputs.output_root
        else "in the output folder, at these paths within it; the links work when this report "
        "is opened in that folder (set the output store's public_url, env "
        "GEOCLUSTER_PUBLIC_URL, to where the folder is published for links that work anywhere)"
    )
    parts += [f"<h2>Files</h2><p>The products are {where}.</p><ul>"] + [
        f"<li>{_link(target, path, text, inputs)}</li>" for path, text in files if path.exists()
    ] + ["</ul>"]  # fmt: skip
    document = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(inputs.title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    with atomic_path(target) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return target


def _accuracy_section(folder: Path) -> list[str]:
    """The map's accuracy against the AOI's reference data: the estimates with their 95 %
    intervals, per class, the error matrix figure and the caveats."""
    document = json.loads((folder / "accuracy.json").read_text())
    low, high = document["overall_accuracy_ci95"]
    classes = pd.DataFrame(document["classes"])
    shown = classes[
        ["class", "samples_mapped", "users_accuracy", "users_accuracy_ci95",
         "producers_accuracy", "producers_accuracy_ci95", "mapped_ha", "estimated_ha",
         "estimated_ha_ci95"]
    ].round(3)  # fmt: skip
    parts = [
        "<h2>Accuracy</h2>",
        f"<p>Overall accuracy {document['overall_accuracy']:.1%} (95 % interval {low:.1%} to "
        f"{high:.1%}) on {document['samples']:,} reference samples of "
        f"<code>{html.escape(Path(str(document['reference_data'])).name)}</code> "
        f"({html.escape(str(document['method']))}). Accuracies are shares (0-1) with the "
        "half-width of their 95 % interval; areas in hectares.</p>",
        _table(shown),
    ]
    figure = folder / "error_matrix.png"
    if figure.exists():
        parts.append(_png(figure))
    parts.append("<p>" + " ".join(html.escape(c) for c in document.get("caveats", [])) + "</p>")
    return parts


def report_facts(report: Path) -> dict[str, Any]:
    """Size and figure count of a written report, for metadata."""
    text = report.read_text(encoding="utf-8")
    return {"bytes": report.stat().st_size, "figures": text.count("data:image/png;base64,")}
