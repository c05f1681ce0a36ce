"""Free loopback ports, waiting for servers to accept connections, and stopping them."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time


class ServerUnavailable(RuntimeError):
    """A server the tests start is not installed; tests/conftest.py reports the test as skipped."""

    def __init__(self, needs: str) -> None:
        super().__init__(f"needs {needs}: run scripts/test.sh as root")


def installed(program: str, package: str) -> str:
    """The path of ``program``, or a skip naming the Debian ``package`` that provides it."""
    path = shutil.which(program)
    if not path:
        raise ServerUnavailable(f"{program} (Debian's {package})")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, *, timeout: float = 30.0, process=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"server process exited with code {process.returncode} before listening on {port}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def stop_process(process: subprocess.Popen | None, *, timeout: float = 10.0) -> None:
    """Terminate a server process, and kill it if it does not exit within ``timeout``."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
