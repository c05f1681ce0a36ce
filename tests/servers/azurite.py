"""Azure Blob Storage on loopback: Azurite, Microsoft's storage emulator (npm's ``azurite``,
installed by scripts/test.sh into ``.venv/node_modules``).

It serves one account of its own, with a random key (``AZURITE_ACCOUNTS``). The clients find it
through the standard environment, a connection string whose ``BlobEndpoint`` names the emulator,
as they would a storage account in the cloud: :meth:`Azurite.environment`.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from .ports import ServerUnavailable, free_port, stop_process, wait_for_port

#: Where scripts/test.sh installs it (``npm install --prefix .venv azurite``).
_INSTALLED = (
    Path(__file__).resolve().parents[2] / ".venv" / "node_modules" / ".bin" / "azurite-blob"
)


def azurite_blob() -> str:
    found = shutil.which("azurite-blob") or (str(_INSTALLED) if _INSTALLED.exists() else None)
    if found is None:
        raise ServerUnavailable("Azurite (npm's azurite, which scripts/test.sh installs)")
    return found


class Azurite:
    def __init__(self, workspace: Path) -> None:
        self.workspace = Path(workspace)
        self.port = free_port()
        self.account = "geocluster" + secrets.token_hex(3)
        self.key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.account}"

    def connection_string(self, key: str | None = None) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};"
            f"AccountKey={key or self.key};BlobEndpoint={self.endpoint};"
        )

    def environment(self) -> dict[str, str]:
        """What a client needs, as the Azure SDK and GDAL read it from the environment."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string()}

    def container(self, name: str) -> str:
        """Create the container ``name``; returns its URL, ``az://name``."""
        from azure.storage.blob import BlobServiceClient

        client = BlobServiceClient.from_connection_string(self.connection_string())
        client.create_container(name)
        client.close()
        return f"az://{name}"

    def start(self) -> Azurite:
        program = azurite_blob()
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                program,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--location",
                str(self.workspace),
                "--silent",
                "--disableTelemetry",
                "--skipApiVersionCheck",  # the SDK may be newer than the emulator
            ],  # fmt: skip
            env={**os.environ, "AZURITE_ACCOUNTS": f"{self.account}:{self.key}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
