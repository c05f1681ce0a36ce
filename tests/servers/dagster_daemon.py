"""A Dagster deployment on loopback: a database for the instance on a PostgresServer, and
``dagster-daemon run`` over the code location, stopped with everything it started."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil
import psycopg

from .postgres import PostgresServer

BIN = Path(sys.executable).parent


def dagster_database(pg: PostgresServer, name: str = "dagster") -> str:
    """Create database ``name`` on ``pg``; its URL for dagster-postgres.

    The URL names the driver: SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3 (installed
    for pgstac), whose placeholders break dagster-postgres's queries.
    """
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = pg.dsn.replace("/postgres?", f"/{name}?")
    return url.replace("postgresql://", "postgresql+psycopg2://")


@contextlib.contextmanager
def running_daemon(env: Mapping[str, str], cwd: Path, log: Path, owned_by: str) -> Iterator[None]:
    """The AOIs synced into the instance of ``env``, then the daemon, logging to ``log``.

    On exit the daemon is stopped, and every process whose command line holds ``owned_by``
    (run workers and the daemon's code server can outlive it) is killed.
    """
    subprocess.run([BIN / "geocluster", "sync-aois"], env=env, check=True, capture_output=True)
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [BIN / "dagster-daemon", "run", "-m", "geocluster_dagster.definitions"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
        try:
            yield
        finally:
            daemon.send_signal(signal.SIGINT)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
            for proc in psutil.process_iter(["cmdline"]):
                if any(owned_by in part for part in proc.info["cmdline"] or []):
                    proc.kill()
