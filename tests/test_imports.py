"""The science modules stay plain: importing them pulls in neither Dagster nor matplotlib."""

from __future__ import annotations

import json
import subprocess
import sys

PLAIN = [
    "aoi",
    "search",
    "bands",
    "mask",
    "load",
    "composite",
    "indices",
    "export",
    "cluster",
    "evaluate",
    "storage",
    "stack_recipe",
    "cluster_product",
    "blocks",
    "remote",
    "demo",
    "errors",
    "progress",
]


def test_plain_modules_do_not_import_dagster_or_matplotlib():
    code = (
        "import importlib, json, sys\n"
        f"for name in {PLAIN!r}: importlib.import_module('geocluster_dagster.' + name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'dagster', 'matplotlib', 'dagster_webserver'})))\n"
    )
    heavy = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout
    )
    assert heavy == []
