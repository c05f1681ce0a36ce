"""GeoTIFF / COG / Zarr writing: content, metadata, and that failures never leave broken files."""

from __future__ import annotations

import contextlib
import subprocess

import dask.array as da
import numpy as np
import pytest
import rasterio
import shapely

from geocluster_dagster.composite import composite
from geocluster_dagster.errors import AssetReadError, OutputNotWritable
from geocluster_dagster.export import open_cog, write_cog
from geocluster_dagster.load import LoadSettings, load_band_stack
from geocluster_dagster.storage import write_json


@pytest.fixture
def mosaic(brumadinho_items):
    item = brumadinho_items[1]
    aoi = shapely.geometry.shape(item.geometry).buffer(-0.001)
    stack = load_band_stack(
        [item], aoi, LoadSettings(bands=("blue", "red", "nir"), mask_clouds=False, chunk_size=100)
    )
    return composite(stack)


def test_cog_round_trip_keeps_values_names_nodata_and_tags(mosaic, tmp_path):
    target = tmp_path / "out" / "mosaic.tif"
    tags = {"aoi": "brumadinho", "items": ["a", "b"]}
    stats = write_cog(mosaic, target, cog=True, tags=tags, blocksize=128)
    with rasterio.open(target) as src:
        assert src.descriptions == ("blue", "red", "nir")
        assert np.isnan(src.nodata)
        assert src.crs.to_epsg() == 32623
        assert src.profile["tiled"] and src.profile["blockxsize"] == 128
        assert src.overviews(1), "a COG carries internal overviews"
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.compression.name == "zstd" and src.interleaving.name == "pixel"
        assert src.tags()["aoi"] == "brumadinho" and src.tags()["items"] == '["a", "b"]'
        assert src.transform == mosaic.odc.geobox.affine
        full = src.read(3)
        half = src.read(3, out_shape=(src.height // 2, src.width // 2))  # first overview
    # The overview is the average of each 2 x 2 window (where all four pixels are valid).
    h, w = half.shape
    windows = full[: 2 * h, : 2 * w].reshape(h, 2, w, 2)
    complete = np.isfinite(windows).all(axis=(1, 3))
    assert complete.sum() > 1000
    np.testing.assert_allclose(half[complete], windows.mean(axis=(1, 3))[complete], rtol=1e-5)
    back = open_cog(target)
    expected = mosaic.compute()
    for band in ("blue", "red", "nir"):
        np.testing.assert_array_equal(back[band].values, expected[band].values)
        assert stats.count[band] == int(np.isfinite(expected[band].values).sum())
        assert stats.mean(band) == pytest.approx(float(np.nanmean(expected[band].values)), rel=1e-5)
    assert [p.name for p in tmp_path.joinpath("out").iterdir()] == ["mosaic.tif"]  # no temp left


def _failing(mosaic):
    def boom(block):
        raise RuntimeError("simulated failure while computing a block")

    broken = mosaic.red.copy(data=da.map_blocks(boom, mosaic.red.data, dtype="float32"))
    return mosaic.assign(red=broken)


def test_a_failed_write_leaves_the_earlier_output_intact(mosaic, tmp_path):
    tmp_path = tmp_path / "out"
    target = tmp_path / "mosaic.tif"
    write_cog(mosaic, target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="simulated failure"):
        write_cog(_failing(mosaic), target, cog=True)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["mosaic.tif"]


@contextlib.contextmanager
def _tmpfs(path, options):
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_disk_full_is_reported_and_the_earlier_output_survives(mosaic, tmp_path):
    with _tmpfs(tmp_path / "small", "size=256k") as disk:
        target = disk / "mosaic.tif"
        write_json({"earlier": "output"}, target)
        with pytest.raises(OutputNotWritable, match="disk is full") as err:
            write_cog(mosaic, target, compress="none")
        assert "GEOCLUSTER_OUTPUT" in str(err.value)
        assert target.read_text() == '{\n  "earlier": "output"\n}'
        assert [p.name for p in disk.iterdir()] == ["mosaic.tif"]


def test_read_only_output_root_is_reported(mosaic, tmp_path):
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as disk:
        with pytest.raises(OutputNotWritable, match="not writable"):
            write_cog(mosaic, disk / "asset" / "mosaic.tif")


def test_reading_something_that_is_not_a_geotiff(tmp_path):
    bogus = tmp_path / "x.tif"
    bogus.write_text("not a tiff")
    with pytest.raises(AssetReadError, match="x.tif"):
        open_cog(bogus)


def test_temporaries_of_killed_runs_are_removed_by_the_next_write(mosaic, tmp_path):
    import os
    import socket
    import sys

    out = tmp_path / "out"
    out.mkdir()
    target = out / "mosaic.tif"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = socket.gethostname()
        stale = out / f".mosaic.tif.{host}.{dead.pid}-0badc0de.tmp"
        stale.write_bytes(b"half a GeoTIFF")
        stale_cog = out / f".mosaic.tif.{host}.{dead.pid}-0badc0de.tmp.tiled.tif"
        stale_cog.write_bytes(b"half")
        busy = out / f".mosaic.tif.{host}.{alive.pid}-12345678.tmp"
        busy.write_bytes(b"being written right now")
        other_host = out / f".mosaic.tif.some-other-node.{dead.pid}-87654321.tmp"
        other_host.write_bytes(b"someone else's")
        write_cog(mosaic, target)
        names = sorted(p.name for p in out.iterdir())
        assert names == sorted(["mosaic.tif", busy.name, other_host.name])
        assert os.path.exists(busy)
    finally:
        alive.kill()
