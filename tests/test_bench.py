"""The benchmark scripts run end to end and print their JSON figures (tiny sizes; timings are never asserted)."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import DATA_ROOT, REPO

pytestmark = pytest.mark.e2e


def run_bench(*args: str) -> list[dict]:
    env = {**os.environ, "EPS_DATA_DIR": str(DATA_ROOT)}
    out = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_round_bench_partial_round_projects_to_paper_sizes():
    (row,) = run_bench("bench.round", "--space", "nb201", "--rounds", "1", "--steps", "2", "--members", "3")
    assert row["partial"] is True and row["timed_steps"] == 2 and row["timed_members"] == 3
    # a paper round is 50 steps + 64 forwards: the projection must be built from the measured rates
    projected = 50 / row["train_steps_per_s"] + 64 / row["fitness_forwards_per_s"]
    assert row["seconds_per_round"] == pytest.approx(projected, rel=0.05)
    assert row["projected_full_search_h"] == pytest.approx(row["seconds_per_round"] * 1600 / 3600, rel=0.01)
    assert row["peak_rss_mb"] > 0


def test_retrain_bench_images_and_tokens_per_second():
    rows = run_bench("bench.retrain", "--space", "nb201", "--steps", "1", "--batch", "8")
    assert {(r["amp_bf16"], r["channels_last"]) for r in rows} >= {(False, False), (False, True)}
    assert all(r["images_per_s"] > 0 for r in rows)
    (lm,) = run_bench("bench.retrain", "--space", "darts-rnn", "--steps", "1", "--batch", "2")
    assert lm["tokens_per_s"] > 0 and lm["bptt"] == 35


@pytest.mark.distributed
def test_scaling_bench_one_and_two_processes():
    (row,) = run_bench("bench.scaling", "--rounds", "1", "--procs", "1,2", "--set", "supernet.data_subset=300",
                       "--set", "search.batch_size=16", "--set", "search.population=8", "--set", "search.group=4",
                       "--set", "search.fitness_batch_size=20", "--set", "space.channels=4",
                       "--set", "space.cells_per_stage=1")
    assert [r["procs"] for r in row["rows"]] == [1, 2]
    assert all(r["seconds_per_round"] > 0 and r["threads_per_proc"] == 1 for r in row["rows"])
    assert row["rows"][0]["speedup"] == 1.0
