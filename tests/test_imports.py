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


def test_the_code_location_loads_without_scikit_learn_or_matplotlib():
    """Every run, every UI reload and every CLI command imports the definitions: scikit-learn
    (about 1 s) and matplotlib load only in the steps that fit, score or draw."""
    code = (
        "import json, sys\n"
        "import geocluster_dagster.definitions\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'matplotlib', 'kneed'})))\n"
    )
    heavy = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout
    )
    assert heavy == []
