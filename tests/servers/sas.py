"""A SAS token endpoint on loopback, shaped like the Planetary Computer's, with short-lived tokens.

``GET /api/sas/v1/token/<account>/<container>`` answers ``{"msft:expiry": ..., "token": ...}``
as ``https://planetarycomputer.microsoft.com/api/sas/v1/token`` does, so the real
``planetary-computer`` SDK uses it when ``PC_SDK_SAS_URL`` points at :attr:`sas_url`.

A token is ``st=..&se=..&sp=rl&sv=..&sr=c&sig=..`` like Azure's: ``sig`` is an HMAC over the
account, container and expiry ``se`` with the account key, so the storage side (a
:class:`~tests.servers.fault_proxy.FaultProxy` given the same ``key``) checks it without asking
this server, and refuses it with a 403 once ``se`` has passed: ``lifetime_s`` after issue.

``advertised_lifetime_s`` is what the answer's ``msft:expiry`` claims (default: the truth). The
SDK caches a token until it has less than 60 s left by that claim, so claiming more than the
truth stands in for a storage clock running ahead of the client's, or a revoked token: the
SDK's cache keeps handing out a token the storage refuses.
"""

from __future__ import annotations

import argparse
import secrets
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from .fault_proxy import CONTROL, _ServerProcess, sas_signature, serve, server_arguments


class SasTokenServer(_ServerProcess):
    """``with SasTokenServer(lifetime_s=2) as sas: monkeypatch.setenv("PC_SDK_SAS_URL", sas.sas_url)``."""

    module = "tests.servers.sas"

    def __init__(
        self,
        *,
        lifetime_s: float = 2.0,
        advertised_lifetime_s: float | None = None,
        stop_after_s: float = 600.0,
    ) -> None:
        self.key = secrets.token_hex(16)
        """The storage account key: give it to the FaultProxy that plays the storage."""
        advertised = lifetime_s if advertised_lifetime_s is None else advertised_lifetime_s
        args = ["--key", self.key, "--lifetime", str(lifetime_s), "--advertised", str(advertised)]
        super().__init__(args, stop_after_s)

    @property
    def sas_url(self) -> str:
        return self.url("api/sas/v1/token")

    @property
    def issued(self) -> int:
        """Tokens handed out so far."""
        return self.control("stats")["issued"]


class _TokenService:
    def __init__(self, key: str, lifetime_s: float, advertised_s: float) -> None:
        self.key = key
        self.lifetime_s = lifetime_s
        self.advertised_s = advertised_s
        self.issued = 0

    def app(self):
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/api/sas/v1/token/{account}/{container}", self.token)
        app.router.add_get(CONTROL + "/stats", self.stats)
        return app

    async def token(self, request):
        from aiohttp import web

        account, container = request.match_info["account"], request.match_info["container"]
        now = datetime.now(timezone.utc)
        expiry = _iso(now + timedelta(seconds=self.lifetime_s))
        fields = {
            "st": _iso(now),
            "se": expiry,
            "sp": "rl",
            "sv": "2024-05-04",
            "sr": "c",
            "sig": sas_signature(self.key, account, container, expiry),
        }
        self.issued += 1
        claimed = _iso(now + timedelta(seconds=self.advertised_s))
        token = "&".join(f"{name}={quote(value, safe='')}" for name, value in fields.items())
        return web.json_response({"msft:expiry": claimed, "token": token})

    async def stats(self, request):
        from aiohttp import web

        return web.json_response({"issued": self.issued})


def _iso(moment: datetime) -> str:
    # Sub-second precision: tokens a second long must not be rounded to zero.
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key", required=True)
    parser.add_argument("--lifetime", type=float, required=True)
    parser.add_argument("--advertised", type=float, required=True)
    options = server_arguments(parser)
    service = _TokenService(options.key, options.lifetime, options.advertised)
    serve(service.app(), options.port, options.parent, options.stop_after)
