"""geocluster_dagster: satellite imagery to unsupervised land-cover maps, as Dagster assets.

The science lives in plain modules (aoi, search, bands, load, mask, composite, indices,
export, cluster, evaluate, plot, demo) that do not import Dagster; ``geocluster_dagster.defs``
wires them into assets and ``geocluster_dagster.definitions`` is the code location.
"""

__version__ = "0.1.0"
