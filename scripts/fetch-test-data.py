#!/usr/bin/env python3
"""Download the real test data from the public repositories it comes from, and check it.

    scripts/fetch-test-data.py                    # into ../shared/data, beside this checkout
    scripts/fetch-test-data.py /path/to/data      # into another folder
    scripts/fetch-test-data.py --base-url URL     # from a mirror laid out like the default

Every file of tests/test_data.json is fetched from its repository at the recorded commit
(``<base-url>/<owner>/<repo>/<commit>/<path>``, by default raw.githubusercontent.com), taken
out of the .tar.gz archive or the recorded vcrpy cassette it is a member of where it is one,
checked against its size and SHA-256, and only then written (a temporary file renamed). A file
already present and equal is kept. Exit 0 when every file is there and equal; else each file
that could not be fetched or differs is named, and the exit status is 1.

Standard library only, except PyYAML for the cassette extracts (``pip install pyyaml``; the
project's environment has it).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "tests" / "test_data.json"
BASE_URL = "https://raw.githubusercontent.com"


@functools.lru_cache(maxsize=8)  # an archive or cassette holds several files: fetched once
def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (https, or a mirror the user names)
        data: bytes = response.read()
    return data


def extract(data: bytes, source: dict) -> bytes:
    """The file's bytes from what its source URL returned: the whole file, a member of a
    .tar.gz archive, or the response body of one interaction of a vcrpy cassette."""
    if "member" in source:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            member = archive.extractfile(source["member"])
            if member is None:
                raise ValueError(f"{source['member']} is not a file in {source['path']}")
            return member.read()
    if "interaction" in source:
        try:
            import yaml
        except ImportError:
            raise ValueError(
                "reading a recorded cassette needs PyYAML: pip install pyyaml"
            ) from None
        cassette = yaml.safe_load(data)
        body = cassette["interactions"][source["interaction"]]["response"]["body"]["string"]
        return body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return data


def fetch(name: str, expected: dict, data_dir: Path, base_url: str) -> str | None:
    """Fetch one file into ``data_dir``; None when it is there and equal, else what went wrong."""
    target = data_dir / name
    if target.is_file() and _matches(target.read_bytes(), expected):
        return None
    source = expected["from"]
    url = f"{base_url.rstrip('/')}/{source['repo']}/{source['commit']}/{source['path']}"
    try:
        content = extract(download(url), source)
    except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError) as err:
        return f"could not fetch {name} from {url}: {err}"
    if not _matches(content, expected):
        return (
            f"{name} from {url} is not the file the tests expect ({len(content)} bytes, "
            f"expected {expected['bytes']}, or a different SHA-256): not written"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=target.parent, prefix=f".{target.name}.", delete=False
    ) as tmp:
        tmp.write(content)
    os.replace(tmp.name, target)
    return None


def _matches(content: bytes, expected: dict) -> bool:
    return (
        len(content) == expected["bytes"]
        and hashlib.sha256(content).hexdigest() == expected["sha256"]
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--base-url", default=BASE_URL, help=f"default {BASE_URL}")
    args = parser.parse_args(argv[1:])
    manifest = json.loads(MANIFEST.read_text())
    problems = [
        problem
        for name, expected in manifest["files"].items()
        if (problem := fetch(name, expected, args.data_dir, args.base_url)) is not None
    ]
    for problem in problems:
        print(f"fetch-test-data: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"fetch-test-data: {len(manifest['files'])} files in {args.data_dir} as expected")
    for dataset, about in manifest["datasets"].items():
        print(f"  {dataset}/: {about['source']}; licence: {about['license']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
