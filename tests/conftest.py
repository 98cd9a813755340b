import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("EPS_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
EPS = str(Path(sys.executable).parent / "eps")
# Module-scoped fixtures run before the per-test environment below: they read the data root from here.
os.environ.setdefault("EPS_DATA_DIR", str(DATA_ROOT))

# A tiny NB201 configuration: real CIFAR-10 subsets, a 4-channel one-cell-per-stage supernet.
TINY_NB201 = {
    "seed": 0,
    "device": "cpu",
    "spaces": ["nb201"],
    "nb201": {
        "space": {"channels": 4, "cells_per_stage": 1},
        "warmup": {"iterations": 4, "batch_size": 16, "checkpoint_every": 2},
        "supernet": {"data_subset": 200},
        "search": {"iterations": 60, "val_interval": 10, "population": 8, "group": 4, "parents": 2,
                   "batch_size": 16, "fitness_batch_size": 20, "checkpoint_every": 1},
        "select": {"window": 40},
        "retrain": {"epochs": 2, "batch_size": 32, "train_subset": 128, "test_subset": 100},
    },
    # `eps study correlation` on the same tiny supernet: 6 rounds per supernet, tau every 2 rounds
    "study": {"iterations": 60, "seeds": [0], "n_uniform": 12, "n_top": 12, "fitness_batches": 2, "tau_every": 2,
              "tau_cells": 6},
}


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("EPS_DATA_DIR", str(DATA_ROOT))
    monkeypatch.setenv("EPS_PROGRESS", "0")


def write_tiny_params(tmp_path: Path, **sections: dict) -> Path:
    """TINY_NB201 with some nb201 sections updated, e.g. ``write_tiny_params(tmp, search={"lr": 1e30})``."""
    cfg = yaml.safe_load(yaml.safe_dump(TINY_NB201))
    for name, values in sections.items():
        cfg["nb201"][name].update(values)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def tiny_params(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_NB201))
    return path


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny tensors: OpenMP fan-out only costs time (and is pathological on a shared 2-core box).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def eps_env(one_thread: bool = False) -> dict:
    """The environment of a CLI subprocess: shared data, no progress bars, optionally one OpenMP thread."""
    env = {**os.environ, "EPS_DATA_DIR": str(DATA_ROOT), "EPS_PROGRESS": "0"}
    return {**env, "OMP_NUM_THREADS": "1"} if one_thread else env


def run_eps(*args, cwd=None, check=True, one_thread=False, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([EPS, *map(str, args)], cwd=cwd, env=eps_env(one_thread), capture_output=True, text=True,
                          **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"eps {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _stamp(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def kill_at_random_moments(start, checkpoint: Path, rng, kill=None, attempts: int = 3) -> tuple[int, bool]:
    """Start a run (``start()`` returns its Popen) up to ``attempts`` times, each time killing it (``kill(proc)``,
    SIGKILL by default) at a random moment of a round: after it has written 2 or 3 checkpoints (``checkpoint``, the
    newest one's path) beyond the one it found, so past start-up whatever the machine's speed, plus a random fraction
    of the time between its last two. Each attempt advances the run by at most about 4 rounds: a run of 15 or more
    rounds is killed ``attempts`` times. Returns (kills, whether the last start finished with status 0); the caller
    finishes the run if not."""
    kill = kill or (lambda proc: proc.send_signal(signal.SIGKILL))
    kills = 0
    for _ in range(attempts):
        proc = start()
        seen, times, want = _stamp(checkpoint), [], rng.randint(2, 3)
        while len(times) < want and proc.poll() is None:
            now = _stamp(checkpoint)
            if now != seen:
                seen = now
                times.append(time.monotonic())
            time.sleep(0.005)
        if proc.poll() is None:
            time.sleep(rng.uniform(0.0, 1.0) * (times[-1] - times[-2]))
        if proc.poll() is not None:
            proc.wait()
            return kills, proc.returncode == 0
        kill(proc)
        proc.wait()
        kills += 1
    return kills, False


def resign(folder: Path) -> None:
    """Update a finished stage's record (``run.json`` outputs digests) after a test edited its files on purpose, as
    if the stage had written them: for tests of what the report shows, not of damage detection."""
    import json
    from eps.pipeline.record import RUN_FILE, _digests
    run = json.loads((folder / RUN_FILE).read_text())
    run["outputs"] = _digests(folder)
    (folder / RUN_FILE).write_text(json.dumps(run))


def run_chain(params: Path, out: Path, space: str = "nb201") -> None:
    """Warm-up -> search -> select -> retrain -> report in this process through the stage layer (what `eps run` does:
    for tests of what a run folder holds, where the CLI itself is not what is tested), on one OpenMP thread."""
    from eps.params import load_params
    from eps.pipeline import report, stages
    old_threads, old_progress = torch.get_num_threads(), os.environ.get("EPS_PROGRESS")
    torch.set_num_threads(1)
    os.environ["EPS_PROGRESS"] = "0"
    try:
        p = load_params(params)
        for stage in stages.STAGES:
            getattr(stages, stage)(space, p, out)
        report.report(space, p, out)
    finally:
        torch.set_num_threads(old_threads)
        if old_progress is None:
            os.environ.pop("EPS_PROGRESS", None)
        else:
            os.environ["EPS_PROGRESS"] = old_progress


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One finished tiny nb201 run (every stage and the report), once per test session: (params, out). Read it or
    copy it; a test that changes it in place changes it for every later test."""
    d = tmp_path_factory.mktemp("finished")
    params = d / "tiny.yaml"
    params.write_text(yaml.safe_dump(TINY_NB201))
    run_chain(params, d / "runs")
    return params, d / "runs"


# warm-up of 0 iterations: the search runs without the warm-up stage; 6 rounds, a checkpoint after each
SHORT_SEARCH = dict(warmup=dict(iterations=0), search=dict(iterations=60, val_interval=10, checkpoint_every=1))


@pytest.fixture(scope="session")
def short_search(tmp_path_factory):
    """One undisturbed tiny search of SHORT_SEARCH through the CLI, once per test session: (params, out). Tests copy
    its folder to start from a finished run (the faults of checkpoints, histories and swaps)."""
    d = tmp_path_factory.mktemp("short")
    params = write_tiny_params(d, **SHORT_SEARCH)
    run_eps("stage", "search", "--params", params, "--out", d / "runs", one_thread=True)
    return params, d / "runs"


# ---------------------------------------------------------------------------------------------------- test tiers
# Every test has exactly one tier (markers registered in pyproject.toml): `unit` (in-process), `cli` (the eps command
# in a subprocess), `e2e` (stages or a pipeline end to end, in-process, through the CLI or `dvc repro`), `distributed`
# (torchrun, several processes). A module declares its tier with `pytestmark = pytest.mark.<tier>`; a test of another
# tier in that module carries its own tier marker, which wins (so `-m unit` selects exactly the unit tests). `slow`
# may be added to any test. A test without a tier, or with two at one level, fails.
TIERS = ("unit", "cli", "e2e", "distributed")
_TIER_PROBLEM = pytest.StashKey[str]()


def _tiers(node) -> list[str]:
    return list(dict.fromkeys(m.name for m in node.own_markers if m.name in TIERS))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects and before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    holders = set()
    for item in items:
        chain = item.listchain()[::-1]  # the test itself, then its class, module ... outwards
        tier = None
        for node in chain:
            found = _tiers(node)
            if len(found) > 1:
                item.stash[_TIER_PROBLEM] = f"several tier markers on {node.nodeid or 'the session'}: {found}"
            if found:
                tier = found[0]
                break
        for node in chain[1:]:
            if _tiers(node):
                holders.add(node)
        if tier is None:
            item.stash.setdefault(_TIER_PROBLEM, f"no tier marker: add `pytestmark = pytest.mark.<tier>` to the "
                                                 f"module or a marker to the test, one of {', '.join(TIERS)}")
        elif tier not in _tiers(item):
            item.add_marker(tier)
        if config.pluginmanager.hasplugin("xdist"):
            # A module- or session-scoped fixture (a finished tiny run ...) is made once per worker that runs a test
            # using it: keep those tests on one worker (`--dist loadgroup`), so it is made once, as in a serial run.
            # A session-scoped one is shared by several modules: its group is its name, not a module.
            group = _shared_fixture_group(item)
            if group:
                item.add_marker(pytest.mark.xdist_group(group))
            # torchrun jobs one at a time: each is already two processes (and picks its rendezvous port itself)
            if tier == "distributed":
                item.add_marker(pytest.mark.xdist_group("distributed"))
    # the tier now sits on each test; outer ones would otherwise still match `-m`
    for node in holders:
        node.own_markers[:] = [m for m in node.own_markers if m.name not in TIERS]


# module-scoped fixtures cheap enough to make once per worker
_CHEAP_SHARED = {"one_thread"}


def _shared_fixture_group(item) -> str | None:
    """The xdist group of ``item``: the name of the first (alphabetically) session-scoped fixture of this test suite
    it uses (directly or through another fixture), else its module if it uses a module- or package-scoped one, else
    None (pytest's own fixtures, such as tmp_path_factory, do not count). A test must not use two session-scoped ones
    that other tests use apart, or one of them is made twice."""
    scopes = {}
    for name, defs in getattr(item, "_fixtureinfo").name2fixturedefs.items():
        if not defs or name in _CHEAP_SHARED or defs[-1].scope not in ("module", "package", "session"):
            continue
        try:
            where = Path(inspect.getfile(defs[-1].func)).resolve()
        except TypeError:
            continue
        if where.is_relative_to(REPO / "tests"):
            scopes[name] = defs[-1].scope
    session = sorted(name for name, scope in scopes.items() if scope == "session")
    if session:
        return session[0]
    return item.nodeid.split("::")[0] if scopes else None


def pytest_runtest_setup(item):
    problem = item.stash.get(_TIER_PROBLEM, None)
    if problem:
        pytest.fail(f"{item.nodeid}: {problem}", pytrace=False)
