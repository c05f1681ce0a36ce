# The production image: one image, run as separate processes (see deploy/docker-compose.yml):
#   dagster-webserver -h 0.0.0.0 -p 3000 -w workspace.yaml     (the default command)
#   dagster-daemon run -w workspace.yaml                       (queued runs, sensors, schedules, run monitoring)
#   dask scheduler / dask worker tcp://dask-scheduler:8786      (optional, GEOCLUSTER_DASK_SCHEDULER)
# with the Dagster instance of deploy/dagster.yaml (runs and events in PostgreSQL: set
# DAGSTER_POSTGRES_URL=postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB).
# The same install as the README: the package and its dependencies from PyPI, as constraints.txt pins them
# (rasterio/pyproj wheels bundle GDAL and PROJ, so no system GIS libraries are needed).
FROM python:3.11-slim

WORKDIR /opt/geocluster_dagster
COPY pyproject.toml constraints.txt README.md LICENSE workspace.yaml ./
COPY geocluster_dagster ./geocluster_dagster
# dagster-postgres: deploy/dagster.yaml's storage (the same range as the test extra); every
# package at the version the tests passed with (constraints.txt).
RUN pip install --no-cache-dir -c constraints.txt . "dagster-postgres>=0.29.5,<0.30"
# The demo's catalog, scenes and AOIs, in the image: every container (the daemon's runs, each Dask
# worker) reads the same files at the same path, with no volume between them
# (deploy/docker-compose.yml points GEOCLUSTER_STAC_URL and GEOCLUSTER_AOI_REGISTRY here).
RUN python -c "from geocluster_dagster.demo import build_demo; build_demo('/opt/geocluster_dagster/demo')"

ENV DAGSTER_HOME=/var/lib/dagster \
    GEOCLUSTER_OUTPUT=/data/geocluster_output
COPY deploy/dagster.yaml ${DAGSTER_HOME}/dagster.yaml
# Everything runs as an unprivileged user. $DAGSTER_HOME/storage holds the runs' compute logs:
# mount one volume there for the webserver (which shows them) and the daemon (whose runs write them).
RUN useradd --system --uid 1000 --home-dir "$DAGSTER_HOME" geocluster \
    && mkdir -p "$DAGSTER_HOME/storage" "$GEOCLUSTER_OUTPUT" \
    && chown -R geocluster "$DAGSTER_HOME" /data
USER geocluster
VOLUME ["/data"]
EXPOSE 3000

# Nothing configured, the runs use the embedded demo (seconds); point GEOCLUSTER_STAC_URL /
# GEOCLUSTER_AOI_REGISTRY at real sources to use the Planetary Computer and your own AOIs.
CMD ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "workspace.yaml"]
