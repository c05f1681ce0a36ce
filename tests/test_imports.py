"""The science modules stay plain: importing them pulls in neither Dagster nor matplotlib."""

from __future__ import annotations

import json
import subprocess
import sys

#: The Dagster layer (it wires the science to Dagster) and the figures (matplotlib is their job).
NOT_PLAIN = {"defs", "definitions", "cli", "terminal", "__main__", "plot", "plot_change"}


def _plain_modules() -> list[str]:
    """Every module of the package but :data:`NOT_PLAIN`: a new module is guarded by default."""
    import pkgutil

    import geocluster_dagster

    names = [
        info.name.removeprefix("geocluster_dagster.")
        for info in pkgutil.walk_packages(geocluster_dagster.__path__, "geocluster_dagster.")
    ]
    return sorted(n for n in names if n.split(".")[0] not in NOT_PLAIN)


PLAIN = _plain_modules()


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
    assert {"change", "change_states", "naming", "cluster", "demo.landscape"} <= set(PLAIN)
    imports = "\n".join(f"import geocluster_dagster.{name}" for name in PLAIN)
    assert _loaded(imports, {"dagster", "matplotlib", "dagster_webserver"}) == []


def test_the_code_location_loads_without_scikit_learn_or_matplotlib():
    """Every run, every UI reload and every CLI command imports the definitions: scikit-learn
    (about 1 s) and matplotlib load only in the steps that fit, score or draw."""
    imports = "import geocluster_dagster.definitions"
    assert _loaded(imports, {"sklearn", "matplotlib", "kneed"}) == []
