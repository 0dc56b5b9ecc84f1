"""The folders say what the imports say: the rules of docs/architecture.md, checked on the code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "src" / "bgm_batch"


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name a file imports (``from a.b import c`` gives a.b and a.b.c)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def product_files() -> list[Path]:
    """The product: the package without its test fixtures, plus the flows."""
    files = [p for p in PACKAGE.rglob("*.py") if "testing" not in p.relative_to(PACKAGE).parts]
    return files + sorted((REPO / "flows").glob("*.py"))


def imports_of(paths: list[Path], prefix: str) -> dict[str, list[str]]:
    found = {}
    for path in paths:
        hits = sorted(
            m for m in imported_modules(path) if m == prefix or m.startswith(prefix + ".")
        )
        if hits:
            found[str(path.relative_to(REPO))] = hits
    return found


def test_product_never_imports_the_test_fixtures() -> None:
    assert imports_of(product_files(), "bgm_batch.testing") == {}


@pytest.mark.parametrize(
    "folder", ["data", "stages", "text", "audio", "evaluation", "training", "library"]
)
def test_library_code_never_imports_flows_or_cli(folder: str) -> None:
    files = sorted((PACKAGE / folder).rglob("*.py"))
    assert files
    assert imports_of(files, "bgm_batch.flows") == {}
    assert imports_of(files, "bgm_batch.cli") == {}


def test_flows_install_under_the_package_not_as_a_top_level_name(tmp_path: Path) -> None:
    probe = (
        "import importlib.util, bgm_batch.flows.score_session as s;"
        "print(importlib.util.find_spec('flows') is None, s.__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True", "bgm_batch.flows.score_session"]


def test_no_module_shadows_the_standard_library() -> None:
    stdlib = sys.stdlib_module_names
    shadows = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if p.stem in stdlib]
    assert shadows == []


def test_tests_mirror_the_package_tree() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    folders.discard("flows")
    missing = sorted(f for f in folders if not list((REPO / "tests" / f).glob("test_*.py")))
    assert missing == []
