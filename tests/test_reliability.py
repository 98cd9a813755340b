"""Numerical faults, fuzzed parsers, atomic outputs."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eps.errors import ArchError
from eps.io import AppendLog
from eps.spaces.nb201.model import OPS
from eps.spaces.nb201.space import arch_to_str, ints_to_arch, str_to_arch
from tests.conftest import run_eps, write_tiny_params

pytestmark = pytest.mark.unit


@pytest.mark.e2e
def test_nonfinite_loss_stops_with_iteration_and_cell(tmp_path):
    p = write_tiny_params(tmp_path, search=dict(lr=1e30))
    run_eps("stage", "warmup", "--params", p, "--out", tmp_path)
    proc = run_eps("stage", "search", "--params", p, "--out", tmp_path, check=False)
    assert proc.returncode == 2
    assert "non-finite training loss at iteration" in proc.stderr and "on cell |" in proc.stderr
    assert not (tmp_path / "nb201/search").exists()  # no half-written outputs


@pytest.mark.e2e
def test_nonfinite_steps_can_be_skipped_and_counted(tmp_path):
    p = write_tiny_params(tmp_path, search=dict(lr=1e30, on_nonfinite="skip"))
    run_eps("stage", "warmup", "--params", p, "--out", tmp_path)
    run_eps("stage", "search", "--params", p, "--out", tmp_path)
    metrics = json.loads((tmp_path / "nb201/search/metrics.json").read_text())
    assert metrics["nonfinite_skipped"] > 0 and metrics["iterations"] == 60


token = st.sampled_from(list(OPS) + ["nor_conv_5x5", "", "~", "|", "+", "0", "1", "2", "3", "~0", "~1", "~2"])


@settings(max_examples=400, deadline=None)
@given(st.lists(token, max_size=30).map("".join) | st.text(max_size=120))
def test_nb201_parser_never_raises_anything_but_arch_error(text):
    try:
        arch = str_to_arch(text)
    except ArchError:
        return
    assert arch_to_str(arch) == text.strip()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=6, max_size=6), st.integers(0, 200), st.text(max_size=3))
def test_nb201_mutated_strings(ops, pos, junk):
    text = arch_to_str(ints_to_arch(ops))
    mutated = text[:pos] + junk + text[pos + len(junk):]
    try:
        arch = str_to_arch(mutated)
    except ArchError:
        return
    assert arch_to_str(arch) == mutated.strip()


def test_append_log_truncates_to_committed_length(tmp_path):
    log = AppendLog(tmp_path / "h.jsonl")
    log.append({"a": 1})
    n = log.commit()
    log.append({"a": 2})
    log.commit()
    log.truncate(n)
    log.append({"a": 3})
    log.close()
    assert [json.loads(l)["a"] for l in (tmp_path / "h.jsonl").read_text().splitlines()] == [1, 3]
