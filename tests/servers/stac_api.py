"""stac-fastapi-pgstac (the STAC API software the Planetary Computer runs) on loopback.

``StacApiServer`` installs the pgstac schema (``pypgstac migrate``) in a PostgreSQL database, loads
collections and items with pypgstac's ``Loader`` and serves the API with uvicorn in a subprocess
on a free port. The API reads the database on every request, so items loaded after start are
searchable at once. uvicorn's access log is kept so tests can count requests (e.g. pages).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods
from pypgstac.migrate import Migrate

from .ports import free_port, stop_process, wait_for_port
from .postgres import PostgresServer, require_postgres

APP_FACTORY = "stac_fastapi.pgstac.app:create_app"
# uvicorn's access log line: `INFO:     127.0.0.1:5678 - "POST /search HTTP/1.1" 200 OK`
ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3})')


class StacApiServer:
    """``with StacApiServer() as api: api.load_items([...]); Client.open(api.url)``.

    Without ``postgres`` the server starts (and later stops) its own PostgreSQL cluster.
    """

    def __init__(self, postgres: PostgresServer | None = None) -> None:
        self._own_postgres = postgres is None
        self.postgres = postgres or PostgresServer()
        self.port = free_port()
        self._work = Path(tempfile.mkdtemp(prefix="geocluster-stac-api-"))
        self._log_path = self._work / "uvicorn.log"
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The API root (landing page)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        """Everything uvicorn and the app printed, access log included."""
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path with query, status) of every request served so far, in order."""
        return [(m["method"], m["path"], int(m["status"])) for m in ACCESS_LINE.finditer(self.log)]

    def start(self) -> StacApiServer:
        try:
            require_postgres(postgis=True)
            if self._own_postgres:
                self.postgres.start()
            with self._pgstac() as db:
                Migrate(db).run_migration()
            self._serve()
        except BaseException:
            self.stop()
            raise
        return self

    def load_collections(self, collections: Iterable[dict[str, Any]]) -> None:
        """Insert or replace STAC Collection documents."""
        with self._pgstac() as db:
            Loader(db=db).load_collections(iter(list(collections)), Methods.upsert)

    def load_items(self, items: Iterable[dict[str, Any]]) -> None:
        """Insert or replace STAC Item documents; their collections must be loaded first."""
        with self._pgstac() as db:
            Loader(db=db).load_items(iter(list(items)), Methods.upsert)

    def stop(self) -> None:
        stop_process(self._process)
        self._process = None
        if self._own_postgres:
            self.postgres.stop()
        shutil.rmtree(self._work, ignore_errors=True)

    def _serve(self) -> None:
        env = {
            **os.environ,
            **self.postgres.env,
            "PYTHONUNBUFFERED": "1",
            "STAC_FASTAPI_TITLE": "geocluster test STAC API",
            "STAC_FASTAPI_DESCRIPTION": "stac-fastapi-pgstac on loopback for the geocluster tests",
            "STAC_FASTAPI_VERSION": "test",
            "STAC_FASTAPI_LANDING_ID": "geocluster-test",
            "DB_MIN_CONN_SIZE": "1",
            "DB_MAX_CONN_SIZE": "4",
        }
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            APP_FACTORY,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "info",
        ]
        with open(self._log_path, "wb") as log:
            # cwd is the work dir so no stray .env file configures the app.
            self._process = subprocess.Popen(
                command,
                cwd=self._work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(self.port, process=self._process)
            self._wait_until_healthy()
        except (RuntimeError, TimeoutError) as err:
            raise RuntimeError(f"stac-fastapi-pgstac did not start: {err}\n{self.log}") from err

    def _wait_until_healthy(self, timeout: float = 30.0) -> None:
        # The port opens before the app's lifespan has connected its database pool.
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_mgmt/ping", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    @contextlib.contextmanager
    def _pgstac(self) -> Iterator[PgstacDB]:
        db = PgstacDB(dsn=self.postgres.dsn)
        try:
            yield db
        finally:
            # disconnect() only returns the connection and forgets the pool; close the pool too.
            pool = db.pool
            db.disconnect()
            if pool is not None:
                pool.close()

    def __enter__(self) -> StacApiServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
