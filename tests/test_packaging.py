"""Every third-party import is declared in pyproject.toml: the package's module-level imports as core
dependencies (``import stereo.x`` must work on a plain install), lazy imports in the package, the scripts,
the notebook and the tests at least under an extra. A missing declaration only shows on a fresh install,
which the test suite never sees, so it is checked here by reading the sources.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# import name -> distribution name, where they differ
DISTRIBUTION = {"cv2": "opencv-python-headless", "PIL": "pillow", "yaml": "pyyaml", "hydra": "hydra-core",
                "sklearn": "scikit-learn", "skimage": "scikit-image"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements: list[str]) -> set[str]:
    return {_normalise(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}


CORE = _names(PYPROJECT["project"]["dependencies"])
EXTRAS = {extra: _names(reqs) for extra, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
ANY = CORE.union(*EXTRAS.values()) - {"stereo"}


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(top-level package, imported at module level) for every absolute import."""
    module_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], id(node) in module_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], id(node) in module_level))
    return found


def _third_party(name: str, folder: Path) -> bool:
    # the tests also import the GPU kit's modules from scripts/ (tests/conftest.py puts it on sys.path)
    local = any((where / f"{name}.py").is_file() or (where / name / "__init__.py").is_file()
                for where in (folder, ROOT / "scripts"))
    return not (name in sys.stdlib_module_names or name == "stereo" or local)


def _dist(name: str) -> str:
    return _normalise(DISTRIBUTION.get(name, name))


SOURCES = sorted([*(ROOT / "stereo").rglob("*.py"), *(ROOT / "scripts").glob("*.py"), *(ROOT / "tests").glob("*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_every_third_party_import_is_declared(path):
    in_package = path.is_relative_to(ROOT / "stereo")
    for name, module_level in _imports(ast.parse(path.read_text(), str(path))):
        if not _third_party(name, path.parent):
            continue
        if in_package and module_level:
            assert _dist(name) in CORE, f"{path.relative_to(ROOT)} imports {name} at module level: declare {_dist(name)} in [project] dependencies"
        else:
            assert _dist(name) in ANY, f"{path.relative_to(ROOT)} imports {name}: declare {_dist(name)} in pyproject.toml"


def test_notebook_imports_are_declared():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for notebook in notebooks:
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        for name, _ in _imports(ast.parse(code, str(notebook))):
            if _third_party(name, notebook.parent):
                assert _dist(name) in ANY, f"{notebook.name} imports {name}: declare {_dist(name)} in pyproject.toml"


def test_the_check_sees_a_missing_declaration(tmp_path):
    """The checks above would pass vacuously if nothing counted as third-party."""
    tree = ast.parse("import os\nimport cv2\nfrom lightning.pytorch import Trainer\n\ndef f():\n    import no_such_dist\n")
    third_party = [(n, top) for n, top in _imports(tree) if _third_party(n, tmp_path)]
    assert third_party == [("cv2", True), ("lightning", True), ("no_such_dist", False)]
    assert _dist("cv2") in CORE and _dist("no_such_dist") not in ANY


MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                 for p in (ROOT / "stereo").rglob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_every_package_module_imports(module):
    """The quick tier's floor: each module at least imports (module-level imports are core dependencies, above)."""
    importlib.import_module(module)
