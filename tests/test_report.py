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


def report_cli(params, *folders, extra=(), **env) -> subprocess.CompletedProcess:
    """`eps report` of run folders (``--out`` each) with stdout a pipe and the given environment changes (a value of
    None removes the variable)."""
    full = eps_env(one_thread=True)
    for k, v in env.items():
        full.pop(k, None) if v is None else full.__setitem__(k, v)
    outs = [a for f in folders for a in ("--out", str(f))]
    proc = subprocess.run([EPS, "report", "--space", "nb201", *(["--params", str(params)] if params else []), *outs,
                           *extra], env=full, capture_output=True, text=True, encoding="utf-8")
    assert proc.returncode == 0, proc.stderr
    return proc


def archs_of(root: Path) -> set[str]:
    """The distinct architectures of the run under ``root``: both rules' choices and the retrained one."""
    sel = json.loads((root / "select/selection.json").read_text())
    retrained = json.loads((root / "retrain/run.json").read_text())["arch"]
    return {sel["size_prior"]["arch"], sel["prior_free"]["arch"], sel["arch"], retrained}


def squeeze(text: str) -> str:
    """The text without whitespace and table borders: what a folded cell or line reads as."""
    return re.sub(rf"[\s{BOX}]", "", text)


def on_one_line(lines: list[str], number: str) -> bool:
    """Whether ``number`` appears whole (not as part of a longer number) on one of ``lines``."""
    pattern = rf"(?<![\d.]){re.escape(number)}(?![\d.])"
    return any(re.search(pattern, line) for line in lines)


def expected_numbers(root: Path) -> list[str]:
    """Number cells the report shows, by the one rule per quantity: percent 2 decimals, nats 4, tau 3, M params 4."""
    search = json.loads((root / "search/metrics.json").read_text())
    sel = json.loads((root / "select/selection.json").read_text())
    retrain = json.loads((root / "retrain/metrics.json").read_text())
    gt = sel["size_prior"]["ground_truth"]
    pop = sel["population"]
    return [str(search["iterations"]), str(search["rounds"]), f"{search['last_train_loss']:.4f}",
            f"{sel['size_prior']['loss']:.4f}", f"{sel['size_prior']['params'] / 1e6:.4f}",
            f"{gt['cifar10_valid']:.2f}", f"{gt['cifar10_test']:.2f}", f"{gt['rank']}/{gt['rank_of']}",
            f"{pop['mean_acc']:.2f}", f"{pop['max_acc']:.2f}", f"{pop['tau_all']:.3f}", f"{pop['rho_all']:.3f}",
            f"{retrain['test_acc']:.2f}", f"{retrain['test_loss']:.4f}", f"{retrain['train_loss']:.4f}",
            f"{retrain['train_acc']:.2f}", f"{retrain['params'] / 1e6:.4f}"]


def decimals_ok(lines: list[str]) -> list[str]:
    """The table rows whose number breaks the rule of its unit (``(%)`` 2 decimals, ``(nats)`` 4, tau/rho 3)."""
    bad = []
    for line in lines:
        cells = [c.strip() for c in re.split(rf"[{BOX}]", line) if c.strip()]
        if len(cells) < 2:
            continue
        want = 2 if "(%)" in cells[0] else 4 if "(nats)" in cells[0] else 3 if re.search(r"tau|rho", cells[0]) else None
        for value in cells[1:]:
            if want is not None and value != "-" and not re.fullmatch(rf"-?\d+\.\d{{{want}}}", value):
                bad.append(line)
    return bad


def test_report_results_first_each_arch_once_in_80_columns(finished_run):
    params, out = finished_run
    root = out / "nb201"
    proc = report_cli(params, out, COLUMNS="80", TERM="xterm-256color", FORCE_COLOR=None, NO_COLOR=None)
    text, lines = proc.stdout, proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(line for line in lines if len(line) > 80)
    assert "\x1b" not in text  # a pipe gets no colour
    flat = squeeze(text)
    for arch in archs_of(root):
        assert len(arch) > 80 and flat.count(squeeze(arch)) == 1, arch  # longer than the terminal, folded, once
    sel = json.loads((root / "select/selection.json").read_text())
    first = next(i for i, line in enumerate(lines) if line.startswith("A = "))  # after the run's one header
    assert "chosen architecture" in lines[0] and first <= 2
    assert squeeze("".join(lines[first:first + 2]))[2:].startswith(squeeze(sel["arch"]))
    # the first screen (24 lines): the results and the search quality, before any detail; no settings
    first_screen = "\n".join(lines[:24])
    for item in ("retrained test acc (%)", "benchmark C10 test (%)", "benchmark rank", "Kendall tau"):
        assert item in first_screen, item
    assert text.index("results") < text.index("search quality") < text.index("search details") < \
        text.index("retrain details")
    assert "settings\n" not in text and "search.iterations" not in text  # the table (its title) is not shown
    assert "…" not in text and "..." not in text  # nothing cut
    for number in expected_numbers(root):
        assert on_one_line(lines, number), f"{number} is not whole on any line of:\n{text}"
    assert not decimals_ok(lines), decimals_ok(lines)
    assert "44.7500" not in text and not re.search(r"\(%\) +│ +\d+\.\d{4} ", text)

    report_txt = (root / "report/report.txt").read_text(encoding="utf-8")
    assert report_txt.index("results") < report_txt.index("settings")  # the settings come last in the file
    for arch in archs_of(root):
        assert squeeze(report_txt).count(squeeze(arch)) == 1 and any(line.endswith(arch) for line in
                                                                     report_txt.splitlines())  # whole, pasteable
    with_settings = report_cli(params, out, COLUMNS="80", FORCE_COLOR=None, extra=["--settings"]).stdout
    assert with_settings.index("search quality") < with_settings.index("settings")
    assert any(re.match(r"│ search\.iterations +│ 60 +│$", line) for line in with_settings.splitlines())
    assert max(map(len, with_settings.splitlines())) <= 80


def test_report_width_follows_the_terminal(finished_run):
    """Not a terminal and no COLUMNS: 100 columns; COLUMNS=120: an architecture line (over 90 characters) whole."""
    params, out = finished_run
    archs = archs_of(out / "nb201")
    proc = report_cli(params, out, COLUMNS=None, FORCE_COLOR=None)
    assert max(map(len, proc.stdout.splitlines())) <= 100
    wide = report_cli(params, out, COLUMNS="120", FORCE_COLOR=None).stdout.splitlines()
    assert 90 < max(map(len, wide)) <= 120
    assert {line.removeprefix("A = ").removeprefix("B = ") for line in wide} & archs


def test_report_txt_is_plain_when_the_terminal_gets_colour(run_copy):
    """FORCE_COLOR makes rich treat stdout as a terminal: the tables there are coloured, report.txt is not."""
    params, out = run_copy
    proc = report_cli(params, out, COLUMNS="80", TERM="xterm-256color", FORCE_COLOR="1", NO_COLOR=None)
    assert "\x1b[" in proc.stdout
    text = (out / "nb201/report/report.txt").read_text(encoding="utf-8")
    assert "\x1b" not in text and "retrain details" in text and "Kendall tau" in text
    assert max(len(line) for line in text.splitlines() if not line.startswith(("A = ", "B = "))) <= rep.FILE_WIDTH


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
    assert "\x1b" not in text and "89.50" in text and "25.00" in text and "0.300" in text
    assert max(map(len, text.splitlines())) > 40
    assert rep.terminal_console().width == 40  # the terminal console does follow COLUMNS


@pytest.mark.unit
def test_one_decimals_rule_per_quantity():
    assert [rep.fmt(44.75, rep.quantity(k)) for k in ("test_acc", "population_max_acc")] == ["44.75", "44.75"]
    assert rep.fmt(2.30001, rep.quantity("test_loss")) == "2.3000"
    assert rep.fmt(0.33333, rep.quantity("tau_all")) == "0.333"
    assert rep.fmt(88.15, rep.quantity("valid_ppl")) == "88.15"
    assert rep.fmt(8758, "mparams") == "0.0088" and rep.fmt(60, "percent") == "60"
    assert rep.fmt(None) == rep.fmt(math.nan, "corr") == "-"


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
    assert max(len(line) for line in lines) <= 80
    assert any(re.match(r"│ rounds +│ +4321 │$", line) for line in lines), proc.stdout
    assert any(re.match(r"│ strategy +│ eps +│$", line) for line in lines), proc.stdout
    assert any(re.match(r"│ precision +│ bf16 +│$", line) for line in lines), proc.stdout
    assert squeeze(proc.stdout).count(squeeze(run["arch"])) == 1  # at the top, labelled; not again in the details
    assert "0123abcd" not in proc.stdout and "eps version" not in proc.stdout  # bookkeeping stays out


def test_damaged_run_json_is_one_line_naming_it(run_copy):
    params, out = run_copy
    (out / "nb201/retrain/run.json").write_text('{"arch": "|none~0|+')
    proc = run_eps("report", "--space", "nb201", "--params", params, "--out", out, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "retrain/run.json" in lines[0] and "not valid JSON" in lines[0] and "eps stage retrain" in lines[0]


# ------------------------------------------------------------------------------------------------ plots

def assert_print_figure(png: Path) -> None:
    """A figure as the report keeps it: a PNG at 300 dpi and a vector SVG beside it with the same drawing."""
    from PIL import Image
    with Image.open(png) as im:
        dpi = im.info["dpi"]
        assert round(dpi[0]) == round(dpi[1]) == 300 and min(im.size) >= 1000, (dpi, im.size)
    svg = png.with_suffix(".svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "<path" in svg and "<image" not in svg  # vector, no raster inside

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
        assert_print_figure(root / "report" / name)

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


# ------------------------------------------------------------------------------------------------ several seeds

@pytest.fixture(scope="module")
def second_seed(tmp_path_factory):
    """The tiny run of finished_run again with seed 1: (params, out)."""
    import yaml
    from tests.conftest import TINY_NB201, run_chain
    d = tmp_path_factory.mktemp("seed1")
    params = d / "tiny.yaml"
    params.write_text(yaml.safe_dump({**TINY_NB201, "seed": 1}))
    run_chain(params, d / "runs")
    return params, d / "runs"


def _tree(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_several_seeds_table_and_figure_through_the_cli(finished_run, second_seed, tmp_path):
    """Two real runs with seeds 0 and 1 (--out twice, then positional): the headline numbers of each seed, their
    mean and sample std as computed here from the runs' files, each architecture once, 80 columns; seeds.json;
    the run folders untouched."""
    runs = [finished_run[1], second_seed[1]]
    before = [_tree(r) for r in runs]
    proc = report_cli(None, *runs, extra=["--into", str(tmp_path / "agg")], COLUMNS="80", FORCE_COLOR=None)
    text, lines = proc.stdout, proc.stdout.splitlines()
    assert max(map(len, lines)) <= 80, text
    sel = [json.loads((r / "nb201/select/selection.json").read_text()) for r in runs]
    met = [json.loads((r / "nb201/retrain/metrics.json").read_text()) for r in runs]
    flat = squeeze(text)
    for s in sel:
        assert flat.count(squeeze(s["arch"])) == 1 or sel[0]["arch"] == sel[1]["arch"]
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in lines if line.startswith("│")}
    assert set(rows) >= {"0", "1", "mean", "std"}, text
    header = [c.strip() for c in next(line for line in lines if line.startswith("┃")).split("┃")[1:-1]]
    assert header == ["seed", "cell", "test acc %", "test loss", "C10 test %", "rank", "tau"]
    for seed, s, m in zip(("0", "1"), sel, met):
        gt = s[s["rule"]]["ground_truth"]
        assert rows[seed][1:] == [f"{m['test_acc']:.2f}", f"{m['test_loss']:.4f}", f"{gt['cifar10_test']:.2f}",
                                  f"{gt['rank']}/{gt['rank_of']}", f"{s['population']['tau_all']:.3f}"]
    for col, values, nd in ((1, [m["test_acc"] for m in met], 2), (2, [m["test_loss"] for m in met], 4),
                            (3, [s[s["rule"]]["ground_truth"]["cifar10_test"] for s in sel], 2)):
        assert rows["mean"][col] == f"{np.mean(values):.{nd}f}"
        assert rows["std"][col] == f"{np.std(values, ddof=1):.{nd}f}"
    summary = json.loads((tmp_path / "agg/seeds.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["mean_std"]["test_loss"]["mean"] == pytest.approx(
        np.mean([m["test_loss"] for m in met]))
    assert (tmp_path / "agg/seeds.txt").read_text(encoding="utf-8").count("mean") == 1
    assert_print_figure(tmp_path / "agg/seeds.png")
    assert [_tree(r) for r in runs] == before  # only read

    # run folders given as arguments; the aggregate goes beside them by default
    full = eps_env(one_thread=True)
    pos = subprocess.run([EPS, "report", "--space", "nb201", *map(str, runs)], env=full, capture_output=True,
                         text=True)
    assert pos.returncode == 0, pos.stderr
    import os
    default = Path(os.path.commonpath([r.resolve() for r in runs])) / "seeds-nb201"
    assert (default / "seeds.svg").exists() and (default / "seeds.json").read_text() == \
        (tmp_path / "agg/seeds.json").read_text()


def test_several_seeds_figure_is_mean_and_std_of_the_runs(finished_run, second_seed, monkeypatch, tmp_path):
    """The aggregate figure, caught before saving: fitness (best and mean loss of the measured members), population
    accuracy and retrain test accuracy; each mean line is the mean of the seeds' curves read here from the files,
    and its band spans mean +- sample std."""
    from eps.params import load_params
    from eps.pipeline import report
    runs = [finished_run[1], second_seed[1]]
    caught = {}
    monkeypatch.setattr(plotting, "save", lambda fig, path: caught.setdefault(Path(path).name, fig))
    report.report_many("nb201", load_params(finished_run[0]), runs, explicit=False, into=tmp_path)
    fig = caught["seeds.png"]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["fitness over the search (lower is better)", "population accuracy (cifar10_test)", "retrain"]
    assert "2 seeds (0, 1)" in fig._suptitle.get_text()
    hist = [[json.loads(line) for line in (r / "nb201/search/history.jsonl").read_text().splitlines()] for r in runs]
    best = np.array([[min(l for l, c in zip(s["loss"], s["count"]) if c and l is not None) for s in h] for h in hist])
    fit = fig.axes[0]
    mean_line = next(ln for ln in fit.get_lines() if ln.get_label() == "population best, mean of 2")
    np.testing.assert_allclose(mean_line.get_xdata(), [s["iteration"] for s in hist[0]])
    np.testing.assert_allclose(mean_line.get_ydata(), best.mean(axis=0))
    band = next(c for c in fit.collections if c.get_label() == "population best, ± 1 std")
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx((best.mean(axis=0) + best.std(axis=0, ddof=1)).max())
    assert ys.min() == pytest.approx((best.mean(axis=0) - best.std(axis=0, ddof=1)).min())
    curves = [[{k: float(v) for k, v in row.items()} for row in __import__("csv").DictReader(
        (r / "nb201/retrain/curve.csv").open())] for r in runs]
    retrain_mean = next(ln for ln in fig.axes[2].get_lines() if ln.get_label().endswith("mean of 2"))
    np.testing.assert_allclose(retrain_mean.get_ydata(), np.mean([[r["test_acc"] for r in c] for c in curves], 0))
    assert fig.axes[2].get_xlabel() == "epoch" and fig.axes[2].get_ylabel() == "test accuracy (%)"


def test_several_runs_with_other_params_are_refused(finished_run, second_seed, tmp_path):
    """A run whose retrain had other epochs (a real rerun of the stages that read it: select and retrain) is not a
    seed of the same experiment: one line naming the run and the key, exit 2, nothing written."""
    import yaml
    other = tmp_path / "other"
    shutil.copytree(second_seed[1], other)
    cfg = yaml.safe_load(second_seed[0].read_text())
    cfg["nb201"]["retrain"]["epochs"] = 1
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(cfg))
    for stage in ("select", "retrain"):
        run_eps("stage", stage, "--space", "nb201", "--params", params, "--out", other, "--redo", one_thread=True)
    proc = run_eps("report", "--space", "nb201", "--out", finished_run[1], "--out", other, "--into",
                   tmp_path / "agg", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert str(other / "nb201") in lines[0] and "retrain" in lines[0] and "epochs" in lines[0], lines[0]
    assert "seed" in lines[0] and not (tmp_path / "agg").exists()
    same = run_eps("report", "--out", finished_run[1], "--out", finished_run[1], check=False)
    assert same.returncode == 2 and "given twice" in same.stderr and len(same.stderr.strip().splitlines()) == 1
