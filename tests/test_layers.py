"""The import layers hold: `lint-imports` (import-linter, from this venv) with the contracts of pyproject.toml's
[tool.importlinter], run from the repository root on this checkout's sources."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(config: Path) -> subprocess.CompletedProcess:
    # --no-cache: nothing written into the checkout, and no cache shared between concurrent runs
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_pyproject_import_contracts_are_kept():
    proc = lint_imports(REPO / "pyproject.toml")
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
