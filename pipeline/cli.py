"""The ``eps`` command line (Typer). Every user error ends as one red line on stderr and a non-zero exit."""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperCommand, TyperGroup

SPACES = "the registered spaces"   # replaced by their names when a help page is shown (Command)


def _space_names() -> list[str]:
    """The built-in spaces and the installed plugins' entry-point names, read from package metadata without importing
    any space (the registry's ``registered()`` imports torch and every space: a second per call)."""
    from importlib.metadata import entry_points
    from eps.spaces import BUILTIN, ENTRY_POINT_GROUP
    names = list(BUILTIN)
    try:
        names += [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in names]
    except Exception:  # a broken installed distribution must not break --help
        pass
    return names


def _complete_space(incomplete: str) -> list[str]:
    return [n for n in _space_names() if n.startswith(incomplete)]


def _narrow() -> bool:
    """Whether rich would draw the help page narrower than it can be read: rich takes COLUMNS as the width (0 draws
    nothing at all, 20 a box one word wide); click's plain page wraps at 50 columns at least."""
    import os
    columns = os.environ.get("COLUMNS", "")
    return columns.isdigit() and int(columns) < 40


def _plain_help(command, ctx, formatter) -> None:
    """The help page, drawn by rich, or plain when the terminal is too narrow for rich's boxes (see ``_narrow``) or
    NO_COLOR is set (rich's boxes and bold are terminal escapes too); flags without a metavar."""
    import os
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # typer's rich page shows a flag's type (<bool>), but a flag takes no value
    if not (_narrow() or os.environ.get("NO_COLOR")):
        return super(type(command), command).format_help(ctx, formatter)
    mode, command.rich_markup_mode = command.rich_markup_mode, None
    try:
        return super(type(command), command).format_help(ctx, formatter)
    finally:
        command.rich_markup_mode = mode


class Command(TyperCommand):
    """A command whose help names the registered spaces; they are looked up only when the help page is shown, so
    ``eps`` starts as fast as without the list."""

    def format_help(self, ctx, formatter):
        for param in self.params:
            if isinstance(getattr(param, "help", None), str) and SPACES in param.help:
                param.help = param.help.replace(SPACES, ", ".join(_space_names()))
        return _plain_help(self, ctx, formatter)


def _color() -> bool | None:
    """False under NO_COLOR (https://no-color.org: set and not empty), else None: colour on a terminal only."""
    import os
    return False if os.environ.get("NO_COLOR") else None


def _say(line: str, **style) -> None:
    """One line on stderr; never raises (a closed stderr has nothing more to tell)."""
    try:
        typer.secho(line, err=True, color=_color(), **style)
    except Exception:
        pass


def _usage_line(err, path: str) -> str:
    """A click usage error (unknown option or command, missing or bad value) as one plain line naming the help of
    the command it is about (``path``, e.g. ``eps stage search``)."""
    text = " ".join(str(err.format_message()).split()).rstrip(".") or "bad usage"
    # a value our own parser refused (typer passes it through pydantic): its reason names the option already
    own = re.fullmatch(r"Invalid value for [^:]+: Value error, (?P<why>--.*)", text)
    text = own["why"] if own else text.replace(": Value error, ", ": ")
    ctx = getattr(err, "ctx", None)
    return f"error: {text[0].lower() + text[1:]}; see {ctx.command_path if ctx is not None else path} --help"


def _command_path(group, args, prog: str = "eps") -> str:
    """The deepest command that ``args`` name (``eps stage search`` for ``stage search --foo``): a usage error
    without a context still names the help page that lists the right options."""
    import sys
    path, command = [prog], group
    for arg in (sys.argv[1:] if args is None else list(args)):
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            break
        path.append(arg)
        command = sub
    return " ".join(path)


class Group(TyperGroup):
    """eps's command groups: help readable at any width; the top level's ``main`` makes every usage error one plain
    line with exit 2 (click's and typer's own way is a multi-line rich box, empty at COLUMNS=0)."""

    def format_help(self, ctx, formatter):
        return _plain_help(self, ctx, formatter)

    def parse_args(self, ctx, args):
        if ctx.parent is None:
            ctx.meta["eps.args"] = list(args)  # for --version, whose eager callback runs before the rest is parsed
        return super().parse_args(ctx, args)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        import sys
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as err:  # click's exceptions (typer vendors click; this is their public base)
            if type(err).__name__ == "NoArgsIsHelpError":  # `eps stage`: the group's help, drawn already by rich
                if err.format_message():
                    typer.echo(err.format_message(), color=_color())
            else:
                usage = err.exit_code == 2
                _say(_usage_line(err, _command_path(self, args, prog_name or "eps")) if usage else
                     f"error: {' '.join(err.format_message().split())}", fg="red")
            code = err.exit_code
        except typer.Abort:
            _say("aborted", fg="yellow")
            code = 1
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=Group, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="EPS: evolving the proxy search space, a random-sampling weight-sharing NAS method.")
stage_app = typer.Typer(cls=Group, no_args_is_help=True, help="Run one pipeline stage.")
arch_app = typer.Typer(cls=Group, no_args_is_help=True, help="Inspect architectures.")
nb201_app = typer.Typer(cls=Group, no_args_is_help=True, help="NAS-Bench-201 ground truth.")
app.add_typer(stage_app, name="stage")
app.add_typer(arch_app, name="arch")
app.add_typer(nb201_app, name="nb201")
study_app = typer.Typer(cls=Group, no_args_is_help=True,
                        help="Studies of the method against a benchmark's ground truth.")
app.add_typer(study_app, name="study")

SpaceOpt = typer.Option(None, "--space", "-s", autocompletion=_complete_space,
                        help=f"Search space: one of {SPACES}, or your own space as path/to/file.py:Class or "
                             f"package.module:Class (default: the one space the params list in `spaces`).")
ParamsOpt = typer.Option(None, "--params", "-p", help="Params YAML (overlay on the paper defaults).")


def _out_folder(value) -> Path:
    """--out as given: refused before any work when empty (Path("") would silently be the current folder) or a
    regular file."""
    text = str(value)
    if not text.strip():
        raise ValueError("--out is empty; give a folder")
    if Path(text).exists() and not Path(text).is_dir():
        raise ValueError(f"--out {text} is a file, not a folder; choose another --out or move the file")
    return Path(text)


OutOpt = typer.Option(Path("runs"), "--out", "-o", parser=_out_folder, metavar="<path>",
                      help="Output root; stage folders go under OUT/SPACE/.")
SetOpt = typer.Option(None, "--set", "-S", metavar="KEY=VALUE",
                      help="Override one param, as `dvc exp run -S`: a dotted key and a YAML value, e.g. "
                           "-S nb201.search.iterations=2000 (repeatable; applied after --params).")
RestartOpt = typer.Option(False, "--restart", help="Start afresh when the checkpoint is unusable or was made with "
                                                   "other params (otherwise such a run stops).")
RedoOpt = typer.Option(False, "--redo", help="Replace this stage's finished outputs when they were made with other "
                                            "params (implies --restart).")


def _version(ctx: typer.Context, value: bool) -> None:
    if value:
        extra = [a for a in ctx.meta.get("eps.args", []) if a != "--version"]
        if extra:  # `eps --version run ...` would print the version and silently skip the command
            ctx.fail(f"--version takes nothing else (got {' '.join(extra)}); run `eps --version` alone")
        from eps._version import __version__
        typer.echo(f"eps {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version of eps and exit.")):
    pass


def _os_error_line(err: OSError) -> str:
    """One line for an operating-system error: the path(s), the errno text, and what to do for the common ones."""
    import errno
    import os
    what = (err.strerror or os.strerror(err.errno)) if err.errno else (str(err) or type(err).__name__)
    paths = [_escaped(os.fsdecode(p)) for p in (err.filename, err.filename2)
             if p is not None and not isinstance(p, int)]
    line = f"{' -> '.join(paths)}: {what}" if paths else what
    hint = {errno.ENOSPC: "free some space and run the same command again (it resumes from the last checkpoint)",
            errno.EDQUOT: "free some space and run the same command again (it resumes from the last checkpoint)",
            errno.EROFS: "the file system is read-only; choose a writable --out",
            errno.EACCES: "no permission; choose a folder you can write (--out) or fix its permissions",
            errno.EPERM: "no permission; choose a folder you can write (--out) or fix its permissions",
            errno.ENOTDIR: "a path component is a file, not a folder; check --out and the other paths",
            errno.EEXIST: "a file is in the way; check --out and the other paths"}.get(err.errno)
    if hint:
        line += f"; {hint}"
    return " ".join(line.split())


_AS_PROGRAM = False     # set by main(): the process is the `eps` program, not a library caller (tests, CliRunner)
_INTERRUPTED = 0        # the exit status of the first Ctrl-C (130) or SIGTERM (143), once one has been handled


def _quiet_second_interrupt(code: int) -> None:
    """After the first Ctrl-C or SIGTERM of the `eps` program, a second one (while finally blocks and atexit handlers
    such as torch's run) ends the process at once with ``code`` instead of a traceback; and once the atexit handlers
    are done the process exits with ``code`` without the interpreter's slow teardown, where a signal would kill it.
    Outputs are written atomically, so nothing is torn."""
    global _INTERRUPTED
    if not _AS_PROGRAM:
        return
    _INTERRUPTED = code
    _quiet_signals(code)


def _quiet_signals(code: int) -> None:
    """Once the one line is out, a Ctrl-C or SIGTERM during the shutdown (torchrun stops the other ranks with SIGTERM
    when one fails) ends the process with ``code``, without a second message or a traceback."""
    if not _AS_PROGRAM:
        return
    import signal
    from eps import signals
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: signals.exit_now(code))
    except ValueError:  # not the main thread: nothing to install
        pass


def _exit_after_interrupt() -> None:
    """Registered by main() before any command runs, so it runs after every atexit handler a command registers."""
    if _INTERRUPTED:
        from eps import signals
        signals.exit_now(_INTERRUPTED)


def _escaped(text: str) -> str:
    """``text`` on one line: a newline, tab or terminal escape (in a path the user typed: ``--out $'a\\nb'``) is
    written as Python writes it in a string literal (``\\n``, ``\\x1b``), so one error stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _text(err: BaseException, limit: int = 300) -> str:
    """An exception's message as one line, whatever it is (not a str, several lines, a ``__str__`` that raises)."""
    try:
        text = str(err)
    except Exception:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[0].split())[:limit] if lines else ""


def _speaks(err: BaseException) -> bool:
    """Under torchrun one rank reports: rank 0, or another rank for a cause only it saw. An error repeated from rank
    0 (``RankError``), an input error found before the ranks met, an interrupt (every rank gets it) or a lost peer
    (rank 0 names it) is left to rank 0. The
    launcher's RANK is read, not the process group's: the group is gone by the time a stage's error arrives here."""
    import os
    from eps import distributed
    from eps.errors import EpsError, RankError
    if os.environ.get("RANK", "0").strip() in ("", "0"):
        return True
    if isinstance(err, EpsError) and not distributed.joined():
        return False  # found before the ranks met (params, options): every rank found the same, rank 0 says it
    return not isinstance(err, (RankError, KeyboardInterrupt)) and not distributed.peer_lost(err)


def _describe(err: BaseException) -> tuple[int, str | None]:
    """(exit status, the one line for ``err`` or None for none): 2 for the user's input or machine, 130 Ctrl-C, 143
    SIGTERM, 141 a closed stdout, 1 an error eps does not anticipate."""
    import errno
    import os
    import sys
    from eps import distributed
    from eps.errors import EpsError, RankError, Terminated
    if isinstance(err, KeyboardInterrupt):
        if not isinstance(err, Terminated):
            return 130, "interrupted; run the same command again to resume from the last checkpoint"
        where = _text(err)
        # under torchrun a SIGTERM comes from the launcher: the job was stopped, or another rank failed (torchrun
        # then stops the others and reports that rank after this line)
        why = ("SIGTERM from torchrun: the job was stopped or another rank failed" if distributed.launched()
               else "SIGTERM")
        return 143, (f"terminated ({why}){'; ' + where if where else ''}; run the same command again to resume from "
                     f"the last checkpoint")
    if isinstance(err, BrokenPipeError) or (isinstance(err, OSError) and err.errno == errno.EPIPE):
        # the reader of stdout stopped (`eps report | head -1`): end quietly with 141 (128 + SIGPIPE), what a
        # program killed by SIGPIPE such as `git log | head -1` returns, so `set -o pipefail` sees a cut output;
        # stdout goes to /dev/null so the interpreter's last flush does not fail again
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except Exception:
            pass
        return 141, None
    if isinstance(err, RankError):
        return 2, None
    if isinstance(err, EpsError):
        text = str(err)
        # several problems with params stay one per line (_one_problem_line); any other message is one line, a
        # newline in a path included
        return 2, f"error: {text if 'problem(s) with params' in text else _escaped(text.strip())}"
    from eps.spaces import plugin_failure
    try:
        plugin = plugin_failure(err) if isinstance(err, Exception) else None
    except Exception:  # naming the plugin is a courtesy; the line below still describes the error
        plugin = None
    if plugin:  # a plugin's own bug is the plugin's to fix, not eps's to be reported
        return 2, f"error: {_escaped(plugin)}"
    if distributed.peer_lost(err):
        # the backend's message starts with its source location ("[.../gloo/transport/tcp/pair.cc:545] Read error
        # ...: Connection reset by peer. This is typically caused by ..."): keep the first sentence of what it says
        said = re.sub(r"^\[[^\]]*\]\s*", "", _text(err, 400)).split(". ")[0][:160]
        return 2, (f"error: rank lost: another rank of this torchrun job stopped ({said}); resume with "
                   f"the same command once every node is up")
    if isinstance(err, OSError):
        return 2, f"error: {_os_error_line(err)}"
    if isinstance(err, RecursionError):
        return 2, ("error: an input file is nested too deeply to be a params file, split file or history; check the "
                   "file named in the command")
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        what = _text(err, 200)
        return 2, (f"error: out of memory{' (' + what + ')' if what else ''}; reduce batch_size, channels or layers, "
                   f"or use a machine with more memory")
    if isinstance(err, RuntimeError) and ("allocate" in _text(err) or "overflow" in _text(err)):
        return 2, (f"error: this configuration does not fit the machine ({_text(err, 200)}); use smaller widths, "
                   f"depths, batches or learning rates")
    what = _text(err)  # no traceback ever: one line, and the traceback on request
    return 1, (f"error: unexpected {type(err).__name__}{': ' + what if what else ''}; rerun with EPS_DEBUG=1 for the "
               f"traceback and report it")


def friendly(fn):
    """Turn any error of a command into one line on stderr and an exit status (``_describe``): EpsError and an
    operating-system error (disk full, read-only or missing paths) exit 2, Ctrl-C 130 and SIGTERM 143 with a resume
    hint. The handler itself never raises; ``EPS_DEBUG=1`` shows the traceback of an unexpected error."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import os
        from eps import signals
        with signals.command():  # a signal from here on raises, for the handler below to report
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, typer.TyperException, typer.Abort, SystemExit, GeneratorExit):
                raise
            except BaseException as err:
                try:
                    code, line = _describe(err)
                    if code == 1 and os.environ.get("EPS_DEBUG"):
                        raise err
                    if code in (130, 143):
                        _quiet_second_interrupt(code)
                    if line and _speaks(err):
                        _say(line, fg="yellow" if code in (130, 143) else "red")
                except BaseException as again:
                    if again is err:
                        raise
                    _say("error: eps could not describe the error; rerun with EPS_DEBUG=1 for the traceback")
                    code = 1
                _quiet_signals(code)
                raise typer.Exit(code) from None
    return wrapper


def _one_problem_line(text: str) -> str:
    """A params error with a single problem as one line (``params in p.yaml: seed: got -1, must be >= 0``); with
    several problems the list stays one problem per line."""
    import re
    m = re.fullmatch(r"1 problem\(s\) with params(?P<where> in .+?)?:\n\s*(?P<line>[^\n]+)\s*", text)
    return f"params{m['where'] or ''}: {m['line']}" if m else text


def _params_file(path: Optional[Path]) -> Optional[Path]:
    """The params file a command reads: ``--params``, else ./params.yaml when it exists (as the DVC stages), else
    None (the paper defaults)."""
    if path is None and Path("params.yaml").exists():
        return Path("params.yaml")
    return path


def _params(path: Optional[Path], space: Optional[str], overrides: Optional[dict] = None,
            sets: Optional[List[str]] = None) -> tuple[str | None, dict]:
    """(the space's registered name, validated params). ``space`` may be a name or a ``file.py:Class`` reference;
    ``path`` defaults to ./params.yaml when it exists, as for the DVC stages; ``sets``: ``-S key=value`` overrides."""
    from eps.params import load_params, parse_sets
    from eps.settings import deep_update
    if sets:
        overrides = deep_update(overrides or {}, parse_sets(sets))
    from eps.errors import ConfigError
    from eps.spaces import resolve, space_class
    path = _params_file(path)
    plugins = [space] if space and ":" in space else []
    try:
        params = load_params(path, overrides, plugins=plugins)
    except ConfigError as err:
        raise ConfigError(_one_problem_line(str(err))) from None
    if space is None:
        return None, params
    name = resolve(space)
    space_class(name)  # a one-line error for an unknown or broken space
    return name, params


def _one_space(name: str | None, params: dict) -> str:
    """``name``, or the one space the params list in ``spaces`` (several: choose with --space). Never a silent
    default: a params file for another space must not run NB201's paper protocol."""
    if name is not None:
        return name
    from eps.errors import ConfigError
    from eps.spaces import resolve, space_class
    spaces = params.get("spaces") or ["nb201"]
    if len(spaces) != 1:
        raise ConfigError(f"the params list {len(spaces)} spaces ({', '.join(spaces)}); choose one with --space")
    found = resolve(spaces[0])
    space_class(found)
    return found


def _stage(name: str):
    @friendly
    def command(space: str = SpaceOpt, params: Optional[Path] = ParamsOpt, out: Path = OutOpt,
                restart: bool = RestartOpt, redo: bool = RedoOpt, sets: Optional[List[str]] = SetOpt):
        from eps.params import check_version
        from eps.pipeline import stages
        name_, p = _params(params, space, sets=sets)
        check_version(p)
        getattr(stages, name)(_one_space(name_, p), p, out, restart=restart, redo=redo)
    command.__doc__ = {"warmup": "Train the supernet by uniform sampling over the whole space.",
                       "search": "Evolve the proxy search space while training the supernet (EPS).",
                       "select": "Choose the final architecture from the snapshot history.",
                       "retrain": "Train the chosen architecture from scratch and report its test metrics."}[name]
    return command


for _name in ("warmup", "search", "select"):
    stage_app.command(_name, cls=Command)(_stage(_name))


@stage_app.command("retrain", cls=Command)
@friendly
def stage_retrain(space: str = SpaceOpt, params: Optional[Path] = ParamsOpt, out: Path = OutOpt,
                  restart: bool = RestartOpt, redo: bool = RedoOpt, sets: Optional[List[str]] = SetOpt,
                  arch: Optional[str] = typer.Option(
                      None, "--arch", help="Retrain this architecture (the space's notation) instead of the "
                                           "selection in OUT/SPACE/select/arch.txt.")):
    """Train the chosen architecture from scratch and report its test metrics."""
    from eps.params import check_version
    from eps.pipeline import stages
    name, p = _params(params, space, sets=sets)
    check_version(p)
    name = _one_space(name, p)
    if arch is not None:
        from eps.spaces import get_space
        get_space(name, p[name]).decode(arch)  # a one-line ArchError before any work
    stages.retrain(name, p, out, restart=restart, redo=redo, arch=arch)


@app.command(cls=Command)
@friendly
def run(space: str = SpaceOpt, params: Optional[Path] = ParamsOpt, out: Path = OutOpt, restart: bool = RestartOpt,
        redo: bool = typer.Option(False, "--redo", help="Replace a stage's finished outputs when they were made with "
                                                        "other params (implies --restart)."),
        sets: Optional[List[str]] = SetOpt):
    """Run warmup, search, select and retrain in order, then print the report."""
    from eps.params import check_version
    from eps.pipeline import stages, report as report_stage
    name, p = _params(params, space, sets=sets)
    check_version(p)
    name = _one_space(name, p)
    for stage in stages.STAGES:
        getattr(stages, stage)(name, p, out, restart=restart, redo=redo)
    report_stage.report(name, p, out)


@app.command(cls=Command)
@friendly
def report(runs: Optional[List[Path]] = typer.Argument(
               None, show_default=False, metavar="RUN",
               help="Run folders (output roots, like --out); several: seeds of one experiment, reported together."),
           space: Optional[str] = typer.Option(None, "--space", "-s", autocompletion=_complete_space,
                                               help=f"Report one space, one of {SPACES} (default: all in params)."),
           params: Optional[Path] = ParamsOpt,
           out: Optional[List[Path]] = typer.Option(None, "--out", "-o", show_default=False, metavar="OUT",
                                                    parser=_out_folder,
                                                    help="Output root of a run (repeat it for several seeds; "
                                                         "default: runs)."),
           settings: bool = typer.Option(False, "--settings", help="Also print the settings table (report.txt "
                                                                   "always has it)."),
           into: Optional[Path] = typer.Option(None, "--into", help="With several run folders: where seeds.txt, "
                                                                     "seeds.json and seeds.svg/.png go (default: "
                                                                     "seeds-SPACE beside the run folders).")):
    """Print a run's results (chosen architecture first), write report.txt and SVG/PNG figures to OUT/SPACE/report/.

    Several run folders (seeds of one experiment): per-seed numbers, mean and std, and one mean +- std figure.

    A finished run is reported with the params it recorded, unless --params is given."""
    from eps.errors import EpsError
    from eps.pipeline import report as report_stage
    folders = [*(out or []), *(runs or [])] or [Path("runs")]
    seen: dict = {}
    for f in folders:
        if f.resolve() in seen:
            raise EpsError(f"run folder {f} is given twice (as {seen[f.resolve()]} too); give each run once")
        seen[f.resolve()] = f
    if into is not None and len(folders) == 1:
        raise EpsError("--into is for several run folders (seeds); one run's report goes to OUT/SPACE/report/")
    from eps.errors import ConfigError
    name, p = _params(params, space)
    if not name and not p["spaces"]:
        raise ConfigError("the params list no spaces (spaces: []), so there is nothing to report; list the spaces "
                          "of the run in `spaces`, or choose one with --space")
    for each in ([name] if name else p["spaces"]):
        if len(folders) == 1:
            report_stage.report(each, p, folders[0], explicit=params is not None, settings=settings)
        else:
            report_stage.report_many(each, p, folders, explicit=params is not None, into=into)


@app.command("params", cls=Command)
@friendly
def show_params(params: Optional[Path] = ParamsOpt,
                space: Optional[str] = typer.Option(None, "--space", "-s", autocompletion=_complete_space,
                                                    help=f"Only this space's section, one of {SPACES}."),
                sets: Optional[List[str]] = SetOpt):
    """Print the effective params (defaults overlaid with --params or ./params.yaml, then -S) as YAML, validated.

    With --space, only that space's section: ready to paste into params.yaml (for your own space too).
    Every key with its value; `eps dvc init --params overlay.yaml` writes the params.yaml DVC tracks."""
    import yaml
    from eps.spaces import broken
    name, p = _params(params, space, sets=sets)
    used = _params_file(params)
    # stderr, so the YAML on stdout stays ready to redirect into a file
    typer.secho(f"read {used}" if params is not None else
                f"read ./{used} (found in the working directory; --params reads another file)" if used else
                "no params file (no --params, no ./params.yaml here): the paper defaults", dim=True, err=True)
    if name:
        p = {name: p[name]}
    else:
        for bad, why in broken().items():
            typer.secho(f"warning: space {bad} is left out: {why}", fg="yellow", err=True)
    typer.echo(yaml.safe_dump(p, sort_keys=False, default_flow_style=False, width=120), nl=False)


def _max_size_option() -> dict[str, int]:
    """The bounds of the params' own width and depth settings (eps.settings), so both accept the same networks
    (imported here, not at start-up: `eps --help` stays fast)."""
    from eps.settings import MAX_CLASSES, MAX_DEPTH, MAX_WIDTH
    return {"--classes": MAX_CLASSES, "--channels": MAX_WIDTH, "--layers": MAX_DEPTH}


def _check_sizes(options: dict) -> None:
    """``eps arch params`` sizes: whole numbers >= 1 (0 is not "the default": leave the option out for that), and
    below a bound that keeps counting (on the meta device, so nothing is allocated) to seconds."""
    from eps.errors import ConfigError
    bounds = _max_size_option()
    for opt, value in options.items():
        if value is not None and not 1 <= value <= bounds[opt]:
            raise ConfigError(f"{opt} {value}: must be between 1 and {bounds[opt]:,}; leave {opt} out "
                              f"for the space's default")


@arch_app.command("params", cls=Command)
@friendly
def arch_params(archs: List[str] = typer.Argument(..., help="Architectures in the space's notation."),
                space: str = SpaceOpt,
                classes: Optional[int] = typer.Option(None, "--classes", help="Number of classes (default: the space's)."),
                channels: Optional[int] = typer.Option(None, "--channels", help="Initial channels / hidden size."),
                layers: Optional[int] = typer.Option(None, "--layers", help="Cells (CNN) or layers."),
                params: Optional[Path] = ParamsOpt):
    """Print the standalone network's parameter count in millions, one line per architecture."""
    from eps.spaces import get_space
    _check_sizes({"--classes": classes, "--channels": channels, "--layers": layers})
    name, p = _params(params, space)
    name = _one_space(name, p)
    sp = get_space(name, p[name])  # params choose e.g. the DARTS variant
    options = {k: v for k, v in {"num_classes": classes, "channels": channels, "layers": layers}.items() if v is not None}
    for text in archs:
        n = sp.num_params(sp.decode(text), **options)
        typer.echo(f"{n / 1e6:.6f}  {text}")


@nb201_app.command("import", cls=Command)
@friendly
def nb201_import(file: Path = typer.Argument(..., help="Official NAS-Bench-201 v1.0/v1.1 .pth file."),
                 out: Optional[Path] = typer.Option(None, "--out", help="CSV to write (default: DATA_ROOT/nb201/ground_truth.csv)."),
                 force: bool = typer.Option(False, "--force", help="Replace an existing file.")):
    """Write eps's compact ground-truth CSV from the official benchmark file."""
    from eps.errors import EpsError
    from eps.spaces.nb201.groundtruth import GROUND_TRUTH_FILE, import_benchmark
    from eps.params import data_root
    target = out or (data_root(_params(None, None)[1]) / GROUND_TRUTH_FILE)
    if target.exists() and not force:
        raise EpsError(f"{target} exists; pass --force to replace it, or write elsewhere with --out")
    n = import_benchmark(file, target)
    typer.echo(f"wrote {n} cells to {target}")


@app.command("import-records", cls=Command)
@friendly
def import_records(run_dir: Path = typer.Argument(..., help="Run folder of the reference implementation (NNNNNN-ep.txt files)."),
                   out: Path = OutOpt, space: str = SpaceOpt,
                   force: bool = typer.Option(False, "--force", help="Overwrite an existing history.")):
    """Import the reference implementation's population snapshots as OUT/SPACE/search/history.jsonl."""
    from eps.errors import EpsError
    from eps.spaces.nb201.records import import_records as do_import
    space = space or "nb201"
    if space != "nb201":
        raise EpsError(f"import-records reads NAS-Bench-201 runs of the reference code; --space {space} is not supported")
    from eps.pipeline.runfolder import RunPaths, locked
    target = out / space / "search" / "history.jsonl"
    with locked(RunPaths(out, space), "search"):  # it writes the search's output: one writer per run folder
        if target.exists() and not force:
            raise EpsError(f"{target} exists; pass --force to replace it, or choose another --out")
        others = (sorted(p.name for p in target.parent.iterdir() if p.name != target.name)
                  if target.parent.is_dir() else [])
        if others:
            raise EpsError(f"{target.parent} holds the outputs of a search ({', '.join(others)}); an imported "
                           f"history must not sit beside them: import into another --out")
        snapshots = do_import(run_dir, target)
    typer.echo(f"imported {len(snapshots)} snapshots into {target}; next: eps stage select --space {space} --out {out}")


@study_app.command("correlation", cls=Command)
@friendly
def study_correlation(space: str = SpaceOpt,
                      iterations: Optional[int] = typer.Option(
                          None, "--iterations", "-n", help="Supernet iterations of each run (study.iterations)."),
                      seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds, e.g. 0,1 "
                                                                                   "(study.seeds)."),
                      params: Optional[Path] = ParamsOpt, out: Path = OutOpt, restart: bool = RestartOpt,
                      sets: Optional[List[str]] = SetOpt):
    """Train one supernet per arm (study.arms; default RandomNAS vs EPS) and seed; compare how they rank cells
    against the ground truth."""
    from eps.errors import ConfigError
    from eps.pipeline import study
    overrides: dict = {}
    if iterations is not None:
        overrides["iterations"] = iterations
    if seeds is not None:
        try:
            overrides["seeds"] = [int(x) for x in seeds.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1") from None
    name, p = _params(params, space, {"study": overrides} if overrides else None, sets=sets)
    from eps.params import check_version
    check_version(p)
    study.correlation(_one_space(name, p), p, out, restart=restart)


dvc_app = typer.Typer(no_args_is_help=True, help="DVC pipelines for your own repository.")
app.add_typer(dvc_app, name="dvc")


@dvc_app.command("init", cls=Command)
@friendly
def dvc_init(spaces: Optional[List[str]] = typer.Option(
                 None, "--space", "-s", autocompletion=_complete_space, metavar="NAME|FILE.py:CLASS",
                 help=f"A space of the pipeline (repeatable): one of {SPACES}, or your own as path/to/file.py:Class "
                      f"(the file inside DIR) or package.module:Class (default: the overlay's `spaces`, else nb201)."),
             folder: Path = typer.Option(Path("."), "--dir", "-d", help="The repository to write into."),
             params: Optional[Path] = typer.Option(
                 None, "--params", "-p", help="An overlay (only the keys it changes, like profiles/demo.yaml) laid "
                                              "over the defaults in the params.yaml written."),
             sets: Optional[List[str]] = SetOpt,
             study: bool = typer.Option(False, "--study", help="Also write the study's pipeline, study/dvc.yaml "
                                                               "(and its params section); with a dvc.yaml already "
                                                               "in DIR, only that."),
             force: bool = typer.Option(False, "--force", help="Replace files that exist.")):
    """Write dvc.yaml, a complete params.yaml and the plot template for the spaces named, so that `dvc repro` runs
    the EPS chain in this repository (then: git init && dvc init, if not done, and dvc repro)."""
    from eps.pipeline import dvcfiles
    main_too = not (study and (folder / "dvc.yaml").exists() and not force)
    from eps.errors import ConfigError
    try:
        written = dvcfiles.init(folder, list(spaces or []), params, list(sets or []), force, study=study,
                                main=main_too)
    except ConfigError as err:
        raise ConfigError(_one_problem_line(str(err))) from None
    for path in written:
        typer.echo(f"wrote {path}")
    repro = "dvc repro" + (" study/dvc.yaml" if study and not main_too else "")
    root = Path(folder).resolve()
    if not any((p / ".dvc").is_dir() for p in (root, *root.parents)):  # DVC finds its repository upwards
        typer.echo(f"next: {root} is not in a DVC repository: `git init && dvc init` there, then {repro}")
    else:
        typer.echo(f"next: {repro}")


def main():
    """The `eps` program. NO_COLOR (https://no-color.org) turns colour off; output that is not a terminal never has it."""
    import atexit
    global _AS_PROGRAM
    from eps import signals
    _AS_PROGRAM = True
    atexit.register(_exit_after_interrupt)
    # SIGTERM (Slurm, Kubernetes, torchrun) ends a command as Ctrl-C does, with status 143; outside a command either
    # signal ends the program at once with its line
    signals.install()
    app(color=_color())


if __name__ == "__main__":
    main()
