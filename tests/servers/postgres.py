"""A throwaway PostgreSQL 15 cluster (Debian packages, PostGIS available) on a free loopback port.

``initdb`` refuses to run as root, so when the tests run as root (CI) every server binary runs as
the ``postgres`` OS user through ``runuser``; as any other user they run as that user. The
cluster lives in one temporary directory (data and unix socket) that ``stop()`` deletes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .ports import ServerUnavailable, free_port, wait_for_port

PG_BIN = Path(os.environ.get("GEOCLUSTER_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"
DB_USER = "postgres"
# Authentication is "trust" on loopback only; clients still send a password because
# stac-fastapi-pgstac requires one in its settings.
DB_PASSWORD = "postgres"
DATABASE = "postgres"
# Debian's PostGIS (postgresql-15-postgis-3), which pgstac's schema needs.
POSTGIS = Path("/usr/share/postgresql") / PG_BIN.parent.name / "extension" / "postgis.control"

# A test database is disposable: durability settings are traded for startup and load speed.
SERVER_OPTIONS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "50",
    "shared_buffers": "32MB",
}


def require_postgres(*, postgis: bool = False) -> None:
    """Raise ServerUnavailable (a skip in the tests) unless the server (and PostGIS) is installed."""
    needed = [PG_BIN / "initdb", PG_BIN / "pg_ctl"] + ([POSTGIS] if postgis else [])
    if not all(path.exists() for path in needed):
        raise ServerUnavailable(
            "PostgreSQL 15 + PostGIS (Debian postgresql-15 postgresql-15-postgis-3)"
        )


class PostgresServer:
    """``with PostgresServer() as pg: psycopg.connect(pg.dsn)``."""

    def __init__(self) -> None:
        self.port = free_port()
        self._work = Path(tempfile.mkdtemp(prefix="geocluster-pg-"))
        self._data = self._work / "data"
        self._socket_dir = self._work / "socket"
        self._log = self._work / "postgres.log"
        self._started = False

    @property
    def dsn(self) -> str:
        return (
            f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{self.port}/{DATABASE}?sslmode=disable"
        )

    @property
    def env(self) -> dict[str, str]:
        """libpq (PG*) and stac-fastapi-pgstac (POSTGRES_*) connection settings."""
        return {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": DB_USER,
            "PGPASSWORD": DB_PASSWORD,
            "PGDATABASE": DATABASE,
        }

    @property
    def log(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def start(self) -> PostgresServer:
        try:
            require_postgres()
            self._socket_dir.mkdir()
            self._log.touch()
            if os.geteuid() == 0:
                shutil.chown(self._work, OS_USER, OS_USER)
                for path in (self._socket_dir, self._log):
                    shutil.chown(path, OS_USER, OS_USER)
            self._run(
                "initdb",
                "--pgdata",
                str(self._data),
                "--username",
                DB_USER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
                "--no-instructions",
            )
            options = " ".join(f"-c {name}={value}" for name, value in SERVER_OPTIONS.items())
            self._run(
                "pg_ctl",
                "start",
                "--pgdata",
                str(self._data),
                "--log",
                str(self._log),
                "--wait",
                "--timeout",
                "60",
                "-o",
                f"-h 127.0.0.1 -p {self.port} -k {self._socket_dir} {options}",
            )
            self._started = True
            wait_for_port(self.port)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions, closes sessions), then delete the dir."""
        if self._started or (self._data / "postmaster.pid").exists():
            try:
                self._run(
                    "pg_ctl",
                    "stop",
                    "--pgdata",
                    str(self._data),
                    "--mode",
                    "fast",
                    "--wait",
                    "--timeout",
                    "60",
                )
            except RuntimeError:
                self._kill_postmaster()
            self._started = False
        shutil.rmtree(self._work, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        # pg_ctl could not stop it: SIGQUIT is PostgreSQL's immediate shutdown.
        pid_file = self._data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 3)
        except (OSError, ValueError, IndexError):
            pass

    def _run(self, program: str, *args: str) -> None:
        command = [str(PG_BIN / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", OS_USER, "--", *command]
        result = subprocess.run(
            command,
            cwd=self._work,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} failed with code {result.returncode}:\n{result.stdout}\n"
                f"{result.stderr}\n{self.log}"
            )

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
