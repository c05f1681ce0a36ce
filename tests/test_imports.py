"""The package's layers: the science and the products stay plain (importing them pulls in
neither Dagster nor matplotlib), imports go one way (no circle), the Dagster layer only wires,
and the test modules stand alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def loaded(imports: str, heavy: set[str]) -> list[str]:
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
    assert loaded(imports, {"dagster", "matplotlib", "dagster_webserver"}) == []


def test_the_code_location_loads_without_scikit_learn_or_matplotlib():
    """Every run, every UI reload and every CLI command imports the definitions: scikit-learn
    (about 1 s) and matplotlib load only in the steps that fit, score or draw."""
    imports = "import geocluster_dagster.definitions"
    assert loaded(imports, {"sklearn", "matplotlib", "kneed"}) == []


def _imports_of(path) -> set[str]:
    """The modules a source file imports, anywhere in it (lazy imports too), absolute."""
    import ast

    package = ".".join(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package += ".__init__"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: -node.level]
                base = ".".join([*parent, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "geocluster_dagster"


def _module_graph() -> dict[str, set[str]]:
    files = {
        ".".join(p.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts).removesuffix(
            ".__init__"
        ): p
        for p in PACKAGE_ROOT.rglob("*.py")
    }
    return {name: _imports_of(path) & set(files) - {name} for name, path in files.items()}


def test_the_package_has_no_import_circle():
    graph = _module_graph()
    assert "geocluster_dagster.products.clusters" in graph["geocluster_dagster.defs.assets"]
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for other in sorted(graph[name]):
            if other != "geocluster_dagster":  # the package's own __init__ (its version)
                visit(other, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_no_test_module_imports_another():
    """Shared fixtures live in conftest.py, shared helpers in tests/helpers.py."""
    tests = Path(__file__).resolve().parent
    for path in sorted(tests.glob("test_*.py")):
        imported = {name.split(".")[-1] if "." in name else name for name in _imports_of_test(path)}
        assert not {n for n in imported if n.startswith("test_")}, path.name


def _imports_of_test(path) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_dagster_layer_uses_public_dagster_names_and_the_assets_do_no_file_io():
    defs = PACKAGE_ROOT / "defs"
    for path in defs.glob("*.py"):
        assert not [n for n in _imports_of(path) if n.startswith("dagster._")], path.name
    # The assets read inputs with the products' open_ functions and write with their writers.
    for name in ("assets.py", "map_comparisons.py", "steps.py"):
        source = (defs / name).read_text()
        for io in ("open(", "read_text", "write_text", "json.load", "rasterio", ".unlink(",
                   ".rename(", ".mkdir(", ".exists()", "write_json"):  # fmt: skip
            assert io not in source, f"defs/{name} does file IO ({io})"
    for name in ("assets.py", "map_comparisons.py"):
        assert len((defs / name).read_text().splitlines()) < 600, name
