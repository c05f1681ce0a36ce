"""A fault-injecting HTTP proxy on loopback, programmable per test, in front of a real upstream.

``FaultProxy(upstream)`` forwards every request (method, path, ``Range`` and other headers) to
``upstream`` (nginx, a STAC API) and sends the answer back, unless a programmed :class:`Fault`
matches the request first:

- ``Fault.status(503, times=3, retry_after=1)``: answer 503 (or 429, 404, ...) instead;
- ``Fault.reset(times=2)``: drop the connection with a TCP reset before answering;
- ``Fault.delay(5.0, times=1)``: answer only after 5 s (slower than the client's timeout);
- ``Fault.truncate(times=2)``: send the upstream's headers (its full Content-Length) but only
  part of the body, then close the connection;
- ``Fault.status(404, times=None, path="B4.TIF")``: a permanent fault on one path.

Faults match on a substring of the path (and optionally the method), and fire on the
``skip + 1``-th to ``skip + times``-th matching request (``times=None``: forever).
``proxy.upstream_down = True``, or an upstream that is not running, makes every forwarded
request a 502, as a real gateway answers. With ``sas_key`` the proxy is also the storage side
of tests/servers/sas.py: it answers 403, as Azure does, to a blob request whose SAS token is
missing, forged or expired.

With ``keep_host`` it stands in front of an S3-compatible server: the client's ``Host`` header and
the query string go upstream as they came, so a request signed for the proxy (AWS SigV4 signs
both) is still valid there.

It also works as a forward HTTP proxy (``GDAL_HTTP_PROXY``): requests in absolute form
(``GET http://account.blob.core.windows.net/path``) go to the same upstream, whatever the host.

The server runs in its own process (``python -m tests.servers.fault_proxy``): GDAL holds the
GIL in some network calls (opening a dataset), so a server thread in the test process would
stall until GDAL's timeout. The test talks to it over a small control API under
``/__control__/`` (add faults, read the log of what it did). It stops on ``stop()`` / leaving
``with``, when the test process dies, and after ``stop_after_s`` whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs

from .ports import free_port, stop_process, wait_for_port

CONTROL = "/__control__"
_REPO_ROOT = Path(__file__).resolve().parents[2]
# Hop-by-hop headers (RFC 9110 7.6.1) and the ones recomputed per hop are not forwarded.
_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


@dataclass
class Fault:
    """One programmed misbehaviour; build it with the class methods."""

    kind: str
    """'status', 'reset', 'delay' or 'truncate'."""
    path: str = ""
    """Fires only on requests whose path contains this ('' = every request)."""
    times: int | None = 1
    """How many matching requests it hits; None = every one (a permanent fault)."""
    skip: int = 0
    """Matching requests let through untouched before it starts firing."""
    method: str | None = None
    """Fires only on this method (e.g. 'GET': block reads, not the HEAD of an open)."""
    code: int = 503
    """Status code of a 'status' fault."""
    retry_after: float | None = None
    """Retry-After header (seconds) of a 'status' fault."""
    seconds: float = 0.0
    """Delay of a 'delay' fault before the real answer."""
    keep_fraction: float = 0.5
    """Share of the body a 'truncate' fault sends before closing the connection."""
    seen: int = field(default=0, compare=False)
    fired: int = field(default=0, compare=False)

    @classmethod
    def status(cls, code: int, *, retry_after: float | None = None, **match) -> Fault:
        return cls("status", code=code, retry_after=retry_after, **match)

    @classmethod
    def reset(cls, **match) -> Fault:
        return cls("reset", **match)

    @classmethod
    def delay(cls, seconds: float, **match) -> Fault:
        return cls("delay", seconds=seconds, **match)

    @classmethod
    def truncate(cls, *, keep_fraction: float = 0.5, **match) -> Fault:
        return cls("truncate", keep_fraction=keep_fraction, **match)

    def claims(self, method: str, path: str) -> bool:
        """Whether this fault fires on this request (and count it if so)."""
        if self.path not in path or (self.method is not None and self.method != method):
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True

    @property
    def label(self) -> str:
        return f"status {self.code}" if self.kind == "status" else self.kind


@dataclass(frozen=True)
class Event:
    """What the proxy did with one request."""

    method: str
    path: str
    range: str | None
    outcome: str
    """'forwarded', 'upstream down', 'refused (expired)' etc., or a fault's label."""


class _ServerProcess:
    """A server module of this package run as ``python -m`` on a free port, with a control API."""

    module = ""

    def __init__(self, args: list[str], stop_after_s: float) -> None:
        self.port = free_port()
        self._args = [*args, "--port", str(self.port), "--stop-after", str(stop_after_s)]
        self._process: subprocess.Popen | None = None
        # The control API is on loopback: never send it through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str | Path) -> str:
        return f"{self.base_url}/{Path(path).as_posix().lstrip('/')}"

    def start(self):
        self._process = subprocess.Popen(
            [sys.executable, "-m", self.module, "--parent", str(os.getpid()), *self._args],
            cwd=_REPO_ROOT,
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self._process)
        return self

    def stop(self) -> None:
        stop_process(self._process)

    def control(self, name: str, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.base_url}{CONTROL}/{name}", data=data)
        with self._opener.open(request, timeout=10) as response:
            return json.loads(response.read())

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class FaultProxy(_ServerProcess):
    """``with FaultProxy(nginx.base_url) as proxy: proxy.add(Fault.status(503, times=2))``.

    :meth:`url` puts a random first path segment, unique to this proxy, in front of the
    upstream path (the proxy strips it): GDAL caches what it read per URL for the life of the
    process, and a port can be reused, so each proxy's URLs must be new to GDAL.
    """

    module = "tests.servers.fault_proxy"

    def __init__(
        self,
        upstream: str,
        *,
        sas_key: str | None = None,
        keep_host: bool = False,
        stop_after_s: float = 600.0,
    ) -> None:
        self.prefix = f"p{secrets.token_hex(4)}"
        args = ["--upstream", upstream.rstrip("/"), "--prefix", self.prefix]
        if sas_key is not None:
            args += ["--sas-key", sas_key]
        if keep_host:
            args += ["--keep-host"]
        super().__init__(args, stop_after_s)

    def url(self, path: str | Path) -> str:
        """The proxied URL of an upstream path."""
        return f"{self.base_url}/{self.prefix}/{Path(path).as_posix().lstrip('/')}"

    @property
    def proxy_address(self) -> str:
        """``host:port`` for GDAL_HTTP_PROXY."""
        return f"127.0.0.1:{self.port}"

    def add(self, *faults: Fault) -> FaultProxy:
        self.control("faults", [asdict(f) for f in faults])
        return self

    def clear(self) -> None:
        """Forget faults and the log; the upstream is up again."""
        self.control("clear", {})

    @property
    def upstream_down(self) -> bool:
        return self.control("upstream_down")["down"]

    @upstream_down.setter
    def upstream_down(self, down: bool) -> None:
        self.control("upstream_down", {"down": down})

    @property
    def log(self) -> list[Event]:
        return [Event(**e) for e in self.control("log")]

    def outcomes(self, *, path: str = "") -> Counter:
        return Counter(e.outcome for e in self.log if path in e.path)

    def count(self, outcome: str | None = None, *, path: str = "") -> int:
        """Requests with this outcome (None: all), optionally only paths containing ``path``."""
        return sum(
            1 for e in self.log if (outcome is None or e.outcome == outcome) and path in e.path
        )


# ---------------------------------------------------------------- server side (own process)


def sas_signature(key: str, account: str, container: str, expiry: str) -> str:
    """The token's ``sig``: an HMAC the storage can check without asking the token service."""
    digest = hmac.new(key.encode(), f"{account}\n{container}\n{expiry}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode()


class _Proxy:
    def __init__(
        self, upstream: str, prefix: str, sas_key: str | None, keep_host: bool = False
    ) -> None:
        self.upstream = upstream
        self.prefix = f"/{prefix}"
        self.sas_key = sas_key
        self.keep_host = keep_host
        self.upstream_down = False
        self.faults: list[Fault] = []
        self.log: list[Event] = []
        self.session = None

    def app(self):
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", CONTROL + "/{name}", self.control)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._open_session)
        app.on_cleanup.append(self._close_session)
        return app

    async def _open_session(self, app) -> None:
        import aiohttp

        # Nothing pooled: every forwarded request is independent of the faults before it.
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60),
            connector=aiohttp.TCPConnector(force_close=True),
            auto_decompress=False,
        )

    async def _close_session(self, app) -> None:
        await self.session.close()

    async def control(self, request):
        from aiohttp import web

        name = request.match_info["name"]
        payload = await request.json() if request.can_read_body else None
        if name == "faults" and payload is not None:
            self.faults.extend(
                Fault(**{k: v for k, v in f.items() if k not in ("seen", "fired")}) for f in payload
            )
        elif name == "clear":
            self.faults.clear()
            self.log.clear()
            self.upstream_down = False
        elif name == "upstream_down" and payload is not None:
            self.upstream_down = bool(payload["down"])
        if name == "log":
            return web.json_response([asdict(e) for e in self.log])
        return web.json_response({"down": self.upstream_down, "faults": len(self.faults)})

    def _path(self, request) -> str:
        """The upstream path: without this proxy's prefix, if the request has it."""
        path = request.path
        return path[len(self.prefix) :] if path.startswith(self.prefix + "/") else path

    def _record(self, request, outcome: str) -> None:
        self.log.append(
            Event(request.method, self._path(request), request.headers.get("Range"), outcome)
        )

    async def handle(self, request):
        from aiohttp import web

        path = self._path(request)
        fault = next((f for f in self.faults if f.claims(request.method, path)), None)
        if fault is not None:
            self._record(request, fault.label)
            if fault.kind == "status":
                headers = (
                    {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
                )
                return web.Response(
                    status=fault.code, text=f"injected {fault.code}\n", headers=headers
                )
            if fault.kind == "reset":
                _reset(request)
                raise asyncio.CancelledError  # nothing more can be sent on this connection
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
        refusal = self._refusal(request)
        if refusal is not None:
            self._record(request, f"refused ({refusal})")
            return web.Response(status=403, text=f"AuthenticationFailed: {refusal}\n")
        if self.upstream_down:
            self._record(request, "upstream down")
            return web.Response(status=502, text="upstream down\n")
        truncate = fault if fault is not None and fault.kind == "truncate" else None
        return await self._forward(request, record=fault is None, truncate=truncate)

    def _refusal(self, request) -> str | None:
        """Why Azure storage would refuse this request's SAS token (None: it would not)."""
        if self.sas_key is None:
            return None
        query = parse_qs(request.query_string)
        expiry, sig = query.get("se", [None])[0], query.get("sig", [None])[0]
        if expiry is None or sig is None:
            return "no token"
        account = request.host.split(".", 1)[0]
        container = self._path(request).lstrip("/").split("/", 1)[0]
        if not hmac.compare_digest(sig, sas_signature(self.sas_key, account, container, expiry)):
            return "bad signature"
        if datetime.fromisoformat(expiry.replace("Z", "+00:00")) <= datetime.now(timezone.utc):
            return "expired"
        return None

    async def _forward(self, request, *, record: bool, truncate: Fault | None):
        import aiohttp
        from aiohttp import web

        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        target = self.upstream + self._path(request)
        if self.keep_host:  # a signed S3 request: its Host and query are part of the signature
            headers["Host"] = request.headers["Host"]
            target += f"?{request.query_string}" if request.query_string else ""
        # (Otherwise the token in the query is the storage front's business, not the server's.)
        try:
            upstream = await self.session.request(
                request.method,
                target,
                headers=headers,
                data=await request.read(),
            )
        except (aiohttp.ClientConnectionError, TimeoutError):
            self._record(request, "upstream down")
            return web.Response(status=502, text="upstream unreachable\n")
        if record:
            self._record(request, "forwarded")
        async with upstream:
            body = await upstream.read()
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() not in _HOP_HEADERS:
                response.headers[key] = value
        # A HEAD answer has no body but keeps the upstream's length: it is the file size.
        response.content_length = upstream.content_length if request.method == "HEAD" else len(body)
        await response.prepare(request)
        if truncate is None:
            if body:
                await response.write(body)
            await response.write_eof()
            return response
        await response.write(body[: int(len(body) * truncate.keep_fraction)])
        # Close with the promised Content-Length unmet: the client sees a short body.
        request.transport.close()
        raise asyncio.CancelledError


def _reset(request) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), as a crashing middlebox does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def serve(app, port: int, parent: int, stop_after_s: float) -> None:
    """Serve ``app`` on loopback until stop_after_s, SIGTERM, or the parent process is gone."""
    from aiohttp import web

    async def run() -> None:
        # handler_cancellation: a client that gave up (timeout) ends its handler.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, shutdown_timeout=1).start()
        deadline = time.monotonic() + stop_after_s
        try:
            while time.monotonic() < deadline and os.getppid() == parent:
                await asyncio.sleep(0.5)
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def server_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--stop-after", type=float, default=600.0)
    return parser.parse_args()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--sas-key")
    parser.add_argument("--keep-host", action="store_true")
    options = server_arguments(parser)
    proxy = _Proxy(options.upstream, options.prefix, options.sas_key, options.keep_host)
    serve(proxy.app(), options.port, options.parent, options.stop_after)
