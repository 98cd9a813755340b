"""The documentation site (docs/, mkdocs.yml): it builds with ``mkdocs build --strict`` (no broken link, no warning),
and every code block of every page that runs is run, unless it is marked as not run.

Which blocks run: fenced blocks in bash/sh/shell or python, after the ``--8<--`` snippet includes are expanded (the
benchmark and study pages include bench/*.md). A block is not run when the line just before its fence is the marker
``<!-- not run: reason -->``; the reason says why (``pending: <feature>`` for blocks that need a feature still on its
way). ``test_block_marked_not_run`` lists each marked block as a skipped test with its reason, so ``pytest -ra``
shows them all.

How they run: the pages run in the order of the site's navigation (mkdocs.yml), their blocks in order, all in one
sandbox folder (a page may use what an earlier one made, as a reader would: the reference pages look into the
getting-started demo's run folder). The sandbox holds a copy of ``examples/``, with the real ``eps`` first on PATH, the shared data (EPS_DATA_DIR), one OpenMP thread and no progress
bars. Shell blocks run under ``bash -euo pipefail``, python blocks in a fresh interpreter. So that the whole file
takes a minute or two, ``profiles/demo.yaml`` and ``params.yaml`` in the sandbox hold the tiny NB201 profile of the
other tests (``tests.conftest.TINY_NB201``: real CIFAR-10 subsets, a 4-channel supernet): the pages' own commands run
through the real CLI, on tiny params.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import DATA_ROOT, REPO, TINY_NB201

DOCS = REPO / "docs"
MARKER = re.compile(r"^<!--\s*not run:\s*(?P<reason>\S.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
INCLUDE = re.compile(r'^\s*--8<--\s+"(?P<path>[^"]+)"\s*$')
SHELL = {"bash", "sh", "shell", "console"}
PYTHON = {"python", "py", "python3"}
BIN = Path(sys.executable).parent


@dataclass
class Block:
    page: str        # the docs page, relative to docs/
    source: str      # the file the block is written in (a page, or a file it includes)
    line: int        # 1-based line of the opening fence in that file
    lang: str
    code: str
    not_run: str | None    # the marker's reason, or None when the block runs

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def _lines(path: Path, depth: int = 0):
    """(source, line number, text) of a file with its snippet includes expanded in place."""
    source = str(path.relative_to(REPO))
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        include = INCLUDE.match(text)
        if include and depth < 4:
            yield from _lines(REPO / include["path"], depth + 1)
        else:
            yield source, number, text


def page_blocks(page: Path) -> list[Block]:
    """Every fenced block of a page in a runnable language, with its marker (if any)."""
    found, lines = [], list(_lines(page))
    i = 0
    while i < len(lines):
        source, number, text = lines[i]
        opening = FENCE.match(text)
        if not opening:
            i += 1
            continue
        close = re.compile(rf"^\s*{re.escape(opening['fence'][0])}{{{len(opening['fence'])},}}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j][2]):
            j += 1
        lang = opening["lang"].lower()
        if lang in SHELL | PYTHON:
            before = lines[i - 1][2] if i else ""
            marker = MARKER.match(before)
            code = "\n".join(t[len(opening["indent"]):] for _, _, t in lines[i + 1:j])
            found.append(Block(str(page.relative_to(DOCS)), source, number, lang, code,
                               marker["reason"] if marker else None))
        i = j + 1
    return found


def _nav(entries) -> list[str]:
    for entry in entries:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            yield from (_nav(value) if isinstance(value, list) else [value])


class _Loader(yaml.SafeLoader):
    pass


# mkdocs.yml may hold python-specific tags (none today); read it as plain YAML, unknown tags as None
_Loader.add_multi_constructor("", lambda loader, suffix, node: None)
NAV = list(_nav(yaml.load((REPO / "mkdocs.yml").read_text(), Loader=_Loader)["nav"]))
PAGES = sorted(DOCS.rglob("*.md"), key=lambda p: (NAV.index(str(p.relative_to(DOCS)))
                                                  if str(p.relative_to(DOCS)) in NAV else len(NAV), str(p)))
BLOCKS = [b for page in PAGES for b in page_blocks(page)]
RUN_PAGES = list(dict.fromkeys(b.page for b in BLOCKS if b.not_run is None))    # in navigation order


@pytest.mark.unit
def test_every_marker_stands_just_before_a_code_block():
    """A marker that is not on the line right before a shell or python fence marks nothing: a typo would silently run
    a block meant to be skipped, or leave a stale marker behind."""
    marked = {(b.source, b.line - 1) for b in BLOCKS if b.not_run is not None}
    stray = [f"{s}:{n}" for page in PAGES for s, n, text in _lines(page)
             if MARKER.match(text) and (s, n) not in marked]
    assert not stray, f"not-run markers that precede no shell/python block: {stray}"
    assert BLOCKS and RUN_PAGES, "no code blocks found in docs/: the parser is broken"


@pytest.mark.unit
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.not_run is not None], ids=lambda b: b.where)
def test_block_marked_not_run(block):
    pytest.skip(f"not run: {block.where}: {block.not_run}")


@pytest.mark.cli
def test_site_builds_strict_with_the_generated_params_table(tmp_path):
    proc = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "-d", str(tmp_path / "site")], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "EPS_DATA_DIR": str(DATA_ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    # mkdocstrings looks for Black or Ruff to reflow long signatures and says so on every build unless mkdocs.yml's
    # line_length keeps it from looking
    assert "Formatting signatures" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    params = (tmp_path / "site" / "reference" / "params" / "index.html").read_text()
    from eps.params import defaults
    for key in ("seed", "nb201.search.iterations", "darts-cnn.retrain.epochs", "darts-rnn.space.reference_hidden_state",
                "study.arms"):
        assert f"<code>{key}</code>" in params, f"{key} missing from the generated params table"
    # every key of every section, not only the sampled ones above
    def keys(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("arms",):
                yield from keys(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"
    missing = [k for k in keys(defaults()) if f"<code>{k}</code>" not in params]
    assert not missing, f"params missing from the reference: {missing[:10]}"
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    for name in ("api.Experiment", "api.Experiment.search", "api.Selection", "api.RetrainResult",
                 "model_file.load_model", "space.SearchSpace", "space.SupernetTask", "space.HasBenchmark"):
        assert f'id="eps.{name}"' in api, f"eps.{name} missing from the API reference"
    errors = (tmp_path / "site" / "reference" / "errors" / "index.html").read_text()
    assert 'id="eps.errors.EpsError"' in errors and 'id="eps.errors.ConfigError"' in errors


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> tuple[Path, dict]:
    """(folder, environment) shared by the pages of this module, in navigation order (a module-scoped fixture:
    tests/conftest.py keeps its users on one xdist worker)."""
    root = tmp_path_factory.mktemp("docs") / "work"
    root.mkdir()
    shutil.copytree(REPO / "examples", root / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    tiny = yaml.safe_dump(TINY_NB201)
    (root / "profiles").mkdir()
    (root / "profiles" / "demo.yaml").write_text("# tests/test_docs.py: the tiny profile stands in for the demo\n" + tiny)
    (root / "params.yaml").write_text(tiny)
    return root, {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                  "EPS_DATA_DIR": str(DATA_ROOT), "EPS_PROGRESS": "0", "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}


@pytest.mark.e2e
@pytest.mark.parametrize("page", RUN_PAGES)
def test_code_blocks_of_the_page_run(page, sandbox):
    root, env = sandbox
    for block in (b for b in BLOCKS if b.page == page and b.not_run is None):
        cmd = (["bash", "-euo", "pipefail", "-c", block.code] if block.lang in SHELL
               else [sys.executable, "-c", block.code])
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (f"{block.where} ({block.lang}) failed with exit code {proc.returncode}:\n"
                                      f"{block.code}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n"
                                      f"{proc.stderr[-3000:]}")
