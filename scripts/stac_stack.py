"""Bring up the tests' live STAC stack by hand, print its URLs, and tear it down on Ctrl-C.

The stack is the one the tests use (tests/servers/fixtures.py: ``stac_stack``): nginx serving the
real scenes of ../shared/data and the demo catalog with byte ranges, and stac-fastapi-pgstac on a
throwaway PostgreSQL/PostGIS cluster loaded with the real STAC documents and items pointing at
nginx. Everything listens on 127.0.0.1 on free ports and lives in temporary directories.

    python scripts/stac_stack.py
    curl "$STAC_API_URL/collections"        # in another shell, with the printed URL

Needs the Debian packages postgresql-15, postgresql-15-postgis-3 and nginx-light, and the
``test`` extra (``pip install -e ".[test]"``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.servers.fixtures import stac_stack  # noqa: E402


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    # Ctrl-C and SIGTERM (e.g. `kill`) unwind the stack, so servers stop and files are deleted;
    # SIGINT is set explicitly because a shell starts background jobs with it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    started = time.monotonic()
    with stac_stack() as stack:
        print(f"STAC_API_URL={stack.api.url}")
        print(f"FILE_SERVER_URL={stack.files.base_url}")
        print(f"DEMO_AOI_REGISTRY={stack.folder.demo.aoi_registry}")
        print(
            f"# up in {time.monotonic() - started:.1f} s; real scenes under "
            f"{stack.files.base_url}/shared/, the demo catalog under {stack.files.base_url}/demo/.\n"
            f"# Materialize against it: StacCatalog(url='{stack.api.url}') and "
            f"AOIRegistry(path='{stack.folder.demo.aoi_registry}'). Ctrl-C stops everything.",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nstopping ...", flush=True)
    print("stopped.")


if __name__ == "__main__":
    main()
