"""The declared dependencies are the imported ones.

pyproject.toml's ``dependencies`` (and the ``milvus`` extra) against the top-level imports of
src/unifashion, found with :mod:`ast` (every ``import`` in a module, lazy ones inside functions
included), and the ``dev`` extra against the imports of tests/ and benchmarks/. An import that no
declared distribution provides fails, and so does a declared distribution that nothing imports
unless it is named, with the reason, in an allow-list below. Installed versions must satisfy the
declared ranges (the ranges are the ones tested).
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "unifashion"
#: Folders whose imports the ``dev`` extra must cover (with the package's own dependencies).
DEV_FOLDERS = [REPO / "tests", REPO / "benchmarks", REPO / "experiments"]
FIRST_PARTY = {"unifashion"}

#: Distributions of the package that no module of src/unifashion imports by their own name.
RUNTIME_ONLY = {
    "python-multipart": "FastAPI parses the service's form uploads (multipart/form-data) with it",
    "tensorboard": "torch.utils.tensorboard imports it for the trainer's SummaryWriter",
    "milvus-lite": "pymilvus runs the local database file (a milvus_uri ending in .db) through it",
}
#: Distributions of the dev extra that tests/ and benchmarks/ use without importing them.
DEV_RUNTIME_ONLY = {
    "ruff": "a command: make lint",
    "import-linter": "a command (lint-imports): make lint",
    "schemathesis": "a command, run by tests/serving/test_schema_fuzz.py",
    "httpx2": "starlette's TestClient (fastapi.testclient) imports it",
}
#: Import names of optional distributions that may not be installed here, where
#: importlib.metadata cannot map them (a name not here and not installed maps to itself).
NOT_INSTALLED_DISTRIBUTIONS = {"milvus_lite": "milvus-lite"}


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level_imports(root: Path) -> dict[str, set[str]]:
    """Top-level names of the absolute imports of every ``.py`` under ``root``, and the files."""
    found: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(root)))
    return found


def local_modules(*roots: Path) -> set[str]:
    """Names the scripts of ``roots`` import from each other (sys.path holds their folders)."""
    return {path.stem for root in roots for path in root.rglob("*.py")}


def third_party(imports: dict[str, set[str]], local: set[str] = frozenset()) -> dict[str, set[str]]:
    return {name: files for name, files in imports.items()
            if name not in sys.stdlib_module_names and name not in FIRST_PARTY and name not in local}


@functools.cache
def installed_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()  # reads every installed distribution: once


def distributions_of(import_name: str) -> set[str]:
    """The normalized distributions that provide top-level module ``import_name``."""
    installed = installed_distributions().get(import_name)
    if installed:
        return {normalize(d) for d in installed}
    return {normalize(NOT_INSTALLED_DISTRIBUTIONS.get(import_name, import_name))}


def declared(*groups: str) -> dict[str, Requirement]:
    """The requirements of pyproject.toml's ``dependencies`` ("core") and the named extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = {"core": project["dependencies"], **project["optional-dependencies"]}
    return {normalize(r.name): r for group in groups for r in map(Requirement, specs[group])}


def undeclared(imports: dict[str, set[str]], allowed: set[str]) -> list[str]:
    return [f"{name} (distribution {'/'.join(sorted(distributions_of(name)))}; in {', '.join(sorted(files)[:3])})"
            for name, files in sorted(imports.items()) if not distributions_of(name) & allowed]


def imported_distributions(imports: dict[str, set[str]]) -> set[str]:
    return {d for name in imports for d in distributions_of(name)}


PACKAGE_IMPORTS = third_party(top_level_imports(PACKAGE))
DEV_IMPORTS = third_party({name: files for root in DEV_FOLDERS if root.is_dir()
                           for name, files in top_level_imports(root).items()},
                          local_modules(*(root for root in DEV_FOLDERS if root.is_dir())))


def test_every_third_party_import_of_the_package_is_declared():
    # Not the dev extra: the installed package must not import what only the tests install.
    missing = undeclared(PACKAGE_IMPORTS, set(declared("core", "milvus")))
    assert not missing, f"src/unifashion imports these, and pyproject.toml declares no distribution of them: {missing}"


def test_every_declared_dependency_is_imported_or_says_why():
    unused = set(declared("core", "milvus")) - imported_distributions(PACKAGE_IMPORTS) - set(RUNTIME_ONLY)
    assert not unused, f"declared in pyproject.toml, imported nowhere in src/unifashion: {sorted(unused)}"


def test_tests_and_benchmarks_import_only_declared_distributions():
    missing = undeclared(DEV_IMPORTS, set(declared("core", "milvus", "dev")))
    assert not missing, f"tests/ or benchmarks/ import these; no dependency or dev extra declares them: {missing}"


def test_every_dev_dependency_is_used_or_says_why():
    unused = set(declared("dev")) - imported_distributions(DEV_IMPORTS) - set(DEV_RUNTIME_ONLY)
    assert not unused, f"in the dev extra, imported nowhere in tests/ or benchmarks/: {sorted(unused)}"


@pytest.mark.parametrize(("allow_list", "groups", "imports"), [
    (RUNTIME_ONLY, ("core", "milvus"), PACKAGE_IMPORTS), (DEV_RUNTIME_ONLY, ("dev",), DEV_IMPORTS)])
def test_the_allow_lists_hold_only_declared_distributions_that_are_not_imported(allow_list, groups, imports):
    assert set(allow_list) <= set(declared(*groups)), "an allow-listed distribution is no longer declared"
    assert not set(allow_list) & imported_distributions(imports), "an allow-listed distribution is imported"


def test_installed_versions_satisfy_the_declared_ranges():
    """The ranges are the versions tested: the torch range holds the CPU build (2.13.0+cpu)."""
    wrong = []
    for name, requirement in {**declared("core"), **declared("dev")}.items():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = importlib.metadata.version(name)
        if not requirement.specifier.contains(version, prereleases=True):
            wrong.append(f"{name} {version} (declared {requirement.specifier})")
    assert not wrong, wrong
    assert declared("core")["torch"].specifier.contains("2.13.0+cpu")


def test_the_scanner_finds_lazy_and_submodule_imports_and_maps_them_to_distributions(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(
        "from __future__ import annotations\nimport os, numpy.linalg\nfrom . import b\nimport unifashion.models\n"
        "def f():\n    from PIL import Image\n    return Image\n")
    (tmp_path / "pkg" / "b.py").write_text("try:\n    import not_a_module_anywhere\nexcept ImportError:\n    pass\n"
                                           "from a import f\n")
    imports = third_party(top_level_imports(tmp_path), local_modules(tmp_path))
    assert set(imports) == {"numpy", "PIL", "not_a_module_anywhere"}
    assert imports["PIL"] == {"pkg/a.py"}
    assert distributions_of("PIL") == {"pillow"} and distributions_of("faiss") == {"faiss-cpu"}
    assert undeclared(imports, {"numpy", "pillow"}) == ["not_a_module_anywhere (distribution "
                                                        "not-a-module-anywhere; in pkg/b.py)"]
    assert normalize("Milvus_Lite") == "milvus-lite" and set(declared("milvus")) == {"pymilvus", "milvus-lite"}
