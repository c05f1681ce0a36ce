# The same install as the README: the package and its pinned-range dependencies from PyPI
# (rasterio/pyproj wheels bundle GDAL and PROJ, so no system GIS libraries are needed).
FROM python:3.11-slim

WORKDIR /opt/geocluster_dagster
COPY pyproject.toml README.md workspace.yaml ./
COPY geocluster_dagster ./geocluster_dagster
RUN pip install --no-cache-dir .

ENV DAGSTER_HOME=/var/lib/dagster \
    GEOCLUSTER_OUTPUT=/data/geocluster_output
RUN mkdir -p "$DAGSTER_HOME" "$GEOCLUSTER_OUTPUT"
VOLUME ["/data"]
EXPOSE 3000

# Demo on first start is cheap (seconds); point GEOCLUSTER_STAC_URL / GEOCLUSTER_AOI_REGISTRY
# at real sources to use the Planetary Computer and your own AOIs.
CMD ["dagster", "dev", "-h", "0.0.0.0", "-p", "3000", "-w", "workspace.yaml"]
