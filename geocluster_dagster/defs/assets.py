"""The six software-defined assets, each a few calls into the plain modules.

stac_items -> band_stack -> mosaic -> geotiff -> clusters -> diagnostics, all partitioned by
AOI x month and stored by the GeoclusterIOManager.
"""

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pystac
import xarray as xr

from .. import __version__, cluster, evaluate, indices, plot
from ..bands import REFLECTANCE_BANDS, WAVELENGTH_UM
from ..composite import aoi_mask, aoi_pixel_count, clip, composite, written_coverage
from ..errors import GeoclusterError
from ..load import load_band_stack
from ..products import (
    BandStackRecipe,
    ClusterProduct,
    DiagnosticsProduct,
    RasterOutput,
    StoredClusters,
    render_pngs,
)
from ..search import search_items
from .config import (
    BandStackConfig,
    ClusterConfig,
    DiagnosticsConfig,
    GeoTiffConfig,
    MosaicConfig,
    SearchConfig,
)
from .partitions import partition_window, partitions
from .resources import AOIRegistry, DaskCluster, StacCatalog

GROUP = "geocluster"


@contextlib.contextmanager
def explained_failures() -> Iterator[None]:
    """Turn the package's own errors into Dagster failures whose message says what to fix."""
    try:
        yield
    except GeoclusterError as err:
        raise dg.Failure(description=str(err), metadata={"error": type(err).__name__}) from err


def _asset(**kwargs):
    return dg.asset(
        partitions_def=partitions, group_name=GROUP, io_manager_key="geocluster_io", **kwargs
    )


@_asset(
    description="STAC items covering the AOI in the month, filtered by collection and cloud cover.",
    kinds={"stac"},
)
def stac_items(
    context: dg.AssetExecutionContext,
    config: SearchConfig,
    aoi_registry: AOIRegistry,
    stac: StacCatalog,
) -> dg.Output[pystac.ItemCollection]:
    window = partition_window(context)
    with explained_failures():
        aoi = aoi_registry.get(window.aoi_id)
        items = search_items(
            stac.source(),
            collection=config.collection,
            geometry=aoi.geometry,
            start=window.start,
            end=window.end,
            max_cloud_cover=config.max_cloud_cover,
            max_items=config.max_items,
        )
    rows = [
        f"| {i.id} | {i.datetime:%Y-%m-%d %H:%M} | {i.properties.get('eo:cloud_cover', 'n/a')} |"
        for i in items
    ]
    table = "| item | acquired (UTC) | cloud % |\n|---|---|---|\n" + "\n".join(rows)
    return dg.Output(
        items,
        metadata={
            "item_count": len(items),
            "collection": config.collection,
            "source": stac.source().url,
            "items": dg.MetadataValue.md(table),
        },
    )


@_asset(
    description="Lazy, chunked, cloud-masked bands in physical units on one grid; stored as the recipe that reopens them (items, grid, mask and read settings), not a copy of the pixels.",
    kinds={"xarray", "stac"},
)
def band_stack(
    context: dg.AssetExecutionContext,
    config: BandStackConfig,
    stac_items: pystac.ItemCollection,
    aoi_registry: AOIRegistry,
    stac: StacCatalog,
    dask: DaskCluster,
) -> dg.Output[BandStackRecipe]:
    window = partition_window(context)
    with explained_failures():
        aoi = aoi_registry.get(window.aoi_id)
        stack = load_band_stack(
            stac_items.items,
            aoi.geometry,
            config.settings(),
            href_signer=stac.source().href_signer(),
            remote=stac.read_settings(),
        )
    geobox = stack.odc.geobox
    recipe = BandStackRecipe(
        items=stac_items,
        aoi=aoi.geometry,
        settings=config.settings(),
        source=stac.source(),
        remote=stac.read_settings(),
    )
    return dg.Output(
        recipe,
        metadata={
            "bands": stack.attrs["bands"],
            "time_slices": stack.sizes["time"],
            "scenes_per_slice": dg.MetadataValue.json(
                {
                    str(t)[:10]: ids.split(",")
                    for t, ids in zip(stack.time.values, stack.item_ids.values, strict=True)
                }
            ),
            "crs": str(geobox.crs),
            "resolution": abs(geobox.resolution.x),
            "shape": f"{geobox.shape.y} x {geobox.shape.x}",
            "mask": stack.attrs["mask_flags"] or "off",
        },
    )


@_asset(
    description="Cloud-free composite of the clear observations, clipped to the AOI polygon (GeoTIFF).",
    kinds={"geotiff"},
)
def mosaic(
    context: dg.AssetExecutionContext,
    config: MosaicConfig,
    band_stack: xr.Dataset,
    aoi_registry: AOIRegistry,
    dask: DaskCluster,
) -> dg.Output[RasterOutput]:
    window = partition_window(context)
    settings = config.settings()
    with explained_failures():
        aoi = aoi_registry.get(window.aoi_id)
        inside = aoi_mask(band_stack, aoi.geometry, all_touched=settings.all_touched)
        aoi_pixels = aoi_pixel_count(inside, where=window.label)
        image = clip(composite(band_stack.drop_vars("pixel_state"), settings.method), inside)

    def coverage(stats) -> dict:
        # The stack is read once, while the composite is written; a partition with nothing
        # clear fails here, before its file replaces an earlier one.
        clear = stats.count[next(iter(image.data_vars))]
        counts = written_coverage(band_stack, inside, aoi_pixels, clear, where=window.label)
        return counts.as_dict()

    tags = {
        **{k: v for k, v in band_stack.attrs.items() if isinstance(v, str)},
        "aoi_id": window.aoi_id,
        "time_window": f"{window.start:%Y-%m-%d}/{window.end:%Y-%m-%d}",
        "source_items": ",".join(band_stack.item_ids.values.tolist()),
        "composite": settings.method,
    }
    # A working file the geotiff asset reads once: fast lossless compression beats small size.
    raster = RasterOutput(
        image, cog=False, tags=tags, compress="zstd", compress_level=1, validate=coverage
    )
    return dg.Output(raster)  # coverage metadata comes from the write (see `coverage`)


@_asset(
    description="Multi-band Cloud-Optimized GeoTIFF: spectral bands plus indices, with provenance tags.",
    kinds={"geotiff"},
)
def geotiff(
    context: dg.AssetExecutionContext, config: GeoTiffConfig, mosaic: xr.Dataset, dask: DaskCluster
) -> dg.Output[RasterOutput]:
    window = partition_window(context)
    names = (
        config.indices
        if config.indices is not None
        else ["ndvi", *(["lst"] if "lwir" in mosaic else [])]
    )
    with explained_failures():
        image = indices.add_indices(mosaic, names)
    provenance = {key: value for key, value in mosaic.attrs.items() if key != "source_path"}
    provenance.update(
        {
            "aoi_id": window.aoi_id,
            "package": f"geocluster_dagster {__version__}",
            "indices": ",".join(n.lower() for n in names),
            "config": json.dumps(config.model_dump()),
        }
    )
    return dg.Output(
        RasterOutput(
            image,
            cog=True,
            tags=provenance,
            compress=config.compress,
            compress_level=config.compress_level,
        ),
        metadata={"bands": ", ".join(image.data_vars), "indices": ", ".join(names) or "none"},
    )


@_asset(
    description="Unsupervised clusters of the spectral signatures: cluster-map COG, model, signatures CSV/JSON.",
    kinds={"sklearn", "geotiff"},
)
def clusters(
    context: dg.AssetExecutionContext, config: ClusterConfig, geotiff: xr.Dataset, dask: DaskCluster
) -> dg.Output[ClusterProduct]:
    window = partition_window(context)
    features = config.features or [b for b in REFLECTANCE_BANDS if b in geotiff.data_vars]
    with explained_failures():
        settings = config.settings()
        sample = cluster.sample_valid_pixels(geotiff, features, settings.sample_size, settings.seed)
        model = cluster.fit_clusterer(sample, features, settings)
        cluster_map = cluster.predict_map(geotiff, model)
        # One pass writes the map and sums the signatures (see cluster.LabelledBlocks).
        labelled = cluster.LabelledBlocks(geotiff, model)
        pixel_area = cluster.pixel_area_m2(geotiff)
    summary = {
        "aoi_id": window.aoi_id,
        "features": list(features),
        "n_clusters": settings.n_clusters,
        "algorithm": settings.algorithm,
        "pca_components": settings.pca_components,
        "sample_size": int(sample.shape[0]),
        "seed": settings.seed,
        "source": geotiff.attrs.get("source_path", ""),
    }
    tags = {
        "aoi_id": window.aoi_id,
        "package": f"geocluster_dagster {__version__}",
        "clustering": json.dumps(summary),
    }
    product = ClusterProduct(
        cluster_map=RasterOutput(
            cluster_map,
            cog=True,
            nodata=0,
            tags=tags,
            overview_resampling="nearest",
            blocks=labelled,
        ),
        model=model,
        signatures=lambda: labelled.signatures(pixel_area),
        sample=sample,
        summary=summary,
    )
    return dg.Output(  # the cluster sizes are added by the IO manager, from the written map
        product,
        metadata={
            "n_clusters": settings.n_clusters,
            "algorithm": settings.algorithm,
            "features": ", ".join(features),
            "fit_sample_pixels": int(sample.shape[0]),
        },
    )


@_asset(
    description="Diagnostics: cluster map, previews, signatures, silhouette, elbow, sizes, red-vs-NIR density, scores.",
    kinds={"matplotlib"},
)
def diagnostics(
    context: dg.AssetExecutionContext,
    config: DiagnosticsConfig,
    geotiff: xr.Dataset,
    clusters: StoredClusters,
    dask: DaskCluster,
) -> dg.Output[DiagnosticsProduct]:
    window = partition_window(context)
    model, sample = clusters.model, clusters.sample
    seed = int(clusters.summary.get("seed", 0))
    with explained_failures():
        silhouettes, labels = evaluate.silhouette_sample(
            model, sample, max_samples=config.silhouette_sample_size, seed=seed
        )
        scores = evaluate.score_clustering(
            model,
            sample,
            max_silhouette_samples=config.silhouette_sample_size,
            seed=seed,
            silhouettes=(silhouettes, labels),
        )
        k_values = range(config.elbow_k_min, max(config.elbow_k_min, config.elbow_k_max) + 1)
        elbow = evaluate.elbow_curve(
            _subset(sample, config.elbow_sample_size, seed), list(k_values), model.settings
        )
        density = (
            evaluate.red_nir_density(
                geotiff, clusters.cluster_map, bins=config.density_bins, n_clusters=model.n_clusters
            )
            if {"red", "nir"} <= set(geotiff.data_vars)
            else None
        )
    bands = [b for b in clusters.summary["features"] if b in WAVELENGTH_UM]
    pngs = render_pngs(
        lambda folder: _draw(
            folder,
            config,
            window.label,
            geotiff,
            clusters,
            silhouettes,
            labels,
            scores,
            elbow,
            density,
            bands,
        )
    )
    metadata = {**{k: float(v) for k, v in scores.as_dict().items()}}
    for name in ("cluster_map", "true_colour", "signatures", "silhouette"):
        if f"{name}.png" in pngs:
            with _png_file(pngs[f"{name}.png"]) as png:
                metadata[f"preview_{name}"] = dg.MetadataValue.md(plot.thumbnail_markdown(png))
    return dg.Output(
        DiagnosticsProduct(pngs=pngs, scores=scores.as_dict(), tables={"elbow": elbow}),
        metadata=metadata,
    )


def _subset(sample, size: int, seed: int):
    """A seeded random subset: the fit sample is ordered block by block, so its head is not random."""
    import numpy as np

    if len(sample) <= size:
        return sample
    return sample[np.sort(np.random.default_rng(seed).choice(len(sample), size, replace=False))]


@contextlib.contextmanager
def _png_file(data: bytes) -> Iterator[Path]:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".png") as handle:
        handle.write(data)
        handle.flush()
        yield Path(handle.name)


def _draw(
    folder, config, label, geotiff, clusters, silhouettes, labels, scores, elbow, density, bands
) -> None:
    model = clusters.model
    source = geotiff.attrs["source_path"]
    crs_label = str(geotiff.rio.crs)
    names = list(geotiff.data_vars)
    labels_preview, extent = plot.read_preview(
        clusters.cluster_map_path, max_size=config.preview_size
    )
    plot.plot_cluster_map(
        labels_preview[0],
        extent,
        folder / "cluster_map.png",
        title=f"Clusters, {label}",
        crs_label=crs_label,
        n_clusters=model.n_clusters,
        signatures=clusters.signatures,
    )
    for name, rgb in (
        ("true_colour", ("red", "green", "blue")),
        ("false_colour", ("nir", "red", "green")),
    ):
        if all(b in names for b in rgb):
            image, extent = plot.read_preview(
                source, bands=[names.index(b) + 1 for b in rgb], max_size=config.preview_size
            )
            title = (
                "True colour (red, green, blue)"
                if name == "true_colour"
                else "False colour (NIR, red, green)"
            )
            plot.plot_rgb(
                image,
                extent,
                folder / f"{name}.png",
                title=f"{title}, {label}",
                crs_label=crs_label,
            )
    plot.plot_spectral_signatures(
        clusters.signatures, bands, folder / "signatures.png", wavelengths=WAVELENGTH_UM
    )
    plot.plot_silhouette(silhouettes, labels, folder / "silhouette.png", average=scores.silhouette)
    plot.plot_elbow(elbow, folder / "elbow.png", chosen_k=model.n_clusters)
    plot.plot_cluster_sizes(clusters.signatures, folder / "cluster_sizes.png")
    if density is not None:
        plot.plot_red_nir_density(*density, folder / "red_nir_density.png")


ASSETS = [stac_items, band_stack, mosaic, geotiff, clusters, diagnostics]
