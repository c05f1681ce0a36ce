"""The clusters product of one partition: a folder with the map, the model and what describes it.

``cluster_map.tif`` (COG, uint8, 1..k, 0 = nodata, the GeoTIFF's grid), ``model.json`` (plain
parameters, see :mod:`geocluster_dagster.model_file`),
``signatures.csv``/``.json`` (per-cluster mean/std of every band, pixel count, area, fraction),
``fit_sample.npy`` (the pixels the model was fitted on, for scores downstream) and
``summary.json``. The folder is written whole or not at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from .. import __version__
from ..blocks import CHUNK_SIZE
from ..categories import BandCategories, class_colours, write_pam
from ..cluster import (
    CONFIDENCE_NODATA,
    CONFIDENT_SILHOUETTE,
    ClusterSettings,
    FittedClusterer,
    LabelledBlocks,
    fit_clusterer,
    pixel_area_m2,
    sample_valid_pixels,
)
from ..density import DensityGrid
from ..errors import AssetReadError, ConfigError
from ..evaluate import ELBOW_SAMPLE_SIZE, KChoice, choose_k, elbow_curve, subsample_index
from ..export import BlockSink, open_single_band, write_cog
from ..model_file import load_model, model_digest, save_model
from ..naming import ClassName, NamingSettings, means_of, name_clusters
from ..preview import UI_MAP_CHARS, UI_MAP_PX, class_map_markdown
from ..progress import heartbeat
from ..quality import ClusterQuality, Judgement, judge_clusters
from ..reference import MATCH_MAX_DISTANCE, Match, check_features, match_to_reference
from ..sieve import SieveSettings, sieved_blocks, unit_in_pixels
from ..storage import atomic_path, published, reference_from, write_json
from .described import (
    DENOMINATORS,
    Detail,
    Facts,
    FilePath,
    Json,
    Markdown,
    Measure,
    markdown_table,
)

#: The version of what this product's writer makes: raise it when a release changes its
#: files or numbers, so that Dagster shows the partitions made before as stale (code_version).
VERSION = "3"  # 2: the confidence layer, and confidence per cluster in the signatures
# 3: zstd COGs; labels and confidence from one matrix product (confidence equal within 3e-8)

CLUSTER_MAP = "cluster_map.tif"
#: Block edge of the sieve's pass over the written map (each read with its halo around it).
SIEVE_BLOCK = 1024
#: Each labelled pixel's confidence (simplified silhouette) as a uint8 percentage, 255 nodata.
CONFIDENCE = "confidence.tif"
CONFIDENCE_MEANING = (
    "simplified silhouette 1 - a/b in percent: a = distance to the pixel's cluster centre, "
    "b = to the nearest other centre, in the model's standardised space; 100 at a centre, 0 "
    f"on a boundary; {round(CONFIDENT_SILHOUETTE * 100)} or less is not confident "
    "(Kaufman & Rousseeuw 1990)"
)
MODEL = "model.json"
#: Where earlier versions kept the model: a pickle, which is never loaded (it can run code).
PICKLED_MODEL = "model.joblib"
SIGNATURES_CSV = "signatures.csv"
SIGNATURES_JSON = "signatures.json"
SAMPLE = "fit_sample.npy"
SUMMARY = "summary.json"
#: The elbow curve n_clusters: auto chose k from (only then), which diagnostics reuse.
ELBOW = "elbow.csv"
#: The red-vs-NIR density per cluster, counted while the map is labelled (diagnostics plot it).
DENSITY = "red_nir_density.npz"


@dataclass(frozen=True)
class ClustersFacts(Facts):
    """What clustering one partition produced, beside its files."""

    folder: Path
    plan: ModelPlan
    features: list[str]
    fit_sample_pixels: int
    n_clusters: int
    signatures: pd.DataFrame
    summary: dict[str, Any]
    k_choice: KChoice | None
    """How n_clusters: auto chose k (None for a given k)."""
    matches: list[Match] = dataclasses.field(default_factory=list)
    """With a matched model: where each of the partition's own clusters went."""
    classes: list[ClassName] = dataclasses.field(default_factory=list)
    """The name of every cluster, and the rule and index values that gave it."""
    digest: str = ""
    """Of the model's parameters and the map's signatures (:meth:`data_version`)."""

    def data_version(self) -> str | None:
        """The model and the signatures of the map it made (each cluster's pixel count and
        mean of every feature): the same map from the same pixels keeps its version, new
        pixels or a refitted model give a new one, without reading the map again."""
        return self.digest or None

    def measures(self) -> list[Measure]:
        return [
            Measure("n_clusters", self.n_clusters, "clusters", "k of the map"),
            Measure(
                "fit_sample_pixels", self.fit_sample_pixels, "px", "pixels the model was fitted on"
            ),
            Measure(
                "smallest_cluster_share_of_map",
                float(self.signatures["fraction"].min()),
                "0..1",
                f"the smallest cluster, as a share of the {DENOMINATORS['map']}",
                digits=4,
            ),
            Measure(
                "low_confidence_share_of_map",
                low_confidence_share(self.signatures),
                "0..1",
                f"labelled pixels whose confidence is {round(CONFIDENT_SILHOUETTE * 100)} % or "
                "less: about as near another cluster as their own (lower is better)",
                digits=4,
            ),
        ]

    def details(self) -> dict[str, Detail]:
        signatures = self.signatures
        sizes = signatures[
            ["cluster", "name", "pixel_count", "area_ha", "fraction", "low_confidence_share"]
        ].round(4)
        classes = pd.DataFrame(
            [{"cluster": c.id, "name": c.name, "rule": c.rule} for c in self.classes]
        )
        matches = pd.DataFrame([m.as_dict() for m in self.matches])
        legend = zip(
            signatures["cluster"].astype(int).tolist(),
            signatures["name"].astype(str).tolist(),
            signatures["fraction"].astype(float).tolist(),
            strict=True,
        )
        return {
            **k_choice_details(self.k_choice),
            "model": self.plan.describe(),
            **({"matches": markdown_table(matches)} if self.matches else {}),
            "algorithm": self.summary["algorithm"],
            "features": ", ".join(self.features),
            **(
                {"min_mapping_unit": Json(self.summary["min_mapping_unit"])}
                if self.summary.get("min_mapping_unit")
                else {}
            ),
            "preview_cluster_map": Markdown(
                class_map_markdown(
                    self.folder / CLUSTER_MAP, UI_MAP_PX, UI_MAP_CHARS, legend=list(legend)
                )
            ),
            "cluster_map_path": FilePath(self.folder / CLUSTER_MAP),
            "confidence_path": FilePath(self.folder / CONFIDENCE),
            "signatures_path": FilePath(self.folder / SIGNATURES_CSV),
            "cluster_sizes": markdown_table(sizes.rename(columns={"fraction": "share_of_map"})),
            "class_names": markdown_table(classes),
        }

    def warnings(self) -> list[str]:
        said = k_choice_warnings(self.k_choice, self.n_clusters)
        new = [m for m in self.matches if not m.matched]
        if new:
            said.append(
                f"{len(new)} of {len(self.matches)} clusters have no counterpart in the "
                f"reference model within match_max_distance={self.plan.max_distance}: new ids "
                + ", ".join(f"{m.id} (nearest {m.distance:.2f})" for m in new)
            )
        return said

    def judge(self, quality: ClusterQuality) -> list[Judgement]:
        signatures = self.signatures
        return judge_clusters(
            dict(zip(signatures["cluster"], signatures["pixel_count"], strict=True)),
            {c.id: c.name for c in self.classes},
            quality,
        )


@dataclasses.dataclass
class _Sieved:
    counts: np.ndarray
    """Pixels per label of the sieved map."""
    changed: int
    """Pixels whose label the sieve changed."""


def _sieve_map(
    path: Path,
    grid: xr.DataArray,
    unit: int,
    tags: dict[str, str],
    colours: dict[int, tuple[int, int, int, int]],
) -> _Sieved:
    """Replace the written map at ``path`` by its sieve (regions below ``unit`` pixels), read
    block by block with the halo that makes the blocks seamless."""
    import rasterio
    from rasterio.windows import Window

    unsieved = path.with_name(path.stem + ".unsieved.tif")
    path.rename(unsieved)
    result = _Sieved(counts=np.zeros(256, dtype=np.int64), changed=0)
    with rasterio.open(unsieved) as src:

        def read(row: int, col: int, rows: int, cols: int) -> np.ndarray:
            block: np.ndarray = src.read(1, window=Window(col, row, cols, rows))
            return block

        def blocks() -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
            for (rows, cols), block in sieved_blocks(
                read, src.height, src.width, SIEVE_BLOCK, unit
            ):
                result.counts += np.bincount(block.ravel(), minlength=256)
                result.changed += int((block != read(rows.start, cols.start, *block.shape)).sum())
                yield (slice(0, 1), rows, cols), block[np.newaxis]

        write_cog(
            grid,
            path,
            cog=True,
            nodata=0,
            tags={**tags, "min_mapping_unit_px": str(unit)},
            overview_resampling="nearest",
            blocks=blocks(),
            colormap=colours,
            task="sieving the cluster map",
        )
    unsieved.unlink()
    return result


def _with_sieved_areas(
    signatures: pd.DataFrame, counts: np.ndarray, pixel_area: float | None
) -> pd.DataFrame:
    """The signatures with each cluster's pixel count, share and area from the sieved map."""
    sized: pd.DataFrame = signatures.copy()
    pixels = counts[sized["cluster"].astype(int).to_numpy()]
    sized["pixel_count"] = pixels
    sized["fraction"] = pixels / pixels.sum() if pixels.sum() else np.nan
    sized["area_ha"] = pixels * (pixel_area / 10_000.0) if pixel_area else np.nan
    return sized


def low_confidence_share(signatures: pd.DataFrame) -> float:
    """The share of a map's labelled pixels that are not confident, from its signatures."""
    sizes = signatures["pixel_count"].astype(float)
    low = (signatures["low_confidence_share"].fillna(0.0) * sizes).sum()
    return float(low / sizes.sum()) if sizes.sum() else float("nan")


def k_choice_details(choice: KChoice | None) -> dict[str, Detail]:
    """How n_clusters: auto chose k (nothing for a k given in the settings)."""
    if choice is None:
        return {}
    return {"k_choice": Json(choice.as_dict()), "k_reason": choice.reason}


def k_choice_warnings(choice: KChoice | None, k: int) -> list[str]:
    """A warning when the knee and the silhouette disagree with the k n_clusters: auto chose."""
    if choice is None or not choice.disagree:
        return []
    return [f"n_clusters: auto chose k={k}: {choice.reason}"]


def fit_model(
    sample: np.ndarray, features: Sequence[str], settings: ClusterSettings
) -> tuple[FittedClusterer, KChoice | None, pd.DataFrame | None]:
    """Fit on ``sample``; with ``n_clusters="auto"``, k is chosen first from an elbow curve over
    a seeded subset of the sample (:func:`choose_k`). Returns the model, the choice and curve."""
    choice = curve = None
    if settings.n_clusters == "auto":
        subset = sample[subsample_index(len(sample), ELBOW_SAMPLE_SIZE, settings.seed)]
        curve = elbow_curve(subset, settings.auto_k_values, settings, features=features)
        choice = choose_k(curve)
        settings = dataclasses.replace(settings, n_clusters=choice.chosen)
    with heartbeat(
        f"fitting {settings.algorithm} (k={settings.n_clusters}) on {len(sample)} pixels"
    ):
        return fit_clusterer(sample, features, settings), choice, curve


@dataclass(frozen=True)
class ModelPlan:
    """How the partition's model is made: fitted here ("fit"), fitted here and its ids matched
    to ``reference`` ("match"), or ``reference`` applied as it is ("apply")."""

    how: Literal["fit", "match", "apply"] = "fit"
    reference: FittedClusterer | None = None
    source: str = ""
    """Where the reference came from (its model.json), for the record."""
    max_distance: float = MATCH_MAX_DISTANCE

    def __post_init__(self) -> None:
        if (self.how == "fit") != (self.reference is None):
            raise ValueError(f"ModelPlan how={self.how!r} needs a reference exactly when not 'fit'")

    def describe(self) -> str:
        if self.how == "fit":
            return "fitted on this partition (no reference model: ids by brightness)"
        if self.how == "match":
            return f"fitted on this partition, ids matched to the reference {self.source}"
        return f"the reference model {self.source}, applied"


def write_clusters(
    geotiff: xr.Dataset,
    settings: ClusterSettings,
    folder: Path,
    *,
    aoi_id: str,
    plan: ModelPlan = ModelPlan(),
    naming: NamingSettings | None = None,
    sieve: SieveSettings | None = None,
) -> ClustersFacts:
    """Make the partition's model as ``plan`` says, name its clusters and write the product.

    With a minimum mapping unit (``sieve``), the map is sieved after it is written, block by
    block from the written labels (:mod:`geocluster_dagster.sieve`), and the class areas are
    counted from the sieved map.

    One pass over the GeoTIFF predicts the map and sums the per-cluster signatures (see
    :class:`geocluster_dagster.cluster.LabelledBlocks`). The fit sample is drawn either way:
    diagnostics score the map on it.
    """
    choice = curve = None
    matches: list[Match] = []
    if plan.how == "apply":
        assert plan.reference is not None
        model = plan.reference
        features = settings.feature_bands(geotiff) if settings.features else list(model.features)
        check_features(model.features, features, f"The model {plan.source}")
        sample = sample_valid_pixels(geotiff, features, settings.sample_size, settings.seed)
    else:
        features = settings.feature_bands(geotiff)
        sample = sample_valid_pixels(geotiff, features, settings.sample_size, settings.seed)
        model, choice, curve = fit_model(sample, features, settings)
        if plan.how == "match":
            assert plan.reference is not None
            model, matches = match_to_reference(model, plan.reference, plan.max_distance)
    # The confidence layer is written from the same distances as the labels (one pass).
    sink: list[BlockSink] = []
    labelled = LabelledBlocks(
        geotiff, model, density=DensityGrid(), confidence_sink=lambda i, b: sink[0].write(i, b)
    )
    summary = {
        "aoi_id": aoi_id,
        "features": list(features),
        "n_clusters": model.n_clusters,
        "ids": [int(i) for i in model.ids],
        "algorithm": model.settings.algorithm,
        "pca_components": model.settings.pca_components,
        "sample_size": int(sample.shape[0]),
        "seed": settings.seed,
        # Relative to this folder: the output root can be moved or sent whole.
        "source": reference_from(folder, str(geotiff.attrs.get("source_path", ""))),
        "k_choice": choice.as_dict() if choice else None,
        "elbow_sample_size": ELBOW_SAMPLE_SIZE if curve is not None else None,
        "red_nir_density": labelled.density_grid.as_dict() if labelled.density_grid else None,
        "model": {
            "how": plan.how,
            "reference": plan.source or None,
            # Which reference, by content: its path stays the same when it is fitted again.
            "reference_digest": model_digest(plan.reference) if plan.reference else None,
            "matches": [m.as_dict() for m in matches] if plan.how == "match" else None,
        },
    }
    tags = {
        "aoi_id": aoi_id,
        "package": f"geocluster_dagster {__version__}",
        "clustering": json.dumps(summary),
    }
    colours = class_colours([int(i) for i in model.ids])  # the plots' colours, by id
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        with BlockSink(
            labelled.grid,
            tmp / CONFIDENCE,
            dtype="uint8",
            nodata=CONFIDENCE_NODATA,
            description="confidence",
            unit="percent",
            tags={"aoi_id": aoi_id, "meaning": CONFIDENCE_MEANING},
        ) as confidence:
            sink.append(confidence)
            write_cog(
                labelled.grid,
                tmp / CLUSTER_MAP,
                cog=True,
                nodata=0,
                tags=tags,
                overview_resampling="nearest",  # labels are categories: never average them
                blocks=labelled,
                colormap=colours,
                task="labelling the cluster map",
            )
        area = pixel_area_m2(geotiff)
        signatures = labelled.signatures(area)
        unit_ha = (sieve or SieveSettings()).min_mapping_unit_ha
        if unit_ha > 0 and not area:
            raise ConfigError(
                f"min_mapping_unit_ha={unit_ha} needs pixels of a known area, and this map's "
                "grid has none (a geographic crs): set the band_stack's `crs` to a projected "
                "one, or min_mapping_unit_ha to 0."
            )
        unit = unit_in_pixels(unit_ha, area or 1.0)
        if unit > 1:
            sieved = _sieve_map(tmp / CLUSTER_MAP, labelled.grid, unit, tags, colours)
            summary["min_mapping_unit"] = {
                "hectares": (sieve or SieveSettings()).min_mapping_unit_ha,
                "pixels": unit,
                "changed_pixels": sieved.changed,
            }
            signatures = _with_sieved_areas(signatures, sieved.counts, area)
        # Ids that come from the reference keep its names; the others are named from here.
        kept = {m.id for m in matches if m.matched} if plan.how == "match" else set(model.ids)
        inherited = {
            i: n
            for i, n in (plan.reference.names_by_id if plan.reference else {}).items()
            if i in kept
        }
        classes = name_clusters(
            means_of(signatures),
            (naming or NamingSettings()).class_names,
            inherited=inherited,
            source=plan.source,
        )
        model = model.with_names({c.id: c.name for c in classes})
        signatures.insert(1, "name", [c.name for c in classes])
        signatures.insert(2, "name_rule", [c.rule for c in classes])
        summary["classes"] = [c.as_dict() for c in classes]
        write_pam(
            tmp / CLUSTER_MAP,
            [
                BandCategories(
                    names={c.id: c.name for c in classes},
                    colours=colours,
                    counts=dict(zip(signatures["cluster"], signatures["pixel_count"], strict=True)),
                    pixel_area_m2=area,
                    description="cluster",
                )
            ],
        )
        save_model(model, tmp / MODEL)
        write_csv(signatures, tmp / SIGNATURES_CSV)
        write_json(json.loads(signatures.to_json(orient="records")), tmp / SIGNATURES_JSON)
        np.save(tmp / SAMPLE, sample)
        density = labelled.red_nir_density()
        if density is not None:
            np.savez_compressed(tmp / DENSITY, counts=density)
        write_json(summary, tmp / SUMMARY)
        if curve is not None:
            write_csv(curve, tmp / ELBOW)
    digest = hashlib.sha256((model_digest(model) + signatures.to_csv(index=False)).encode())
    return ClustersFacts(
        digest=digest.hexdigest()[:16],
        folder=published(folder),
        plan=plan,
        features=features,
        fit_sample_pixels=int(sample.shape[0]),
        n_clusters=model.n_clusters,
        signatures=signatures,
        summary=summary,
        k_choice=choice,
        matches=matches,
        classes=classes,
    )


@dataclass(frozen=True)
class StoredClusters:
    """A clusters folder reopened (the map stays lazy)."""

    directory: Path
    cluster_map: xr.DataArray
    model: FittedClusterer
    signatures: pd.DataFrame
    sample: np.ndarray
    summary: dict[str, Any]
    elbow: pd.DataFrame | None = None
    """The elbow curve k was chosen from (n_clusters: auto), else None."""
    density: np.ndarray | None = None
    """The (k, bins, bins) red-vs-NIR counts of the map, on the summary's density grid."""

    @property
    def cluster_map_path(self) -> Path:
        return self.directory / CLUSTER_MAP

    def elbow_for(self, k_values: list[int], sample_size: int) -> pd.DataFrame | None:
        """The stored elbow curve if it is the one these k and subset size would fit (same
        sample, seed and estimator), so it need not be fitted again; else None."""
        if self.elbow is None or self.summary.get("elbow_sample_size") != sample_size:
            return None
        return self.elbow if [int(k) for k in self.elbow["k"]] == list(k_values) else None

    def density_for(self, grid: DensityGrid) -> np.ndarray | None:
        """The stored red-vs-NIR counts if they were counted on ``grid`` for this map's model
        (else None: the caller counts them from the GeoTIFF)."""
        stored = self.summary.get("red_nir_density")
        if self.density is None or stored != grid.as_dict():
            return None
        return self.density if self.density.shape[0] == self.model.max_id else None


def open_clusters(folder: Path, *, chunks: int = CHUNK_SIZE) -> StoredClusters:
    """The product :func:`write_clusters` wrote in ``folder``."""
    if not (folder / MODEL).exists() and (folder / PICKLED_MODEL).exists():
        raise AssetReadError(
            f"{folder} holds its model as a pickle ({PICKLED_MODEL}, written by an earlier "
            "version), which is not loaded because a pickle can run code: materialize clusters "
            "for this partition again."
        )
    return StoredClusters(
        directory=folder,
        cluster_map=open_single_band(folder / CLUSTER_MAP, chunks=chunks),
        model=load_model(folder / MODEL),
        signatures=read_csv(folder / SIGNATURES_CSV),
        sample=_load_array(folder / SAMPLE),
        summary=json.loads((folder / SUMMARY).read_text()),
        elbow=read_csv(folder / ELBOW) if (folder / ELBOW).exists() else None,
        density=_load_density(folder / DENSITY),
    )


def _load_density(path: Path) -> np.ndarray | None:
    if not path.exists():
        return None
    with path.open("rb") as handle, np.load(handle, allow_pickle=False) as stored:
        counts: np.ndarray = stored["counts"]  # plain arrays: nothing in it runs code
    return counts


#: Significant digits of the numbers in the products' CSVs: as many as a float holds that mean
#: something, without the noise of binary fractions (237.33, not 237.32999999999998).
CSV_DIGITS = 10


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """A table of a product as CSV, its floats to :data:`CSV_DIGITS` significant digits."""
    frame.to_csv(path, index=False, float_format=f"%.{CSV_DIGITS}g")


def read_csv(path: Path) -> pd.DataFrame:
    """A CSV of a product, a local file or an object of the store."""
    with path.open("rb") as handle:
        return pd.read_csv(handle)


def _load_array(path: Path) -> np.ndarray:
    with path.open("rb") as handle:
        array: np.ndarray = np.load(handle, allow_pickle=False)
    return array
