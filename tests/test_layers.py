"""The import layers hold: `lint-imports` (import-linter, from this venv) with the contracts of pyproject.toml's
[tool.importlinter], run on this checkout's sources laid out as installed (the repository's `pipeline/` is the
package `eps.pipeline`, which import-linter finds only inside `eps/`)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def installed_layout(root: Path) -> Path:
    """A copy of the sources as pip installs them: ``eps/`` with ``pipeline/`` as ``eps/pipeline/``."""
    shutil.copytree(REPO / "eps", root / "eps", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "pipeline", root / "eps" / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def lint_imports(config: Path, root: Path | None = None) -> subprocess.CompletedProcess:
    # --no-cache: nothing written into the checkout, and no cache shared between concurrent runs
    env = {**os.environ, "PYTHONPATH": str(root)} if root is not None else None
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(config)], cwd=root or REPO,
                          capture_output=True, text=True, timeout=600, env=env)


def with_stage_layer(tmp_path: Path) -> Path:
    """pyproject.toml's contracts with the stage layer (`eps.pipeline`) on top of the layers."""
    text = (REPO / "pyproject.toml").read_text()
    assert 'layers = [\n    "eps.config",' in text
    config = tmp_path / "layers.toml"
    config.write_text(text.replace('layers = [\n    "eps.config",', 'layers = [\n    "eps.pipeline",\n    "eps.config",'))
    return config


def test_pyproject_import_contracts_are_kept_from_the_repository_root():
    proc = lint_imports(REPO / "pyproject.toml")
    output = f"lint-imports pyproject.toml exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken\.", proc.stdout), output


def test_pyproject_import_contracts_are_kept(tmp_path):
    proc = lint_imports(with_stage_layer(tmp_path), installed_layout(tmp_path / "src"))
    output = f"lint-imports pyproject.toml exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken\.", proc.stdout), output  # at least one contract checked


def test_a_broken_contract_fails_the_check(tmp_path):
    """lint-imports reads this checkout's real imports: a contract the code breaks (its training code imports torch)
    makes it exit non-zero, naming the contract and the import."""
    config = tmp_path / "broken.toml"
    config.write_text('[tool.importlinter]\nroot_package = "eps"\ninclude_external_packages = true\n\n'
                      '[[tool.importlinter.contracts]]\nname = "eps.train without torch"\ntype = "forbidden"\n'
                      'source_modules = ["eps.train"]\nforbidden_modules = ["torch"]\n')
    proc = lint_imports(config)
    assert proc.returncode == 1, f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "eps.train without torch BROKEN" in proc.stdout and "-> torch" in proc.stdout, proc.stdout


def test_an_import_from_a_lower_layer_to_a_higher_one_breaks_the_layers(tmp_path):
    """The real contract catches a loop module importing the stage layer (the kind of cycle eps had before 0.2)."""
    root = installed_layout(tmp_path / "src")
    search = root / "eps" / "search.py"
    search.write_text(search.read_text() + "\n\ndef _upwards():\n    from eps.pipeline import stages  # noqa\n")
    proc = lint_imports(with_stage_layer(tmp_path), root)
    assert proc.returncode == 1, f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "eps layers" in proc.stdout and "BROKEN" in proc.stdout and "eps.search -> eps.pipeline" in proc.stdout
