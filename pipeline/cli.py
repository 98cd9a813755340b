"""The ``eps`` command line (Typer). Every user error ends as one red line on stderr and a non-zero exit."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="EPS: evolving the proxy search space, a random-sampling weight-sharing NAS method.")
stage_app = typer.Typer(no_args_is_help=True, help="Run one pipeline stage.")
arch_app = typer.Typer(no_args_is_help=True, help="Inspect architectures.")
nb201_app = typer.Typer(no_args_is_help=True, help="NAS-Bench-201 ground truth.")
app.add_typer(stage_app, name="stage")
app.add_typer(arch_app, name="arch")
app.add_typer(nb201_app, name="nb201")
study_app = typer.Typer(no_args_is_help=True, help="Studies of the method against a benchmark's ground truth.")
app.add_typer(study_app, name="study")

SpaceOpt = typer.Option("nb201", "--space", "-s",
                        help="Search space: nb201, darts-cnn, darts-rnn, an installed plugin's name, or your own "
                             "space as path/to/file.py:Class or package.module:Class.")
ParamsOpt = typer.Option(None, "--params", "-p", help="Params YAML (overlay on the paper defaults).")
OutOpt = typer.Option(Path("runs"), "--out", "-o", help="Output root; stage folders go under OUT/SPACE/.")
RestartOpt = typer.Option(False, "--restart", help="Start afresh when the checkpoint is unusable or was made with "
                                                   "other params (otherwise such a run stops).")


def friendly(fn):
    """Turn EpsError into one line + exit 2, and Ctrl-C into a resume hint + exit 130."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from eps.errors import EpsError
        try:
            return fn(*args, **kwargs)
        except EpsError as err:
            typer.secho(f"error: {err}", fg="red", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.secho("interrupted; run the same command again to resume from the last checkpoint",
                        fg="yellow", err=True)
            raise typer.Exit(130) from None
    return wrapper


def _params(path: Optional[Path], space: Optional[str], overrides: Optional[dict] = None) -> tuple[str | None, dict]:
    """(the space's registered name, validated params). ``space`` may be a name or a ``file.py:Class`` reference;
    ``path`` defaults to ./params.yaml when it exists, as for the DVC stages."""
    from eps.config import load_params
    from eps.spaces import resolve, space_class
    if path is None and Path("params.yaml").exists():
        path = Path("params.yaml")
    plugins = [space] if space and ":" in space else []
    params = load_params(path, overrides, plugins=plugins)
    if space is None:
        return None, params
    name = resolve(space)
    space_class(name)  # a one-line error for an unknown or broken space
    return name, params


def _stage(name: str):
    @friendly
    def command(space: str = SpaceOpt, params: Optional[Path] = ParamsOpt, out: Path = OutOpt,
                restart: bool = RestartOpt):
        from pipeline import stages
        name_, p = _params(params, space)
        getattr(stages, name)(name_, p, out, restart=restart)
    command.__doc__ = {"warmup": "Train the supernet by uniform sampling over the whole space.",
                       "search": "Evolve the proxy search space while training the supernet (EPS).",
                       "select": "Choose the final architecture from the snapshot history.",
                       "retrain": "Train the chosen architecture from scratch and report its test metrics."}[name]
    return command


for _name in ("warmup", "search", "select", "retrain"):
    stage_app.command(_name)(_stage(_name))


@app.command()
@friendly
def run(space: str = SpaceOpt, params: Optional[Path] = ParamsOpt, out: Path = OutOpt, restart: bool = RestartOpt):
    """Run warmup, search, select and retrain in order, then print the report."""
    from pipeline import stages, report as report_stage
    name, p = _params(params, space)
    for stage in stages.STAGES:
        getattr(stages, stage)(name, p, out, restart=restart)
    report_stage.report(name, p, out)


@app.command()
@friendly
def report(space: Optional[str] = typer.Option(None, "--space", "-s", help="Report one space (default: all in params)."),
           params: Optional[Path] = ParamsOpt, out: Path = OutOpt):
    """Print rich summaries of the finished stages and write PNG plots to OUT/SPACE/report/."""
    from pipeline import report as report_stage
    name, p = _params(params, space)
    for each in ([name] if name else p["spaces"]):
        report_stage.report(each, p, out)


@app.command("params")
@friendly
def show_params(params: Optional[Path] = ParamsOpt,
                space: Optional[str] = typer.Option(None, "--space", "-s", help="Only this space's section.")):
    """Print the effective params (defaults overlaid with --params or ./params.yaml) as YAML, validated.

    With --space, only that space's section: ready to paste into params.yaml (for your own space too)."""
    import yaml
    from eps.spaces import broken
    name, p = _params(params, space)
    if name:
        p = {name: p[name]}
    else:
        for bad, why in broken().items():
            typer.secho(f"warning: space {bad} is left out: {why}", fg="yellow", err=True)
    typer.echo(yaml.safe_dump(p, sort_keys=False, default_flow_style=None, width=120), nl=False)


@arch_app.command("params")
@friendly
def arch_params(archs: List[str] = typer.Argument(..., help="Architectures in the space's notation."),
                space: str = SpaceOpt,
                classes: Optional[int] = typer.Option(None, "--classes", help="Number of classes (default: the space's)."),
                channels: Optional[int] = typer.Option(None, "--channels", help="Initial channels / hidden size."),
                layers: Optional[int] = typer.Option(None, "--layers", help="Cells (CNN) or layers."),
                params: Optional[Path] = ParamsOpt):
    """Print the standalone network's parameter count in millions, one line per architecture."""
    from eps.spaces import get_space
    name, p = _params(params, space)
    sp = get_space(name, p[name])  # params choose e.g. the DARTS variant
    options = {k: v for k, v in {"num_classes": classes, "channels": channels, "layers": layers}.items() if v is not None}
    for text in archs:
        n = sp.num_params(sp.decode(text), **options)
        typer.echo(f"{n / 1e6:.6f}  {text}")


@nb201_app.command("import")
@friendly
def nb201_import(file: Path = typer.Argument(..., help="Official NAS-Bench-201 v1.0/v1.1 .pth file."),
                 out: Optional[Path] = typer.Option(None, "--out", help="CSV to write (default: DATA_ROOT/nb201/ground_truth.csv).")):
    """Write eps's compact ground-truth CSV from the official benchmark file."""
    from eps.spaces.nb201.groundtruth import GROUND_TRUTH_FILE, import_benchmark
    from eps.config import data_root
    target = out or (data_root(_params(None, None)[1]) / GROUND_TRUTH_FILE)
    n = import_benchmark(file, target)
    typer.echo(f"wrote {n} cells to {target}")


@app.command("import-records")
@friendly
def import_records(run_dir: Path = typer.Argument(..., help="Run folder of the reference implementation (NNNNNN-ep.txt files)."),
                   out: Path = OutOpt, space: str = SpaceOpt,
                   force: bool = typer.Option(False, "--force", help="Overwrite an existing history.")):
    """Import the reference implementation's population snapshots as OUT/SPACE/search/history.jsonl."""
    from eps.errors import EpsError
    from eps.spaces.nb201.records import import_records as do_import
    if space != "nb201":
        raise EpsError(f"import-records reads NAS-Bench-201 runs of the reference code; --space {space} is not supported")
    target = out / space / "search" / "history.jsonl"
    if target.exists() and not force:
        raise EpsError(f"{target} exists; pass --force to replace it, or choose another --out")
    snapshots = do_import(run_dir, target)
    typer.echo(f"imported {len(snapshots)} snapshots into {target}; next: eps stage select --space {space} --out {out}")


@study_app.command("correlation")
@friendly
def study_correlation(space: str = SpaceOpt,
                      iterations: Optional[int] = typer.Option(
                          None, "--iterations", "-n", help="Supernet iterations of each run (study.iterations)."),
                      seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds, e.g. 0,1 "
                                                                                   "(study.seeds)."),
                      params: Optional[Path] = ParamsOpt, out: Path = OutOpt, restart: bool = RestartOpt):
    """Train a RandomNAS and an EPS supernet per seed; compare how they rank cells against the ground truth."""
    from eps.errors import ConfigError
    from pipeline import study
    overrides: dict = {}
    if iterations is not None:
        overrides["iterations"] = iterations
    if seeds is not None:
        try:
            overrides["seeds"] = [int(x) for x in seeds.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1") from None
    name, p = _params(params, space, {"study": overrides} if overrides else None)
    study.correlation(name, p, out, restart=restart)


def main():
    app()


if __name__ == "__main__":
    main()
