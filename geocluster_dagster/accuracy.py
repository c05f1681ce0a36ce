"""How accurate a class map is against reference data: Olofsson et al.'s area-weighted estimates.

Olofsson, Foody, Herold, Stehman, Woodcock & Wulder (2014), *Good practices for estimating area
and assessing accuracy of land change*, Remote Sensing of Environment 148: 42-57 (equations 2-10):
with the map classes as strata, each class ``i`` mapped over a share ``W_i`` of the map and
``n_ij`` reference samples of map class ``i`` labelled ``j``,

* the estimated area proportion of cell (i, j) is ``p_ij = W_i n_ij / n_i.``;
* overall accuracy ``O = sum_j p_jj``, user's accuracy ``U_i = p_ii / p_i.`` and producer's
  accuracy ``P_j = p_jj / p_.j``;
* their standard errors are eq. 5-7, and the area of reference class ``j`` is ``A p_.j`` with
  standard error ``A sqrt(sum_i W_i^2 (n_ij/n_i.)(1 - n_ij/n_i.) / (n_i. - 1))`` (eq. 10);
* 95 % confidence intervals are +-1.96 standard errors.

An unsupervised map's classes are clusters: each is matched to a reference label first (by name
when a cluster's land-cover name is a reference label, else the label most of its reference
samples carry: :func:`match_clusters`), and clusters matched to one label form one map class.

The estimates assume the reference samples are a random sample within each map class. Training
polygons are not (they sit where the classes are clear): their accuracy is optimistic, and
pixels of one polygon are not independent samples (the intervals are too narrow). Both are said
in the result (:attr:`Accuracy.caveats`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError

#: Two-sided 95 % normal quantile (Olofsson et al. 2014 use +-1.96 SE).
Z95 = 1.96
#: The map class of clusters no reference sample and no name ties to a label.
UNMATCHED = "unmatched"


@dataclass(frozen=True)
class Matching:
    """Which reference label each cluster stands for, and why."""

    label_of: dict[int, str]
    """Cluster id -> reference label (or :data:`UNMATCHED`)."""
    how: dict[int, str]
    """Cluster id -> 'name', 'majority' or 'none'."""


@dataclass(frozen=True)
class Reference:
    """Reference samples: geometries (points or polygons, in ``crs``) and their labels."""

    geometries: list[Any]
    labels: list[str]
    crs: str
    source: str


def read_reference(path: str | Path, label_column: str) -> Reference:
    """The features of a GeoJSON, GeoPackage or shapefile and their ``label_column`` (pyogrio,
    GDAL's vector drivers). A file that cannot be read, has no such column, no CRS or no
    labelled feature is refused, naming the file and the setting."""
    import pyogrio.raw
    import shapely

    where = f"the reference data {str(path)!r}"
    try:
        meta, _, wkb, fields = pyogrio.raw.read(str(path), columns=[label_column])
    except Exception as err:  # pyogrio raises its own errors for unreadable files
        raise ConfigError(
            f"Cannot read {where} ({err}): give a GeoJSON, GeoPackage or shapefile of points or "
            "polygons (the AOI registry's `reference_data`)."
        ) from err
    if label_column not in list(meta["fields"]):
        raise ConfigError(
            f"{where} has no column {label_column!r}: set the AOI registry's "
            "`reference_label` to one of its columns."
        )
    if not meta.get("crs"):
        raise ConfigError(f"{where} declares no coordinate reference system: save it with one.")
    geometries, labels = [], []
    for blob, label in zip(wkb, fields[0], strict=True):
        if blob is None or label is None or str(label).strip() == "":
            continue
        geometry = shapely.from_wkb(blob)
        if geometry.is_empty or geometry.geom_type not in (
            "Point", "MultiPoint", "Polygon", "MultiPolygon",
        ):  # fmt: skip
            continue
        geometries.append(geometry)
        labels.append(str(label).strip())
    if not geometries:
        raise ConfigError(
            f"{where} has no point or polygon with a {label_column!r} label: nothing to "
            "assess the map against."
        )
    return Reference(geometries, labels, str(meta["crs"]), str(path))


def sample_map(map_path: str | Path, reference: Reference) -> pd.DataFrame:
    """One row (``cluster``, ``label``) per reference sample on a mapped pixel: each point's
    pixel, each pixel whose centre a polygon covers. Read window by window, only where the
    reference lies (never the whole map)."""
    import rasterio
    import rasterio.features
    from odc.geo.geom import Geometry
    from rasterio.windows import from_bounds

    rows: list[pd.DataFrame] = []
    with rasterio.open(str(map_path)) as src:
        crs = src.crs.to_wkt()
        labels = sorted(set(reference.labels))
        code = {label: index + 1 for index, label in enumerate(labels)}
        points: list[tuple[float, float]] = []
        point_labels: list[str] = []
        shapes: list[tuple[Any, int]] = []
        for geometry, label in zip(reference.geometries, reference.labels, strict=True):
            projected = Geometry(geometry, reference.crs).to_crs(crs).geom
            if projected.geom_type in ("Point", "MultiPoint"):
                for point in getattr(projected, "geoms", [projected]):
                    points.append((point.x, point.y))
                    point_labels.append(label)
            else:
                shapes.append((projected, code[label]))
        if points:
            mapped = np.array([v[0] for v in src.sample(points, indexes=1)])
            rows.append(pd.DataFrame({"cluster": mapped, "label": point_labels}))
        for shape, value in shapes:
            left, bottom, right, top = shape.bounds
            # The pixels whose centres the polygon can cover: its bounds, out to whole pixels.
            window = from_bounds(left, bottom, right, top, transform=src.transform)
            col0, row0 = int(np.floor(window.col_off)), int(np.floor(window.row_off))
            col1 = int(np.ceil(window.col_off + window.width))
            row1 = int(np.ceil(window.row_off + window.height))
            col0, row0 = max(col0, 0), max(row0, 0)
            col1, row1 = min(col1, src.width), min(row1, src.height)
            if col1 <= col0 or row1 <= row0:
                continue
            window = rasterio.windows.Window(col0, row0, col1 - col0, row1 - row0)
            inside = rasterio.features.rasterize(
                [(shape, value)],
                out_shape=(int(window.height), int(window.width)),
                transform=src.window_transform(window),
                fill=0,
                dtype="uint16",
            )
            covered = inside > 0
            if covered.any():
                block = src.read(1, window=window)
                rows.append(pd.DataFrame({"cluster": block[covered], "label": labels[value - 1]}))
    pairs = (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame({"cluster": pd.Series(dtype="uint8"), "label": pd.Series(dtype=str)})
    )
    mapped_only: pd.DataFrame = pairs[pairs["cluster"] != 0].reset_index(drop=True)  # 0: nodata
    return mapped_only


def match_clusters(
    pairs: pd.DataFrame, names: Mapping[int, str], labels: Sequence[str]
) -> Matching:
    """Each cluster's reference label: its own name when that is one of ``labels`` (case and
    spaces ignored), else the label most of its reference samples carry (``pairs``: one row
    per sample, columns ``cluster`` and ``label``), else :data:`UNMATCHED`."""
    canonical = {_key(label): label for label in labels}
    label_of: dict[int, str] = {}
    how: dict[int, str] = {}
    for cluster, name in names.items():
        named = canonical.get(_key(name))
        if named is not None:
            label_of[cluster], how[cluster] = named, "name"
            continue
        own = pairs.loc[pairs["cluster"] == cluster, "label"]
        if len(own):
            counts = own.value_counts()
            # ties go to the alphabetically first label: the same data, the same matching
            best = sorted(counts[counts == counts.max()].index.astype(str))[0]
            label_of[cluster], how[cluster] = best, "majority"
        else:
            label_of[cluster], how[cluster] = UNMATCHED, "none"
    return Matching(label_of=label_of, how=how)


def _key(text: str) -> str:
    return " ".join(str(text).lower().replace("_", " ").split())


@dataclass(frozen=True)
class Accuracy:
    """Olofsson et al.'s estimates for one map against its reference samples."""

    matrix: pd.DataFrame
    """Sample counts ``n_ij``: rows map classes, columns reference labels."""
    proportions: pd.DataFrame
    """Estimated area proportions ``p_ij`` (rows sum to each class's mapped share ``W_i``)."""
    overall: float
    overall_se: float
    per_class: pd.DataFrame
    """One row per class: mapped and estimated area (ha) with SE, user's and producer's
    accuracy with SE and 95 % interval, samples."""
    unsampled_share: float
    """Share of the map in classes without any reference sample, left out of the estimates."""
    caveats: list[str] = field(default_factory=list)

    @property
    def overall_ci(self) -> tuple[float, float]:
        return (self.overall - Z95 * self.overall_se, self.overall + Z95 * self.overall_se)

    def as_dict(self) -> dict[str, Any]:
        return {
            "overall_accuracy": round(self.overall, 6),
            "overall_accuracy_se": round(self.overall_se, 6),
            "overall_accuracy_ci95": [round(v, 6) for v in self.overall_ci],
            "unsampled_share_of_map": round(self.unsampled_share, 6),
            "classes": json_records(self.per_class),
            "error_matrix": {
                str(row): {str(c): int(v) for c, v in values.items()}
                for row, values in self.matrix.iterrows()
            },
            "method": "Olofsson et al. 2014, Remote Sensing of Environment 148: 42-57",
            "caveats": self.caveats,
        }


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain JSON values (NaN -> None)."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append(
            {
                str(k): (None if isinstance(v, float) and not np.isfinite(v) else _plain(v))
                for k, v in row.items()
            }
        )
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return round(float(value), 6)
    return value


def assess(
    pairs: pd.DataFrame,
    names: Mapping[int, str],
    cluster_pixels: Mapping[int, int],
    pixel_area_ha: float,
) -> tuple[Accuracy, Matching]:
    """The accuracy of a cluster map from its reference ``pairs`` (:func:`sample_map`): the
    clusters matched to labels (:func:`match_clusters`), their pixels (``cluster_pixels``)
    pooled per label, then :func:`estimate`."""
    labels = sorted(set(pairs["label"].astype(str)))
    matching = match_clusters(pairs, names, labels)
    mapped_class = pairs["cluster"].map(lambda c: matching.label_of.get(int(c), UNMATCHED))
    counts = pd.crosstab(mapped_class, pairs["label"].astype(str))
    mapped: dict[str, int] = {}
    for cluster, pixels in cluster_pixels.items():
        label = matching.label_of.get(int(cluster), UNMATCHED)
        mapped[label] = mapped.get(label, 0) + int(pixels)
    return estimate(counts, mapped, pixel_area_ha), matching


def estimate(
    counts: pd.DataFrame, mapped_pixels: Mapping[str, int], pixel_area_ha: float
) -> Accuracy:
    """Olofsson et al.'s estimates from ``counts`` (sample counts: rows map classes, columns
    reference labels) and each map class's ``mapped_pixels``.

    Classes mapped but never sampled cannot be estimated: their share of the map is reported
    (:attr:`Accuracy.unsampled_share`) and the others are weighted among themselves."""
    if counts.empty or counts.values.sum() == 0:
        raise ConfigError(
            "No reference sample falls on a mapped pixel: check that the reference data covers "
            "the AOI and its label column names classes."
        )
    classes = sorted(set(counts.index) | set(counts.columns))
    n = counts.reindex(index=classes, columns=classes, fill_value=0).astype(float)
    mapped = pd.Series({c: float(mapped_pixels.get(c, 0)) for c in classes})
    total_pixels = float(sum(mapped_pixels.values()))
    row_n = n.sum(axis=1)
    sampled = (row_n > 0) & (mapped > 0)
    unsampled_share = float(mapped[~sampled].sum() / total_pixels) if total_pixels else 0.0
    strata = [c for c in classes if sampled[c]]
    W = mapped[strata] / mapped[strata].sum()
    share = n.loc[strata].div(row_n[strata], axis=0)  # n_ij / n_i.
    p = share.mul(W, axis=0)  # p_ij
    overall = float(sum(p.loc[c, c] for c in strata))
    denominator = (row_n[strata] - 1).where(row_n[strata] > 1)
    user = pd.Series({c: share.loc[c, c] for c in strata})
    overall_var = float((W**2 * user * (1 - user) / denominator).fillna(0).sum())
    column_p = p.sum(axis=0)
    area_total_ha = mapped[strata].sum() * pixel_area_ha
    N = mapped[strata]  # N_i.: map class populations, in pixels
    N_ref = share.mul(N, axis=0).sum(axis=0)  # estimated reference populations N_.j
    rows = []
    for c in classes:
        diagonal = float(p.loc[c, c]) if c in strata else 0.0
        producer = diagonal / column_p[c] if column_p[c] > 0 else np.nan
        user_c = float(user[c]) if c in strata else np.nan
        user_var = user_c * (1 - user_c) / denominator[c] if c in strata else np.nan
        # eq. 7: the producer's accuracy's variance, over the estimated reference population
        producer_var = np.nan
        if np.isfinite(producer) and N_ref[c] > 0:
            own = N[c] ** 2 * (1 - producer) ** 2 * user_var if c in strata else 0.0
            others = sum(
                N[i] ** 2 * share.loc[i, c] * (1 - share.loc[i, c]) / denominator[i]
                for i in strata
                if i != c and np.isfinite(denominator[i])
            )
            producer_var = (own + producer**2 * others) / N_ref[c] ** 2
        # eq. 10: the standard error of the estimated area proportion of reference class c
        area_se = float(np.sqrt((W**2 * share[c] * (1 - share[c]) / denominator).fillna(0).sum()))
        rows.append(
            {
                "class": c,
                "samples_mapped": int(row_n[c]),
                "samples_reference": int(n[c].sum()),
                "mapped_ha": float(mapped[c] * pixel_area_ha),
                "estimated_ha": float(column_p[c] * area_total_ha),
                "estimated_ha_ci95": Z95 * area_se * area_total_ha,
                "users_accuracy": user_c,
                "users_accuracy_ci95": Z95 * float(np.sqrt(user_var)),
                "producers_accuracy": producer,
                "producers_accuracy_ci95": Z95 * float(np.sqrt(producer_var)),
            }
        )
    caveats = [
        "The estimates assume the reference samples are a random sample within each map "
        "class (Olofsson et al. 2014). Training polygons are not: their accuracy is "
        "optimistic, and pixels of one polygon are not independent (intervals too narrow).",
    ]
    if unsampled_share:
        caveats.append(
            f"{unsampled_share:.1%} of the map is in classes no reference sample falls in: "
            "left out of the estimates."
        )
    return Accuracy(
        matrix=n.astype(int),
        proportions=p,
        overall=overall,
        overall_se=float(np.sqrt(overall_var)),
        per_class=pd.DataFrame(rows),
        unsampled_share=unsampled_share,
        caveats=caveats,
    )
