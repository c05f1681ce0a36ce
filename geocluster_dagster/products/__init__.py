"""The products of the asset graph, one module per asset, each with the same three names:

* ``write_<asset>(...) -> <Asset>Facts``: compute the product from its opened inputs, write it
  atomically (an earlier good product is never replaced by a broken one) and return the facts;
* ``open_<asset>(...)``: read the product back, lazily where it is a raster;
* ``<Asset>Facts``: what the writer measured, and how it describes itself to a person
  (``measures()``, ``details()``, ``warnings()``; :mod:`.described`) and its checks
  (``judge(...)``, where the asset has checks).

=================  ==================================================================
stac_items         the scenes the partition's search found (an ItemCollection)
band_stack         the recipe that reopens the lazy, masked, scaled band stack
mosaic             the cloud-free composite clipped to the AOI (a GeoTIFF)
geotiff            the bands and the spectral indices (a folder of two COGs)
clusters           the cluster map, model, signatures and fit sample
cluster_model      an AOI's reference model, fitted on several dates
cluster_change     what changed since the AOI's earlier date
diagnostics        scores and figures of a clustering
stac_item          the partition's report and its STAC Item in the output catalog
=================  ==================================================================

:mod:`.catalog` and :mod:`.report` are the stac_item's parts. These modules do not import
Dagster: the science is in the modules beside this package, the wiring in
:mod:`geocluster_dagster.defs`.
"""
