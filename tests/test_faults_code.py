"""Faults in code a user is handed: model files and run folders are data and never run code; plugins fail as
themselves (one line naming the plugin, exit 2), never as an eps bug; run folders name plugins relative to the params
file, so a copied plugin project still matches its runs.

A file that would run code writes a marker file when it does: the marker must not appear. Model files are attacked
through the API (``eps.load_model``, in process: no CLI reads them); run folders and plugins through the real CLI.
"""
import json
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import eps
from eps.errors import EpsError, SpaceError
from eps.model_file import read_model, save_model
from tests.conftest import REPO, run_eps

pytestmark = pytest.mark.unit

NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
CHAIN = REPO / "examples" / "chain_space.py"
GLYPH = REPO / "examples" / "tensor_space.py"


def one_line(fn, *args, kind=EpsError, **kwargs) -> str:
    with pytest.raises(kind) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and msg, msg
    return msg


def cli_error(proc, *needles: str) -> str:
    """The one stderr line of a refused command: exit 2, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def evil_source(marker: Path, name: str = "S") -> str:
    """A module that, imported, creates ``marker`` and defines a class ``name``."""
    return f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\nclass {name}:\n    name = 'evil'\n"


@pytest.fixture
def nb201_model(tmp_path) -> Path:
    """A real model file of a tiny NB201 network (1 cell per stage, 4 channels): runs/nb201/retrain/model.pt."""
    space = eps.build_space("nb201")
    network = {"num_classes": 10, "channels": 4, "cells_per_stage": 1}
    net = space.build_network(space.decode(NB201_ARCH), **network)
    path = tmp_path / "runs" / "nb201" / "retrain" / "model.pt"
    path.parent.mkdir(parents=True)
    save_model(path, space="nb201", arch=NB201_ARCH, network=network, state_dict=net.state_dict(),
               space_settings={"channels": 16, "cells_per_stage": 5})
    return path


def forged(path: Path, **changes) -> Path:
    record = read_model(path)
    record.update(changes)
    torch.save(record, path)
    return path


# ------------------------------------------------------------------------------------------- model files are data

@pytest.mark.parametrize("where", ["beside", "relative", "absolute"])
def test_a_model_file_naming_a_space_file_imports_nothing(nb201_model, tmp_path, monkeypatch, where):
    """The file's `space` names an evil.py beside the run, found from the working directory or by an absolute
    path: load_model refuses in one line naming the reference and the fix, and the file never runs."""
    marker = tmp_path / "MARKER"
    evil = nb201_model.parent / "evil.py"
    evil.write_text(evil_source(marker))
    (tmp_path / "evil.py").write_text(evil_source(marker))
    (tmp_path / "runs" / "evil.py").write_text(evil_source(marker))
    monkeypatch.chdir(tmp_path)
    ref = {"beside": "evil.py:S", "relative": "runs/evil.py:S", "absolute": f"{evil}:S"}[where]
    for extra in ({}, {"space_name": "evil"}, {"space_name": "nb201"}):
        forged(nb201_model, space=ref, **extra)
        msg = one_line(eps.load_model, nb201_model, kind=SpaceError)
        assert ref in msg and "register" in msg and "space=" in msg, msg
        assert not marker.exists()
    assert not any("evil" in m for m in sys.modules)


def test_a_model_file_naming_a_module_imports_nothing(nb201_model, capsys):
    """`this:S` (the Zen of Python prints at import) and any other module reference stay unimported."""
    fresh = "this" not in sys.modules
    for ref in ("this:S", "antigravity:S", "os:system"):
        forged(nb201_model, space=ref)
        assert ref in one_line(eps.load_model, nb201_model, kind=SpaceError)
    out = capsys.readouterr()
    assert "Beautiful is better than ugly" not in out.out + out.err
    if fresh:
        assert "this" not in sys.modules and "antigravity" not in sys.modules


def test_a_plugin_model_loads_when_the_caller_names_or_registered_its_space(tmp_path):
    from eps.spaces import register_ref
    ref = f"{CHAIN}:ChainSpace"
    name = register_ref(ref)
    space = eps.build_space(ref)
    arch = space.decode("conv_3x3-max_pool_3x3-conv_1x1-skip_connect")
    trained = space.build_network(arch, num_classes=7, channels=5)
    path = tmp_path / "model.pt"
    save_model(path, space=name, arch=space.encode(arch), network={"num_classes": 7, "channels": 5},
               state_dict=trained.state_dict(), space_settings={"channels": 16, "p_mutate": 0.25})
    x = torch.randn(2, 3, 8, 8)
    for given in (None, name, ref, type(space), space):  # registered here, by name, reference, class, instance
        assert torch.equal(eps.load_model(path, space=given)(x), trained.eval()(x))
    # a file moved from another project: its reference names another folder, the registered space still matches
    forged(path, space="/elsewhere/project/chain_space.py:ChainSpace")
    assert eps.load_model(path).head.out_features == 7
    msg = one_line(eps.load_model, path, space="nb201", kind=SpaceError)
    assert "'chain'" in msg and "'nb201'" in msg


# ------------------------------------------------------------------------------ sizes, shapes and the device

@pytest.mark.parametrize("network, needle", [
    ({"channels": 10**6}, "channels=1000000 is not a whole number from 1 to 100,000"),
    ({"channels": 20000}, "do not fit"),
    ({"num_classes": 10**9}, "num_classes=1000000000"),
    ({"cells_per_stage": 10**5}, "cells_per_stage=100000"),
    ({"channels": -5}, "channels=-5"),
    ({"channels": "abc"}, "channels=abc"),
    ({"channels": True}, "channels=True"),
    ({"channels": 2.5}, "channels=2.5"),
    ({"num_classes": 1000}, "do not fit"),
    ({"cells_per_stage": 3}, "do not fit"),
    ({"width": 3}, "cannot rebuild its network"),
])
def test_a_forged_network_is_refused_before_anything_is_allocated(nb201_model, network, needle):
    """Sizes out of the space's bounds, and sizes the weights do not have, end in one line within seconds: the
    network is built on the meta device and compared with the weights before any real allocation (a channels of
    20000 would otherwise allocate about 14 GB)."""
    forged(nb201_model, network={**read_model(nb201_model)["network"], **network})
    start = time.perf_counter()
    msg = one_line(eps.load_model, nb201_model)
    assert time.perf_counter() - start < 20 and needle in msg and str(nb201_model) in msg, msg


@pytest.mark.parametrize("device, needle", [
    ("nonsense", "not a device torch knows"), ("cuda:99", "cuda"), ("meta", "holds no weights"), (42, "str"),
    ("", "not a device torch knows"), ("xla", "not one eps loads models onto"), ("hpu", "not one eps loads"),
    ("vulkan", "not one eps loads"), ("privateuseone", "not one eps loads"), ("cpu:1", "the CPU is one device"),
])
def test_a_device_this_machine_lacks_is_one_line(nb201_model, device, needle):
    assert needle in one_line(eps.load_model, nb201_model, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA has the device")
def test_cuda_on_a_machine_without_cuda_is_one_line(nb201_model):
    assert "no usable CUDA device" in one_line(eps.load_model, nb201_model, device="cuda")


def test_the_device_is_checked_before_the_file(tmp_path):
    assert "not a device" in one_line(eps.load_model, tmp_path / "nowhere", device="nonsense")


def test_the_cli_size_bounds_are_the_spaces_bounds():
    from eps.pipeline.cli import _max_size_option
    from eps.space import MAX_CHANNELS, MAX_CLASSES, MAX_LAYERS
    assert _max_size_option() == {"--classes": MAX_CLASSES, "--channels": MAX_CHANNELS, "--layers": MAX_LAYERS}


# --------------------------------------------------------------------------------------- plugins fail as plugins

def plugin(tmp_path: Path, name: str, change: str, new: str, count: int = 1) -> str:
    """A copy of examples/chain_space.py named ``name`` with ``change`` replaced by ``new``: its reference."""
    src = CHAIN.read_text()
    assert change in src, change
    (tmp_path / f"{name}.py").write_text(src.replace('name = "chain"', f'name = "{name}"')
                                         .replace(change, new, count))
    return f"{name}.py:ChainSpace"


DECODE = "    def decode(self, text: str) -> tuple[int, ...]:\n"


@pytest.mark.cli
def test_a_plugin_whose_decode_raises_keyerror_is_named(tmp_path):
    """On the contract check (garbage strings) and on a user's string at run time."""
    garbage_only = "        if '-' not in text:\n            raise KeyError('foo')\n"
    ref = plugin(tmp_path, "keyerr", DECODE, DECODE + garbage_only)
    cli_error(run_eps("params", "--space", ref, cwd=tmp_path, check=False), ref, "decode", "KeyError", "ArchError")
    ref = plugin(tmp_path, "keyerr2", DECODE, DECODE + "        raise KeyError('foo')\n")
    cli_error(run_eps("params", "--space", ref, cwd=tmp_path, check=False), ref, "KeyError: 'foo'")
    ref = plugin(tmp_path, "lateerr", DECODE, DECODE + "        if text.startswith('conv_1x1'):\n"
                                                       "            raise KeyError('foo')\n")
    line = cli_error(run_eps("arch", "params", "conv_1x1-conv_1x1-conv_1x1-conv_1x1", "--space", ref,
                             cwd=tmp_path, check=False), f"plugin '{ref}' failed in decode: KeyError: 'foo'")
    assert "report it" not in line


@pytest.mark.cli
@pytest.mark.parametrize("exc", [
    "class E(Exception):\n    def __str__(self):\n        raise RuntimeError('str broke')\n",
    "class E(Exception):\n    def __str__(self):\n        return 42\n",
    "class E(Exception):\n    def __str__(self):\n        raise ValueError()\n    def __repr__(self):\n"
    "        raise ValueError()\n",
])
def test_a_plugin_exception_that_cannot_be_printed_still_names_the_plugin(tmp_path, exc):
    ref = plugin(tmp_path, "oddexc", DECODE, DECODE + "        raise E()\n")
    src = tmp_path / "oddexc.py"
    src.write_text(src.read_text() + "\n\n" + exc)
    # decode fails on the registration's round-trip check: the line names the plugin and the exception's type
    line = cli_error(run_eps("params", "--space", ref, cwd=tmp_path, check=False), ref, "round-tripping", "(E)")
    assert "report it" not in line, line


@pytest.mark.cli
def test_a_plugin_raising_a_baseexception_at_import_is_one_line(tmp_path):
    src = "class Boom(BaseException):\n    pass\n\nraise Boom('at import')\n"
    (tmp_path / "boom.py").write_text(src)
    cli_error(run_eps("params", "--space", "boom.py:S", cwd=tmp_path, check=False), "boom.py:S", "failed to import",
              "Boom: at import")
    (tmp_path / "bye.py").write_text("import sys\nsys.exit(3)\n")
    cli_error(run_eps("params", "--space", "bye.py:S", cwd=tmp_path, check=False), "bye.py:S", "SystemExit")


@pytest.mark.cli
def test_a_plugin_print_never_lands_in_the_yaml_on_stdout(tmp_path):
    ref = plugin(tmp_path, "chatty", "import numpy as np\n", "import numpy as np\nprint('hello from import')\n")
    src = (tmp_path / "chatty.py").read_text().replace(DECODE, DECODE + "        print('hello from decode')\n")
    (tmp_path / "chatty.py").write_text(src)
    proc = run_eps("params", "--space", ref, cwd=tmp_path)
    assert "hello" not in proc.stdout and list(yaml.safe_load(proc.stdout)) == ["chatty"]
    assert "hello from import" in proc.stderr and "hello from decode" in proc.stderr


@pytest.mark.cli
def test_a_plugin_bug_at_run_time_names_the_plugin_not_eps(tmp_path):
    """A plugin's own exception (here in num_params, through `eps arch params`) is the plugin's: exit 2."""
    ref = plugin(tmp_path, "buggy", "    def num_params(self", "    def num_params(self, *a, **k):\n"
                 "        return {}['missing']\n\n    def _unused(self")
    line = cli_error(run_eps("arch", "params", "conv_1x1-conv_1x1-conv_1x1-conv_1x1", "--space", ref, cwd=tmp_path,
                             check=False), f"plugin '{ref}' failed in num_params: KeyError: 'missing'")
    assert "report it" not in line


# ------------------------------------------------------------------------------------------ run folders are data

@pytest.fixture
def nb201_run(finished_run, tmp_path):
    """A finished tiny NB201 run through search and select (the session's finished run, less its retrain and report):
    (folder, params), the run in folder/runs."""
    params, runs = finished_run
    d = tmp_path / "nb201run"
    shutil.copytree(runs, d / "runs")
    for later in ("retrain", "report", ".work/retrain"):
        shutil.rmtree(d / "runs/nb201" / later, ignore_errors=True)
    shutil.copy(params, d / "tiny.yaml")
    return d, d / "tiny.yaml"


def plant_plugin(stage: Path, ref: str) -> None:
    """Name ``ref`` in a finished stage's recorded params, its run.json digest made to match (as an attacker can)."""
    from eps.pipeline.record import _text_digest
    text = (stage / "params.yaml").read_text()
    recorded = yaml.safe_load(text)
    recorded["plugins"] = [ref]
    text = "# The params\n" + yaml.safe_dump(recorded, sort_keys=False)
    (stage / "params.yaml").write_text(text)
    run = json.loads((stage / "run.json").read_text())
    run["params_digest"] = _text_digest(text)
    (stage / "run.json").write_text(json.dumps(run))


@pytest.mark.e2e
def test_report_never_imports_the_plugins_a_run_folder_names(nb201_run, tmp_path):
    src, params = nb201_run
    work = tmp_path / "work"
    shutil.copytree(src / "runs", work / "runs")
    marker = tmp_path / "MARKER"
    for where in (work, work / "runs", work / "runs" / "nb201", work / "runs" / "nb201" / "search"):
        (where / "evil.py").write_text(evil_source(marker))
    for stage in ("warmup", "search", "select"):
        plant_plugin(work / "runs" / "nb201" / stage, "evil.py:S")
    # with the run's own params (none given: what the run recorded) and with the user's params file
    proc = run_eps("report", "--space", "nb201", "--out", work / "runs", cwd=work, check=False, one_thread=True)
    assert not marker.exists(), proc.stderr
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    proc = run_eps("report", "--space", "nb201", "--params", params, "--out", work / "runs", cwd=work, check=False,
                   one_thread=True)
    assert not marker.exists()
    cli_error(proc, "evil.py:S", "other params")
    # the other commands that read run folders: the next stage's upstream check, and a rerun of a finished stage
    for args in (("stage", "retrain"), ("stage", "select"), ("stage", "select", "--redo")):
        proc = run_eps(*args, "--space", "nb201", "--params", params, "--out", work / "runs", cwd=work, check=False,
                       one_thread=True, timeout=600)
        assert not marker.exists() and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert proc.returncode in (0, 2), (args, proc.stderr)


@pytest.mark.e2e
def test_a_copied_plugin_project_keeps_matching_its_run_folder(tmp_path):
    """Records name plugins relative to the params file: a project copied elsewhere (the original deleted) is up to
    date there, its next stage runs on the copied upstream, and its report names no clash."""
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(GLYPH, first / "tensor_space.py")
    cfg = yaml.safe_load((REPO / "examples" / "tensor.yaml").read_text())
    cfg["glyph"].update(space={"channels": 16, "samples": 400}, warmup={"iterations": 10, "batch_size": 32},
                        search={"iterations": 30, "val_interval": 10, "population": 6, "group": 3, "parents": 2,
                                "batch_size": 32, "fitness_batch_size": 50, "checkpoint_every": 5},
                        select={"window": 20})
    (first / "params.yaml").write_text(yaml.safe_dump(cfg))
    for stage in ("warmup", "search"):
        run_eps("stage", stage, "--out", "runs", cwd=first, one_thread=True, timeout=600)
    for stage in ("warmup", "search"):
        recorded = yaml.safe_load((first / "runs" / "glyph" / stage / "params.yaml").read_text())
        assert recorded["plugins"] == ["tensor_space.py:GlyphSpace"]
        assert str(tmp_path) not in (first / "runs" / "glyph" / stage / "run.json").read_text()
    second = tmp_path / "moved" / "second"
    shutil.copytree(first, second)
    shutil.rmtree(first)
    proc = run_eps("stage", "search", "--out", "runs", cwd=second, one_thread=True)
    assert "up to date" in proc.stderr + proc.stdout, proc.stderr
    run_eps("stage", "select", "--out", "runs", cwd=second, one_thread=True)
    run_eps("report", "--out", "runs", cwd=second, one_thread=True)
    # the recorded params still load as --params from another working directory (the plugin found above them)
    run_eps("params", "--params", second / "runs" / "glyph" / "search" / "params.yaml", cwd=tmp_path)


# ------------------------------------------------------------------------------------------- benchmark imports

@pytest.mark.cli
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_nb201_import_of_a_plain_pickle_names_the_global_in_one_line(tmp_path, protocol):
    marker = tmp_path / "MARKER"

    class Evil:
        def __reduce__(self):
            return (subprocess.call, (["touch", str(marker)],))

    (tmp_path / "bench.pth").write_bytes(pickle.dumps({"x": Evil()}, protocol=protocol))
    proc = run_eps("nb201", "import", "bench.pth", "--out", tmp_path / "gt.csv", cwd=tmp_path, check=False)
    cli_error(proc, "disallowed global", ".call (", "without running any of it")  # protocol 2 says commands.call
    assert not marker.exists() and not (tmp_path / "gt.csv").exists()
