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


def _loaded(imports: str, heavy: set[str]) -> list[str]:
    """Which of the ``heavy`` top-level packages a fresh interpreter has loaded after ``imports``."""
    code = (
        f"import json, sys\n{imports}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(heavy)!r}))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_plain_modules_do_not_import_dagster_or_matplotlib():
    imports = "\n".join(f"import geocluster_dagster.{name}" for name in PLAIN)
    assert _loaded(imports, {"dagster", "matplotlib", "dagster_webserver"}) == []


def test_the_code_location_loads_without_scikit_learn_or_matplotlib():
    """Every run, every UI reload and every CLI command imports the definitions: scikit-learn
    (about 1 s) and matplotlib load only in the steps that fit, score or draw."""
    imports = "import geocluster_dagster.definitions"
    assert _loaded(imports, {"sklearn", "matplotlib", "kneed"}) == []
