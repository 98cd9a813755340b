import pytest
import torch
import yaml

from eps import checkpoint
from eps.checkpoint import CheckpointDir
from eps.params import defaults, load_params
from eps.data.augment import crop_flip
from eps.errors import CheckpointError, ConfigError
from tests.conftest import run_eps

pytestmark = pytest.mark.unit


def write(tmp_path, obj, name="p.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(obj))
    return p


def test_defaults_are_the_paper_values():
    p = load_params()
    s = p["nb201"]["search"]
    assert (s["population"], s["group"], s["parents"], s["val_interval"], s["iterations"]) == (256, 64, 4, 50, 80000)
    assert p["nb201"]["select"]["alpha"] == 1.4 and p["nb201"]["retrain"]["epochs"] == 200


def test_all_problems_reported_at_once(tmp_path):
    bad = {"seeed": 1, "spaces": ["nb201", "nope"],
           "nb201": {"search": {"group": 300, "val_interval": -5, "lr": "fast", "strategy": "greedy"},
                     "space": {"p_opwise": 1.5}, "retrain": {"epochs": 0}}}
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, bad))
    msg = str(err.value)
    # type/unknown-key problems are found in the first pass
    for needle in ("seeed: unknown key", "nb201.search.lr: got 'fast'", "nb201.search.strategy: got 'greedy'"):
        assert needle in msg
    bad["seeed"] = None
    del bad["seeed"]
    bad["nb201"]["search"].pop("lr"), bad["nb201"]["search"].pop("strategy")
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, bad))
    msg = str(err.value)
    for needle in ("spaces: unknown space 'nope'", "nb201.search.group: 300 is larger than search.population 256",
                   "nb201.search.val_interval: got -5", "nb201.space.p_opwise: got 1.5", "nb201.retrain.epochs: got 0"):
        assert needle in msg


@pytest.mark.cli
def test_cli_reports_params_errors_and_exits_nonzero(tmp_path):
    p = write(tmp_path, {"nb201": {"search": {"group": 0}}})
    proc = run_eps("stage", "search", "--space", "nb201", "--params", p, "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "nb201.search.group: got 0" in proc.stderr
    assert not (tmp_path / "r").exists()
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("nb201: [\n")
    proc = run_eps("stage", "warmup", "--params", bad_yaml, check=False)
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr


def test_checkpoint_round_trip_and_corruption(tmp_path):
    state = {"w": torch.arange(10.0), "n": 3, "nested": {"t": (1, 2)}}
    ckpt = CheckpointDir(tmp_path / "c", {"a": 1}, log=lambda m: None)
    ckpt.save(state)
    ckpt.save({**state, "n": 4})
    assert ckpt.load_latest()["n"] == 4
    # flip one byte of the newest: detected, falls back to the previous good one
    data = bytearray(ckpt.last.read_bytes())
    data[-10] ^= 0xFF
    ckpt.last.write_bytes(bytes(data))
    msgs = []
    ckpt.log = msgs.append
    assert ckpt.load_latest()["n"] == 3 and "corrupt" in msgs[0]
    # truncate the previous one too: no good checkpoint -> error unless restart
    ckpt.prev.write_bytes(ckpt.prev.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="--restart"):
        ckpt.load_latest()
    assert ckpt.load_latest(restart=True) is None


def test_checkpoint_from_other_params_is_refused_with_the_keys(tmp_path):
    CheckpointDir(tmp_path, {"search": {"lr": 0.1, "group": 64}}).save({"x": 1})
    other = CheckpointDir(tmp_path, {"search": {"lr": 0.2, "group": 64}}, log=lambda m: None)
    with pytest.raises(CheckpointError, match=r"changed: search\.lr"):
        other.load_latest()
    assert other.load_latest(restart=True) is None


def test_checkpoint_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    import hashlib
    import io
    buf = io.BytesIO()
    torch.save({"x": Evil()}, buf)
    payload = buf.getvalue()
    data = checkpoint.MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        checkpoint.loads(data)


def test_crop_flip_matches_reference_semantics():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.uint8).reshape(2, 3, 32, 32)
    out = crop_flip(x, g, pad=4, flip=True)
    g = torch.Generator().manual_seed(0)
    oy, ox = torch.randint(0, 9, (2,), generator=g), torch.randint(0, 9, (2,), generator=g)
    flipped = torch.rand(2, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for b in range(2):
        ref = padded[b, :, oy[b]:oy[b] + 32, ox[b]:ox[b] + 32]
        if flipped[b]:
            ref = ref.flip(-1)
        assert torch.equal(out[b], ref)


def test_defaults_dump_reloads(tmp_path):
    assert load_params(write(tmp_path, defaults())) == defaults()


@pytest.mark.unit
@pytest.mark.parametrize("text, key, lines", [
    ("seed: 1\nnb201:\n  search: {iterations: 5}\nseed: 2\n", "seed", "lines 1 and 4"),
    ("nb201:\n  search:\n    iterations: 5\nnb201:\n  warmup: {iterations: 1}\n", "nb201", "lines 1 and 4"),
    ("nb201:\n  search: {iterations: 5, iterations: 7}\n", "iterations", "lines 2 and 2"),
    ("plugins: [a.py:A]\nplugins: []\n", "plugins", "lines 1 and 2"),
])
def test_a_duplicate_key_is_an_error_naming_the_key_and_lines(tmp_path, text, key, lines):
    """YAML lets a repeated key replace the first silently (a second `nb201:` block drops the whole first one)."""
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    msg = str(err.value)
    assert "\n" not in msg and f"key {key!r} appears twice ({lines})" in msg
