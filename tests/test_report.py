"""`eps report`: tables sized to the terminal, a plain report.txt, and plots that say what they show.

One finished tiny NB201 run (the real CLI, real CIFAR-10 subsets and the real ground truth) is reported again under
different terminals; the plots are checked in-process, on the figures the report itself makes.
"""
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from eps import plotting
from eps import report as rep
from eps.analysis import final_population
from eps.errors import DataError
from eps.metrics import kendall_tau
from eps.space import HasOptimum
from eps.spaces.nb201.groundtruth import GroundTruth
from tests.conftest import DATA_ROOT, EPS, eps_env, run_eps

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_thread")]

BOX = "│┃┆┊║─━┄┈═┌┐└┘├┤┬┴┼┏┓┗┛┡┩┣┫┳┻╇╋╭╮╯╰"


@pytest.fixture
def run_copy(finished_run, tmp_path):
    params, out = finished_run
    shutil.copytree(out, tmp_path / "runs")
    return params, tmp_path / "runs"


@pytest.fixture(scope="module")
def bench():
    return GroundTruth.load(DATA_ROOT)


def report_cli(params, out, **env) -> subprocess.CompletedProcess:
    """`eps report` with stdout a pipe and the given environment changes (a value of None removes the variable)."""
    full = eps_env(one_thread=True)
    for k, v in env.items():
        full.pop(k, None) if v is None else full.__setitem__(k, v)
    proc = subprocess.run([EPS, "report", "--space", "nb201", "--params", str(params), "--out", str(out)], env=full,
                          capture_output=True, text=True, encoding="utf-8")
    assert proc.returncode == 0, proc.stderr
    return proc


# The report's rule: every table line fits the width (the terminal's, or report.txt's FILE_WIDTH); the architectures
# are repeated after the tables, each whole on a line of its own that may be longer (so it can be pasted; a terminal
# wraps it softly). How long those lines are depends on the cells the run chose, so on the machine.
ARCH_PREFIXES = tuple(f"{rule}: " for rule in rep.RULES) + ("retrained: ",)


def table_lines(text: str) -> list[str]:
    """The lines of ``text`` that are not the pasteable architecture lines."""
    return [line for line in text.splitlines() if not line.startswith(ARCH_PREFIXES)]


def arch_lines(root: Path) -> set[str]:
    """The pasteable architecture lines the report must print for the run under ``root``, whole."""
    sel = json.loads((root / "select/selection.json").read_text())
    return {f"size_prior: {sel['size_prior']['arch']}", f"prior_free: {sel['prior_free']['arch']}",
            f"retrained: {sel['arch']}"}


def squeeze(text: str) -> str:
    """The text without whitespace and table borders: what a folded cell reads as."""
    return re.sub(rf"[\s{BOX}]", "", text)


def on_one_line(lines: list[str], number: str) -> bool:
    """Whether ``number`` appears whole (not as part of a longer number) on one of ``lines``."""
    pattern = rf"(?<![\d.]){re.escape(number)}(?![\d.])"
    return any(re.search(pattern, line) for line in lines)


def expected_numbers(root: Path) -> list[str]:
    """Number cells the report shows, as it formats them (4 decimals for losses, 2 for benchmark accuracies ...)."""
    search = json.loads((root / "search/metrics.json").read_text())
    sel = json.loads((root / "select/selection.json").read_text())
    retrain = json.loads((root / "retrain/metrics.json").read_text())
    gt = sel["size_prior"]["ground_truth"]
    pop = sel["population"]
    return [str(search["iterations"]), str(search["rounds"]), f"{search['last_train_loss']:.4f}",
            f"{sel['size_prior']['loss']:.4f}", f"{sel['size_prior']['params'] / 1e6:.4f}",
            f"{gt['cifar10_valid']:.2f}", f"{gt['cifar10_test']:.2f}", f"{gt['rank']} / {gt['rank_of']}",
            f"{pop['mean_acc']:.2f}", f"{pop['max_acc']:.2f}", f"{pop['tau_all']:.3f}",
            f"{retrain['test_acc']:.4f}", f"{retrain['test_loss']:.4f}", f"{retrain['train_loss']:.4f}",
            f"{retrain['params'] / 1e6:.4f}"]


def test_report_fits_80_columns_without_breaking_values(finished_run):
    params, out = finished_run
    root = out / "nb201"
    proc = report_cli(params, out, COLUMNS="80", TERM="xterm-256color", FORCE_COLOR=None, NO_COLOR=None)
    lines = proc.stdout.splitlines()
    # the architectures are repeated after the tables, one per line, never broken; everything else fits 80 columns
    pasteable = arch_lines(root)
    assert pasteable <= set(lines) and set(lines) - set(table_lines(proc.stdout)) == pasteable, proc.stdout
    table = table_lines(proc.stdout)
    assert max(len(line) for line in table) <= 80, "\n".join(line for line in table if len(line) > 80)
    assert "\x1b" not in proc.stdout  # a pipe gets no colour
    for title in ("settings", "search summary", "chosen architecture", "chosen cells on the benchmark",
                  "final population vs ground truth", "retrain result"):
        assert title in proc.stdout, title
    sel = json.loads((root / "select/selection.json").read_text())
    flat = squeeze(proc.stdout)
    for arch in (sel["size_prior"]["arch"], sel["prior_free"]["arch"], sel["arch"]):
        assert len(arch) > 60 and squeeze(arch) in flat, arch  # longer than its column: folded, and whole
    assert "…" not in proc.stdout and "..." not in proc.stdout  # nothing cut
    for number in expected_numbers(root):
        assert on_one_line(lines, number), f"{number} is not whole on any line of:\n{proc.stdout}"
    # the settings are short key/value rows, not sentences that wrap
    assert any(re.match(r"│ search\.iterations +│ 60 +│$", line) for line in lines), proc.stdout


def test_report_width_follows_the_terminal(finished_run):
    """Not a terminal and no COLUMNS: 100 columns, the same tables as report.txt; COLUMNS=120: up to 120."""
    params, out = finished_run
    proc = report_cli(params, out, COLUMNS=None, FORCE_COLOR=None)
    text = (out / "nb201/report/report.txt").read_text(encoding="utf-8")
    tables = "".join(line + "\n" for line in table_lines(text))
    assert proc.stdout.startswith(tables) and max(map(len, tables.splitlines())) <= 100
    assert arch_lines(out / "nb201") <= set(proc.stdout.splitlines())
    wide = report_cli(params, out, COLUMNS="120", FORCE_COLOR=None)
    widths = [len(line) for line in table_lines(wide.stdout)]  # the tables widen; the architecture lines are whole
    assert 100 < max(widths) <= 120
    assert arch_lines(out / "nb201") <= set(wide.stdout.splitlines())


def test_report_txt_is_plain_when_the_terminal_gets_colour(run_copy):
    """FORCE_COLOR makes rich treat stdout as a terminal: the tables there are coloured, report.txt is not."""
    params, out = run_copy
    proc = report_cli(params, out, COLUMNS="80", TERM="xterm-256color", FORCE_COLOR="1", NO_COLOR=None)
    assert "\x1b[" in proc.stdout
    text = (out / "nb201/report/report.txt").read_text(encoding="utf-8")
    assert "\x1b" not in text and "retrain result" in text and "Kendall tau" in text
    assert max(map(len, table_lines(text))) <= rep.FILE_WIDTH
    assert arch_lines(out / "nb201") <= set(text.splitlines())  # whole, however long


@pytest.mark.unit
def test_plain_text_ignores_the_environment(monkeypatch):
    """plain_text() is plain whatever rich would read from the environment."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    table = rep.population_table({"metric": "cifar10_test", "members": 8, "mean_acc": 89.5, "max_acc": 92.1,
                                  "top_fraction": 0.2, "top_share": 0.25, "measured": 6, "tau_all": 0.3,
                                  "rho_all": 0.5, "measured_top": 2, "tau_top": None, "rho_top": None})
    text = rep.plain_text([table])
    assert "\x1b" not in text and "89.50" in text and max(map(len, text.splitlines())) > 40
    assert rep.terminal_console().width == 40  # the terminal console does follow COLUMNS


def _new_layout(root: Path, rounds: int) -> dict:
    """The run as the stages write it, with figures no tiny run gives (``rounds``, bf16 precision) written into its
    files and their records kept consistent (as a stage that computed them would have)."""
    from eps.pipeline.record import _digests
    search = json.loads((root / "search/metrics.json").read_text())
    search["rounds"] = rounds
    (root / "search/metrics.json").write_text(json.dumps(search))
    run = json.loads((root / "search/run.json").read_text())
    run["outputs"] = _digests(root / "search")
    (root / "search/run.json").write_text(json.dumps(run))
    run = json.loads((root / "retrain/run.json").read_text())
    run["precision"] = "bf16"
    (root / "retrain/run.json").write_text(json.dumps(run))
    return run


def test_report_reads_run_json_and_shows_rounds_as_written(run_copy):
    params, out = run_copy
    root = out / "nb201"
    run = _new_layout(root, rounds=4321)
    proc = report_cli(params, out, COLUMNS="80", FORCE_COLOR=None)
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in table_lines(proc.stdout)) <= 80
    assert any(re.match(r"│ rounds +│ +4321 │$", line) for line in lines), proc.stdout
    assert any(re.match(r"│ strategy +│ eps +│$", line) for line in lines), proc.stdout
    assert any(re.match(r"│ precision +│ bf16 +│$", line) for line in lines), proc.stdout
    retrain_part = proc.stdout[proc.stdout.index("retrain result"):]
    assert squeeze(run["arch"]) in squeeze(retrain_part)
    assert "0123abcd" not in proc.stdout and "eps version" not in proc.stdout  # bookkeeping stays out


def test_damaged_run_json_is_one_line_naming_it(run_copy):
    params, out = run_copy
    (out / "nb201/retrain/run.json").write_text('{"arch": "|none~0|+')
    proc = run_eps("report", "--space", "nb201", "--params", params, "--out", out, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "retrain/run.json" in lines[0] and "not valid JSON" in lines[0] and "eps stage retrain" in lines[0]


# ------------------------------------------------------------------------------------------------ plots

def test_report_plots_have_titles_units_and_reference_lines(run_copy, bench, monkeypatch):
    """The figures the report saves, caught before saving: titles, units, integer epochs, the benchmark optimum and
    the chosen cell, Kendall tau of the final population as the history gives it."""
    from eps.pipeline import report
    from eps.params import load_params
    params_file, out = run_copy
    root = out / "nb201"
    figures = {}
    save = plotting.save

    def catch(fig, path):
        figures[Path(path).name] = {
            "suptitle": fig._suptitle.get_text() if fig._suptitle else "",
            "axes": [{"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                      "xticks": [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]],
                      "lines": {ln.get_label(): list(ln.get_ydata()) for ln in ax.get_lines()},
                      "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []}
                     for ax in fig.axes]}
        save(fig, path)

    monkeypatch.setattr(plotting, "save", catch)
    report.report("nb201", load_params(params_file), out, explicit=False)
    assert {"retrain_curve.png", "loss_vs_accuracy.png", "population_accuracy.png"} <= set(figures)
    for name in figures:
        assert (root / "report" / name).stat().st_size > 1000

    curve = figures["retrain_curve.png"]
    assert "retrain" in curve["suptitle"] and "2 epochs" in curve["suptitle"]
    assert [a["title"] for a in curve["axes"]] == ["loss", "accuracy"]
    assert [a["ylabel"] for a in curve["axes"]] == ["cross-entropy (nats)", "accuracy (%)"]
    for ax in curve["axes"]:
        assert ax["xlabel"] == "epoch" and ax["legend"] == ["train", "test"]
        assert ax["xticks"] and all(float(t).is_integer() for t in ax["xticks"]), ax["xticks"]

    sel = json.loads((root / "select/selection.json").read_text())
    (pop_ax,) = figures["population_accuracy.png"]["axes"]
    assert "population accuracy" in pop_ax["title"] and pop_ax["ylabel"].endswith("(%)")
    optimum = float(np.nanmax(bench.column("cifar10_test")))
    chosen_acc = bench.accuracy(sel["arch"], "cifar10_test")
    lines = pop_ax["lines"]
    assert lines[f"benchmark optimum {optimum:.2f} %"] == [optimum, optimum]
    assert lines[f"chosen cell ({sel['rule']}) {chosen_acc:.2f} %"] == [chosen_acc, chosen_acc]

    (scatter,) = figures["loss_vs_accuracy.png"]["axes"]
    last = [json.loads(line) for line in (root / "search/history.jsonl").read_text().splitlines()][-1]
    measured = [(l, a) for a, l, c in zip(last["arch"], last["loss"], last["count"]) if c and l is not None]
    tau = kendall_tau([-l for l, _ in measured], [bench.accuracy(a, "cifar10_test") for _, a in measured])
    unmeasured = len(last["arch"]) - len(measured)
    assert f"Kendall tau {tau:.3f} ({len(measured)} measured)" in scatter["title"]
    assert (f"{unmeasured} of {len(last['arch'])} members unmeasured" in scatter["title"] if unmeasured
            else f"all {len(last['arch'])} members measured" in scatter["title"])
    assert {"chosen: size_prior", "chosen: prior_free"} <= set(scatter["legend"])
    assert scatter["ylabel"] == "ground-truth cifar10_test accuracy (%)" and "nats" in scatter["xlabel"]


@pytest.mark.unit
def test_outliers_do_not_squash_the_population_and_are_counted(bench, tmp_path):
    """Two cells at ~10 % among 98 good ones (a real case: NB201 cells that do not train) stay out of the axes,
    drawn at the edge and counted; unmeasured members and the chosen cells are accounted for."""
    acc = bench.column("cifar10_test")
    good = [a for a, v in zip(bench.archs, acc) if 88 <= v <= 93][:98]
    bad = [a for a, v in zip(bench.archs, acc) if v < 11][:2]
    unmeasured = [a for a, v in zip(bench.archs, acc) if 80 <= v < 88][:7]
    assert len(good) == 98 and len(bad) == 2 and len(unmeasured) == 7
    rng = np.random.default_rng(0)
    archs = good + bad + unmeasured
    loss = [float(2.0 - 0.02 * (bench.accuracy(a, "cifar10_test") - 90) + rng.normal(0, 0.02)) for a in good]
    loss += [2.3, 2.3] + [None] * 7
    snapshot = {"iteration": 8000, "arch": archs, "loss": loss, "count": [1] * 100 + [0] * 7}
    pop = final_population(bench, snapshot, {"size_prior": (good[0], 1.5), "prior_free": (bad[0], 2.3)})
    assert pop["members"] == 107 and pop["unmeasured"] == 7 and len(pop["acc"]) == 100
    assert pop["chosen"]["size_prior"] == (-loss[0], bench.accuracy(good[0], "cifar10_test"))  # its final loss
    fig = rep.loss_vs_accuracy_figure(pop)
    ax = fig.axes[0]
    title = ax.get_title()
    assert f"Kendall tau {kendall_tau(pop['neg_loss'], pop['acc']):.3f} (100 measured)" in title
    assert "7 of 107 members unmeasured" in title
    low, high = ax.get_ylim()
    # the good cells fill the axes; the chosen prior_free cell (an outlier itself) stays in view, the other one
    # is drawn at the edge
    assert low < 10.1 and high < 94
    plotting.save(fig, tmp_path / "with_outlier_chosen.png")
    pop["chosen"] = {"size_prior": pop["chosen"]["size_prior"]}
    fig = rep.loss_vs_accuracy_figure(pop)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    good_acc = [bench.accuracy(a, "cifar10_test") for a in good]
    assert 80 < low <= min(good_acc) and max(good_acc) <= high < 95, (low, high)  # every good cell, no outlier
    assert "2 outside the axes" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "chosen: size_prior" in legend and "outside the axes, drawn at the edge" in legend
    plotting.save(fig, tmp_path / "loss_vs_accuracy.png")
    assert (tmp_path / "loss_vs_accuracy.png").stat().st_size > 1000


@pytest.mark.unit
def test_robust_limits():
    cluster = list(np.linspace(85, 93, 200))
    low, high = plotting.robust_limits(cluster + [10.0, 10.5])
    assert 84 < low < 85 and 93 < high < 94
    low, high = plotting.robust_limits(cluster)  # no outlier: every value in view
    assert low < 85 and high > 93
    assert plotting.robust_limits([5.0]) == (4.75, 5.25)
    assert plotting.robust_limits([math.nan]) is None


@pytest.mark.unit
def test_ptb_curve_plots_perplexity():
    """Language-model rows (the keys the DARTS RNN task's train_epoch and evaluate return) get a perplexity panel
    of train and valid, and a loss panel of train and valid."""
    rows = [{"epoch": e, "train_loss": 7 - 0.4 * e, "train_ppl": math.exp(7 - 0.4 * e), "steps": 32, "asgd": 0,
             "valid_loss": 6.9 - 0.3 * e, "valid_ppl": math.exp(6.9 - 0.3 * e), "best_valid_ppl": 1.0,
             "best_epoch": e, "test_loss": 6.0, "test_ppl": math.exp(6.0), "test_model_epoch": e} for e in range(1, 6)]
    fig = rep.retrain_curve_figure(rows, "darts-rnn: retrain of the size_prior cell, 5 epochs")
    assert fig._suptitle.get_text().startswith("darts-rnn: retrain")
    loss, ppl = fig.axes
    assert (loss.get_title(), ppl.get_title(), ppl.get_ylabel()) == ("loss", "perplexity", "perplexity")
    assert [ln.get_label() for ln in ppl.get_lines()] == ["train", "valid"]
    assert [ln.get_label() for ln in loss.get_lines()] == ["train", "valid"]
    assert list(ppl.get_lines()[1].get_ydata()) == [r["valid_ppl"] for r in rows]
    assert rep.retrain_curve_figure([{"epoch": 1.0, "steps": 3.0}], "t") is None


@pytest.mark.unit
def test_ground_truth_optimum(bench):
    assert isinstance(bench, HasOptimum)
    for column in ("cifar10_valid", "cifar10_test"):
        assert bench.best(column) == float(np.nanmax(bench.column(column)))
        best_cell = bench.archs[int(np.nanargmax(bench.column(column)))]
        assert bench.rank(best_cell, column) == 1
    with pytest.raises(DataError, match="no column 'nope'"):
        bench.best("nope")
