"""One self-contained HTML report per partition: what was used, what came out, what the checks say.

The report is read from the partition's products on disk (nothing is recomputed), with every
figure embedded (base64 PNG), so the one file can be opened anywhere or sent by mail. Links to
the product files are relative to the report, which lives under ``report/<aoi>/<date>.html``.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..quality import Judgement
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
class ReportInputs:
    """The partition's products on disk."""

    title: str
    items: Path
    mosaic: Path
    geotiff: Path
    clusters: Path
    diagnostics: Path
    change: Path | None = None
    accuracy: Path | None = None
    """The accuracy product, when it assessed this map."""


def _png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame) -> str:
    rendered: str = frame.to_html(
        index=False, border=0, classes="table", float_format=lambda v: f"{v:,.4g}"
    )
    return rendered


def _link(report: Path, target: Path, text: str) -> str:
    return f'<a href="{html.escape(os.path.relpath(str(target), str(report.parent)))}">{html.escape(text)}</a>'


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
    parts = [
        f"<h1>{html.escape(inputs.title)}</h1>",
        "<h2>Checks</h2>",
        _checks(
            [inputs.items, inputs.mosaic, inputs.geotiff, inputs.clusters, inputs.diagnostics]
            + ([inputs.change] if inputs.change else [])
        ),  # fmt: skip
        "<h2>Scenes used</h2>",
        _table(scenes) if len(scenes) else "<p>No scene.</p>",
        "<h2>Clustering</h2><dl>"
        + "".join(
            f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts.items()
        )
        + "</dl>",
        _table(signatures[columns]),
        "<h3>Mean signature per cluster</h3>",
        _table(signatures[["cluster", *(["name"] if "name" in signatures else []), *means]]),
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
    parts += ["<h2>Files</h2><ul>"] + [
        f"<li>{_link(target, path, text)}</li>" for path, text in files if path.exists()
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
