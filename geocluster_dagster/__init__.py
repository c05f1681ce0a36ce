"""geocluster_dagster: satellite imagery to unsupervised land-cover maps, as Dagster assets.

The science lives in plain modules (aoi, search, bands, load, mask, composite, indices,
export, cluster, evaluate, plot, demo) that do not import Dagster; ``geocluster_dagster.defs``
wires them into assets and ``geocluster_dagster.definitions`` is the code location.
"""

__version__ = "0.1.0"

import warnings as _warnings

# rasterio's reprojection and rasterization into in-memory arrays warn "Dataset has no
# geotransform" now and then (once per run, in one reader thread, for a source file and a
# destination that both have their transform: traced in the demo). The outputs are the same
# on a scheduler with workers and from run to run (tests/test_distributed.py, test_kills.py),
# so the line is noise in every run's log; a file whose georeferencing disagrees with its
# item's proj: metadata is reported by preflight.py instead.
for _module in ("rasterio.warp", "rasterio.features"):
    _warnings.filterwarnings("ignore", message="Dataset has no geotransform", module=_module)
