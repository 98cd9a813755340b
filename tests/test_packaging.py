"""eps as a library: the wheel installs the one import name `eps` (the repository's `pipeline/` as `eps.pipeline`) with
py.typed and the license pyproject.toml names; pyproject.toml gives version ranges, constraints.txt the exact tested
versions, within those ranges."""
import email
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

pytestmark = pytest.mark.unit

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PINNED = {"torch": "2.14.1", "torchvision": "0.29.1"}


def constraints() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert m, f"constraints.txt: {line!r} is not an exact pin NAME==VERSION"
        name = canonicalize_name(m[1])
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = Version(m[2])
    return pins


def packages_in_tree() -> set[str]:
    """Every package of the source tree, as the wheel names it: eps/... and pipeline/... as eps.pipeline...."""
    found = set()
    for top, prefix in (("eps", "eps"), ("pipeline", "eps.pipeline")):
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / top).parts
            found.add(".".join((prefix, *rel)))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel of a copy of the sources (the build writes nothing into the checkout), built with this venv's
    setuptools: a few seconds, no network."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    for name in ("eps", "pipeline"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = out.glob("eps-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_installs_only_eps_with_every_package_and_py_typed(wheel):
    names = wheel.namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"eps"}, sorted(tops)
    info = next(n.split("/", 1)[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert wheel.read(f"{info}/top_level.txt").decode().split() == ["eps"]
    in_wheel = {n[: -len("/__init__.py")].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert in_wheel == packages_in_tree(), (sorted(packages_in_tree() - in_wheel), sorted(in_wheel - packages_in_tree()))
    assert "eps/py.typed" in names and "eps/pipeline/cli.py" in names
    # every module of the tree is there, not only the package files
    modules = {f"eps/{p.relative_to(REPO / 'eps').as_posix()}" for p in (REPO / "eps").rglob("*.py")}
    modules |= {f"eps/pipeline/{p.relative_to(REPO / 'pipeline').as_posix()}" for p in (REPO / "pipeline").rglob("*.py")}
    assert modules <= set(names), sorted(modules - set(names))


def test_wheel_license_and_metadata_match_pyproject(wheel):
    project = PYPROJECT["project"]
    info = next(n.split("/", 1)[0] for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    meta = email.message_from_bytes(wheel.read(f"{info}/METADATA"))
    assert meta["License-Expression"] == project["license"] == "MIT"
    assert wheel.read(f"{info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 eps contributors" in text
    assert "Permission is hereby granted, free of charge" in text
    assert {str(Requirement(r)) for r in meta.get_all("Requires-Dist")} >= {str(Requirement(r))
                                                                         for r in project["dependencies"]}
    assert meta["Version"] == project["version"]


def test_pyproject_gives_ranges_not_pins():
    for spec in PYPROJECT["project"]["dependencies"]:
        req = Requirement(spec)
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"{spec}: a range, the pin is in " \
                                                                            f"constraints.txt"
    deps = {canonicalize_name(Requirement(r).name): Requirement(r) for r in PYPROJECT["project"]["dependencies"]}
    assert Version("2.4") in deps["torch"].specifier and Version("2.3.1") not in deps["torch"].specifier


def test_constraints_pin_the_tested_torch_and_satisfy_pyproject():
    pins = constraints()
    for name, version in PINNED.items():
        assert pins.get(name) == Version(version), f"constraints.txt must pin {name}=={version}"
    assert "eps" not in pins  # eps itself is installed from the checkout
    project = PYPROJECT["project"]
    for spec in project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject.toml) has no exact version in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {spec!r}"
    build = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    for req in build:
        name = canonicalize_name(req.name)
        if name in pins:
            assert req.specifier.contains(pins[name]), f"constraints.txt's {name} cannot build eps ({req})"


def test_makefile_setup_installs_with_the_constraints():
    make = (REPO / "Makefile").read_text()
    installs = [line.strip() for line in make.splitlines() if re.search(r"pip install .*-e ", line)]
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    assert not re.search(r"torch==|torchvision==", make), "the Makefile pins nothing itself: constraints.txt does"
