"""Tests of geocluster_dagster.plot: every figure is written, whole, at the expected size."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
import rasterio
from matplotlib.figure import Figure
from PIL import Image
from rasterio.enums import Resampling

from geocluster_dagster import plot
from geocluster_dagster.cluster import (
    ClusterSettings,
    cluster_signatures,
    fit_clusterer,
    pixel_area_m2,
    predict_map,
    sample_valid_pixels,
)
from geocluster_dagster.errors import ConfigError
from geocluster_dagster.evaluate import (
    elbow_curve,
    red_nir_density,
    score_clustering,
    silhouette_sample,
)
from geocluster_dagster.preview import figure_markdown

from .helpers import REFLECTANCE, STACK_2002, landsat7_dataset

K = 5
WAVELENGTHS_UM = {"blue": 0.483, "green": 0.560, "red": 0.662, "nir": 0.835}


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def expected_pixels(size_inches: tuple[float, float]) -> tuple[int, int]:
    return round(size_inches[0] * plot.DPI), round(size_inches[1] * plot.DPI)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The cloudy 2002 Landsat 7 scene, Fmask-masked, clustered, with its GeoTIFFs on disk."""
    folder = tmp_path_factory.mktemp("scene")
    ds = landsat7_dataset(STACK_2002, mask_clouds=True)
    samples = sample_valid_pixels(ds, REFLECTANCE, 10_000, seed=0)
    model = fit_clusterer(samples, REFLECTANCE, ClusterSettings(n_clusters=K))
    cluster_map = predict_map(ds, model)
    cluster_tif = folder / "clusters.tif"
    cluster_map.rio.to_raster(cluster_tif)
    return {
        "ds": ds,
        "samples": samples,
        "model": model,
        "cluster_map": cluster_map,
        "cluster_tif": cluster_tif,
        "signatures": cluster_signatures(ds, cluster_map, pixel_area_m2(ds)),
    }


# ------------------------------------------------------------------------- colours, previews


def test_cluster_colours_are_distinct_and_stable_per_label():
    many = plot.cluster_colours(40)
    assert len(many) == 40 and len(set(many)) == 40
    assert plot.cluster_colours(5) == many[:5]
    assert all(0 <= channel <= 1 for colour in many for channel in colour)


def test_read_preview_decimates_and_keeps_the_extent(tmp_path):
    big = tmp_path / "big.tif"
    profile = {
        "driver": "GTiff",
        "width": 1200,
        "height": 900,
        "count": 2,
        "dtype": "float32",
        "crs": "EPSG:32615",
        "transform": rasterio.transform.from_origin(462_405, 1_741_815, 30, 30),
        "nodata": -9999.0,
        "tiled": True,
    }
    data = np.arange(2 * 900 * 1200, dtype=np.float32).reshape(2, 900, 1200)
    data[:, :10, :10] = -9999.0
    with rasterio.open(big, "w", **profile) as dst:
        dst.write(data)
        dst.build_overviews([2, 4], Resampling.average)

    preview, extent = plot.read_preview(big, bands=[2], max_size=300, resampling="average")
    assert preview.shape == (1, 225, 300)
    assert extent == (462_405, 462_405 + 1200 * 30, 1_741_815 - 900 * 30, 1_741_815)
    assert np.isnan(preview[0, 0, 0])  # nodata became NaN
    full, _ = plot.read_preview(big, max_size=5_000)
    assert full.shape == (2, 900, 1200)
    with pytest.raises(ConfigError, match="resampling"):
        plot.read_preview(big, resampling="fancy")


# ------------------------------------------------------------------------- every plot


def test_every_plot_writes_a_png_of_the_expected_size(scene, tmp_path):
    labels, extent = plot.read_preview(scene["cluster_tif"], bands=[1], max_size=200)
    assert labels.shape == (1, 200, 200) and labels.dtype == np.uint8
    rgb, rgb_extent = plot.read_preview(STACK_2002, bands=[3, 2, 1], max_size=200)
    rgb = rgb / 10_000.0
    rgb[:, labels[0] == 0] = np.nan  # the masked clouds
    signatures = scene["signatures"]
    scores = score_clustering(scene["model"], scene["samples"], max_silhouette_samples=2_000)
    values, value_labels = silhouette_sample(scene["model"], scene["samples"], max_samples=2_000)
    settings = ClusterSettings(n_clusters=K)
    curve = elbow_curve(scene["samples"][:3_000], range(2, 8), settings)
    counts, red_edges, nir_edges = red_nir_density(scene["ds"], scene["cluster_map"], bins=128)

    written = {
        "map": plot.plot_cluster_map(
            labels[0],
            extent,
            tmp_path / "map.png",
            title="Clusters",
            crs_label="EPSG:32615",
            n_clusters=K,
            signatures=signatures,
        ),
        "rgb": plot.plot_rgb(rgb, rgb_extent, tmp_path / "rgb.png", title="True colour"),
        "signatures": plot.plot_spectral_signatures(
            signatures, list(WAVELENGTHS_UM), tmp_path / "sig.png", wavelengths=WAVELENGTHS_UM
        ),
        "signatures_no_wavelengths": plot.plot_spectral_signatures(
            signatures, REFLECTANCE, tmp_path / "sig_bands.png"
        ),
        "silhouette": plot.plot_silhouette(
            values, value_labels, tmp_path / "silhouette.png", average=scores.silhouette
        ),
        "elbow": plot.plot_elbow(curve, tmp_path / "elbow.png", chosen_k=K),
        "sizes": plot.plot_cluster_sizes(signatures, tmp_path / "sizes.png"),
        "red_nir": plot.plot_red_nir_density(
            counts, red_edges, nir_edges, tmp_path / "red_nir.png"
        ),
    }
    expected = {
        "map": expected_pixels(plot.map_figure_size(extent, legend_width=3.0)),
        "rgb": expected_pixels(plot.map_figure_size(rgb_extent)),
        "signatures": expected_pixels(plot.CHART_SIZE),
        "signatures_no_wavelengths": expected_pixels(plot.CHART_SIZE),
        "silhouette": expected_pixels(plot.CHART_SIZE),
        "elbow": expected_pixels(plot.CHART_SIZE),
        "sizes": expected_pixels((plot.CHART_SIZE[0], 0.45 * K + 1.5)),
        "red_nir": expected_pixels((9.0, 7.5)),
    }
    for name, path in written.items():
        assert path.exists() and path.stat().st_size > 10_000, name
        assert png_size(path) == expected[name], name
    # Only the PNGs: no temporary file is left in the directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written.values())


def test_cluster_map_colours_follow_the_labels(tmp_path):
    labels = np.zeros((60, 60), dtype=np.uint8)
    labels[:, 20:40] = 1
    labels[:, 40:] = 2
    path = plot.plot_cluster_map(
        labels, (0, 1800, 0, 1800), tmp_path / "m.png", title="t", crs_label=None, n_clusters=2
    )
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    colours = {tuple(round(255 * c) for c in colour) for colour in plot.cluster_colours(2)}
    found = {tuple(p) for p in pixels.reshape(-1, 3)}
    assert colours <= found


# ------------------------------------------------------------------------- failures


def test_a_failing_plot_leaves_no_file_behind(tmp_path):
    target = tmp_path / "map.png"
    with pytest.raises(ValueError, match="2-D"):
        plot.plot_cluster_map(
            np.zeros((2, 3, 3)), (0, 1, 0, 1), target, title="t", crs_label=None, n_clusters=2
        )
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_writing_keeps_the_previous_png_and_no_partial_file(tmp_path, monkeypatch):
    target = plot.plot_elbow(_small_curve(), tmp_path / "elbow.png", chosen_k=3)  # earlier run
    before = target.read_bytes()

    def half_written(self, fname, **kwargs):
        with open(fname, "wb") as handle:
            handle.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", half_written)
    with pytest.raises(OSError, match="No space left"):
        plot.plot_elbow(_small_curve(), target, chosen_k=4)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["elbow.png"]


def _small_curve() -> pd.DataFrame:
    return pd.DataFrame(
        {"k": [2, 3, 4], "inertia": [30.0, 20.0, 15.0], "silhouette": [0.5, 0.4, 0.3]}
    )


# ------------------------------------------------------------------------- thumbnails


def test_thumbnail_is_a_small_png_data_uri(tmp_path):
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 6, size=(400, 400)).astype(np.uint8)  # worst case for PNG size
    path = plot.plot_cluster_map(
        noisy, (0, 1, 0, 1), tmp_path / "noisy.png", title="t", crs_label=None, n_clusters=5
    )
    markdown = figure_markdown(path, max_px=320, max_chars=40_000)
    match = re.fullmatch(r"!\[noisy\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match is not None
    assert len(markdown) <= 40_000
    with Image.open(io.BytesIO(base64.b64decode(match.group(1)))) as thumb:
        assert thumb.format == "PNG" and max(thumb.size) <= 320


def test_the_red_nir_figure_s_title_stays_clear_of_its_legend(tmp_path, monkeypatch):
    """Its two-line title used to sit above the narrow axes alone, cut at the left edge of
    the figure and running into the legend of nine long class names."""
    drawn = {}
    monkeypatch.setattr(plot, "_save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, size=(9, 64, 64))
    names = {i: f"sparse vegetation/grassland (brightness {i} of 9)" for i in range(1, 10)}
    edges = np.linspace(0, 0.5, 65)
    plot.plot_red_nir_density(counts, edges, edges, tmp_path / "r.png", names=names)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    fig = drawn["fig"]
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    (suptitle,) = [t for t in fig.findobj(Text) if t.get_text() == fig.get_suptitle()]
    title = suptitle.get_window_extent(renderer)
    legend = fig.legends[0].get_window_extent(renderer)
    page = fig.bbox
    assert title and page.x0 <= title.x0 and title.x1 <= page.x1  # not cut at the edges
    assert not title.overlaps(legend), (title, legend)
    for ax in fig.axes:
        assert not ax.get_window_extent(renderer).overlaps(legend)


@pytest.mark.parametrize(
    ("width", "length"), [(10_000.0, 2000.0), (3_700.0, 500.0), (123.0, 20.0), (9.9e5, 1e5)]
)
def test_the_scale_bar_is_a_round_length_of_about_a_fifth_of_the_map(width, length):
    assert plot.scale_bar_length(width) == length


def _map_axes(extent):
    fig = Figure()
    ax = fig.add_subplot()
    ax.imshow(np.zeros((10, 10)), extent=extent)
    return fig, ax


def test_a_projected_map_gets_the_aoi_outline_a_scale_bar_and_a_north_arrow():
    """Read on its own (in a report, a mail), a map says where its AOI ends, its scale and
    where north is."""
    import shapely

    from geocluster_dagster.aoi import outline_in

    # a 0.1 degree AOI in UTM zone 16N: about 9 km wide
    aoi = shapely.box(-84.05, 34.97, -83.95, 35.03)
    rings = outline_in(aoi, "EPSG:32616")
    left, bottom = rings[0].min(axis=0)
    right, top = rings[0].max(axis=0)
    extent = (left - 500, right + 500, bottom - 500, top + 500)
    fig, ax = _map_axes(extent)
    drawn = plot.decorate_map(ax, metres=True, outline=rings)
    assert 8_000 < right - left < 10_000
    assert drawn["scale_bar"] == (2000.0, "2 km")  # a fifth of ~10 km, rounded down
    (line,) = drawn["outline"]
    np.testing.assert_allclose(line.get_xydata(), rings[0])
    assert (ax.get_xlim(), ax.get_ylim()) == ((extent[0], extent[1]), (extent[2], extent[3]))
    assert drawn["north_arrow"].get_text() == "N"


def test_a_map_in_degrees_gets_no_scale_bar():
    """A bar's length in degrees changes with latitude: none is drawn, the arrow is."""
    fig, ax = _map_axes((-84.1, -83.9, 34.9, 35.1))
    drawn = plot.decorate_map(ax, metres=False)
    assert "scale_bar" not in drawn and "outline" not in drawn
    assert drawn["north_arrow"].get_text() == "N"


def test_a_long_map_title_is_wrapped_to_the_map_s_width():
    title = "Clusters, AOI 'demo', 2023-06-01 to 2023-06-30, scenes of 2023-06-10, 2023-06-18"
    wrapped = plot.map_title(title, 6.0)
    assert wrapped.replace("\n", " ") == title
    assert max(len(line) for line in wrapped.splitlines()) <= 6 * plot.TITLE_CHARS_PER_INCH
    assert plot.map_title("Short", 6.0) == "Short"
