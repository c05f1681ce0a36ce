"""nginx from Debian serving a folder over HTTP with byte ranges, as cloud object stores do."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from .ports import ServerUnavailable, free_port, stop_process, wait_for_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONFIG = """
worker_processes 1;
daemon off;
error_log {work}/error.log warn;
pid {work}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log {work}/access.log;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    types {{ image/tiff tif TIF tiff; application/json json; }}
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ disable_symlinks off; }}
    }}
}}
"""


class NginxServer:
    """``with NginxServer(folder) as server: server.url("a/b.tif")``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.port = free_port()
        self._work = Path(tempfile.mkdtemp(prefix="geocluster-nginx-"))
        self._process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, relative: str | Path) -> str:
        return f"{self.base_url}/{Path(relative).as_posix().lstrip('/')}"

    @property
    def access_log(self) -> Path:
        return self._work / "access.log"

    def start(self) -> NginxServer:
        if not Path(NGINX).exists():
            raise ServerUnavailable("nginx (Debian nginx-light)")
        conf = self._work / "nginx.conf"
        conf.write_text(CONFIG.format(work=self._work, port=self.port, root=self.root))
        self._process = subprocess.Popen(
            [NGINX, "-c", str(conf), "-p", str(self._work)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.port, process=self._process)
        return self

    def stop(self) -> None:
        stop_process(self._process)
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
