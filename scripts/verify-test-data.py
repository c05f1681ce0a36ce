#!/usr/bin/env python3
"""Check the real test data against tests/test_data.json: every file there, its size and SHA-256.

    scripts/verify-test-data.py                 # ../shared/data, beside this checkout
    scripts/verify-test-data.py /path/to/data   # another copy

Exit 0 when every file is present and equal; else each missing or different file is named,
with the repository and commit its dataset comes from, and the exit status is 1. Standard
library only: it runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "tests" / "test_data.json"


def problems(data: Path, manifest: dict) -> list[str]:
    """One line per file that is missing or differs from the manifest."""
    found = []
    for name, expected in manifest["files"].items():
        path = data / name
        dataset = manifest["datasets"].get(name.split("/")[0], {})
        where = f"(from {dataset.get('source', 'see shared/data/README.md')})"
        if not path.is_file():
            found.append(f"missing: {name} {where}")
            continue
        content = path.read_bytes()
        if len(content) != expected["bytes"]:
            found.append(
                f"wrong size: {name}: {len(content)} bytes, expected {expected['bytes']} {where}"
            )
        elif hashlib.sha256(content).hexdigest() != expected["sha256"]:
            found.append(f"different content: {name} (SHA-256 differs) {where}")
    return found


def main(argv: list[str]) -> int:
    data = Path(argv[1]) if len(argv) > 1 else ROOT.parent / "shared" / "data"
    manifest = json.loads(MANIFEST.read_text())
    if not data.is_dir():
        print(
            f"verify-test-data: no folder {data}: the tests read the real scenes there.",
            file=sys.stderr,
        )
        for name, dataset in manifest["datasets"].items():
            print(f"  {name}/: {dataset['source']} ({dataset['license']})", file=sys.stderr)
        print(
            "  scripts/fetch-test-data.py downloads and checks them (tests/test_data.json names "
            "each file's repository, commit and path).",
            file=sys.stderr,
        )
        return 1
    found = problems(data, manifest)
    for line in found:
        print(f"verify-test-data: {line}", file=sys.stderr)
    if not found:
        print(f"verify-test-data: {len(manifest['files'])} files in {data} as expected")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
