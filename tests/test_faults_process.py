"""Faults of the process (issue 22, causes 3, 6, 7): usage errors at any terminal width and colour setting, SIGTERM
handled as Ctrl-C (a real process, resumed to the uninterrupted history), a rank lost under torchrun (real torchrun
processes), and eps's own error handler fed exceptions it does not anticipate, a closed stdout, odd paths."""
import errno
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import filelock
import pytest
import typer
import yaml

from eps.errors import EpsError, Terminated
from tests.conftest import EPS, TINY_NB201, eps_env, run_eps
from tests.test_faults_run import same_search_outputs

pytestmark = pytest.mark.cli

TORCHRUN = Path(sys.executable).parent / "torchrun"
ANSI = "\x1b["
# a Python traceback frame of eps's own code (torchrun's report has frames of torch only)
EPS_FRAME = re.compile(r'File ".*/(eps|pipeline)/[^"]*\.py"')


def _env(**extra) -> dict:
    env = {k: v for k, v in eps_env(one_thread=True).items() if k not in ("COLUMNS", "NO_COLOR", "EPS_DEBUG")}
    return {**env, **{k: v for k, v in extra.items() if v is not None}}


def _params(path: Path, **search) -> Path:
    """TINY_NB201 without warm-up, with these search settings."""
    cfg = yaml.safe_load(yaml.safe_dump(TINY_NB201))
    cfg["nb201"]["warmup"]["iterations"] = 0
    cfg["nb201"]["search"].update(search)
    path.write_text(yaml.safe_dump(cfg))
    return path


# ------------------------------------------------------------------------------------- 3. usage errors, one line

USAGE = [  # (arguments, the help page the line must name)
    (["stage", "search", "--foo"], "eps stage search --help"),                     # unknown option
    (["stag"], "eps --help"),                                                     # unknown command
    (["stage", "nope"], "eps stage --help"),                                      # unknown subcommand
    (["stage", "search", "--params"], "eps stage search --help"),                 # option without its value
    (["arch", "params", "--channels", "abc", "x"], "eps arch params --help"),      # a value of the wrong type
    (["arch", "params"], "eps arch params --help"),                               # missing argument
]


@pytest.mark.parametrize("args, help_page", USAGE, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_usage_error_is_one_plain_line_at_any_width(args, help_page):
    for columns in ("0", "1", "20", "80", None):
        proc = subprocess.run([EPS, *args], env=_env(COLUMNS=columns), capture_output=True, text=True, timeout=60)
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2, (columns, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (columns, proc.stderr)
        assert lines[0].endswith(f"see {help_page}"), (columns, lines[0])
        assert ANSI not in proc.stderr and proc.stdout == "", (columns, proc.stdout)


@pytest.mark.unit
@pytest.mark.parametrize("columns", ["0", "1", "20", None])
def test_help_is_readable_at_any_width_and_h_is_help(monkeypatch, columns):
    """Rich draws the help at COLUMNS wide (0: nothing, 20: a box one word wide); too narrow, the page is plain."""
    from typer.testing import CliRunner
    from eps.pipeline.cli import app
    monkeypatch.delenv("COLUMNS", raising=False)
    if columns is not None:
        monkeypatch.setenv("COLUMNS", columns)
    for args in (["-h"], ["stage", "-h"], ["stage", "search", "-h"], ["study", "correlation", "-h"]):
        res = CliRunner().invoke(app, args, prog_name="eps")
        assert res.exit_code == 0, res.output
        assert res.output.count("Usage: eps") == 1 and "--help" in res.output, (columns, args, res.output)
        assert CliRunner().invoke(app, [*args[:-1], "--help"], prog_name="eps").output == res.output
    page = CliRunner().invoke(app, ["stage", "search", "-h"], prog_name="eps").output
    for option in ("--space", "--params", "--out", "--restart", "--redo"):
        assert option in page, (columns, page)
    if columns in ("0", "1", "20"):
        assert "-h, --help" in page and max(map(len, page.splitlines())) >= 50, page


def test_help_of_the_program_at_zero_columns():
    proc = subprocess.run([EPS, "-h"], env=_env(COLUMNS="0"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "Usage: eps" in proc.stdout and "stage" in proc.stdout and "report" in proc.stdout, proc.stdout


def _on_a_terminal(args, **env) -> tuple[int, str]:
    """Run eps with stdout and stderr on a pseudo-terminal; (exit status, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([EPS, *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=_env(TERM="xterm-256color", **env), close_fds=True)
    os.close(slave)
    shown = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    return proc.wait(timeout=60), shown.decode(errors="replace")


@pytest.mark.parametrize("args", [["stage", "search", "--foo"], ["report", "--params", "{empty}"]])
def test_no_color_is_respected_on_a_terminal(tmp_path, args):
    empty = tmp_path / "empty.yaml"
    empty.write_text("spaces: []\n")
    args = [a.format(empty=empty) for a in args]
    code, shown = _on_a_terminal(args)
    assert code == 2 and ANSI in shown, shown          # a terminal gets colour, so the check below can fail
    code, shown = _on_a_terminal(args, NO_COLOR="1")
    assert code == 2 and ANSI not in shown, repr(shown)
    assert len(shown.strip().splitlines()) == 1 and shown.startswith("error: "), repr(shown)


@pytest.mark.parametrize("args", [["-h"], ["stage", "search", "-h"]])
def test_no_color_help_on_a_terminal_has_no_escapes(args):
    """COLUMNS unset, a real terminal: rich's help has bold and boxes, which NO_COLOR turns into the plain page."""
    code, shown = _on_a_terminal(args)
    assert code == 0 and ANSI in shown, shown          # the check below can fail
    code, shown = _on_a_terminal(args, NO_COLOR="1")
    assert code == 0 and ANSI not in shown and "Usage: eps" in shown, repr(shown[:300])


# ------------------------------------------------------------------------------------------ 6. SIGTERM as Ctrl-C

@pytest.mark.e2e
def test_sigterm_checkpoints_says_one_line_exits_143_and_resumes_exactly(tmp_path):
    """SIGTERM mid-search: checkpoint at the end of the round (checkpoint_every 4 rounds, so that checkpoint is one
    the schedule would not have written), one line naming it, status 143; the same command resumes from that very
    iteration and writes what an uninterrupted run writes."""
    params = _params(tmp_path / "p.yaml", iterations=120, val_interval=10, checkpoint_every=4)
    run_eps("stage", "search", "--params", params, "--out", tmp_path / "whole", one_thread=True)
    out = tmp_path / "cut"
    proc = subprocess.Popen([EPS, "stage", "search", "--params", params, "--out", out], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    live = out / "nb201/.work/search/history.jsonl"
    try:
        deadline = time.monotonic() + 180
        while not (live.exists() and len(live.read_text().splitlines()) >= 1):   # a round is done: the loop runs
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("terminated (SIGTERM); search checkpointed at iteration "), err
    stopped = int(re.search(r"at iteration (\d+) of 120", lines[0])[1])
    assert 0 < stopped < 120, lines[0]
    again = run_eps("stage", "search", "--params", params, "--out", out, one_thread=True)
    assert f"resumed from iteration {stopped} " in again.stderr, again.stderr
    same_search_outputs(tmp_path / "whole/nb201/search", out / "nb201/search")


def _handles(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has installed a handler for ``sig`` (Linux: the SigCgt mask of /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M)
    return bool(mask and int(mask[1], 16) >> (sig - 1) & 1)


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from /proc (Linux)")
@pytest.mark.parametrize("sig, delay", [(signal.SIGTERM, 0.0), (signal.SIGTERM, 0.05), (signal.SIGTERM, 0.3),
                                        (signal.SIGTERM, 1.5), (signal.SIGTERM, 3.5), (signal.SIGINT, 0.0),
                                        (signal.SIGINT, 0.3)])
def test_a_signal_in_the_first_seconds_is_one_line_and_its_status(tmp_path, sig, delay):
    """Once the program has its handlers (a signal before that is the interpreter's, which no program can change),
    a SIGTERM (a job cancelled at once) or Ctrl-C while eps still builds its command line (seen: a traceback from
    typer's command building, and a silent 143 from its parsing) or imports torch (seen: segfaults) is one line and
    143 or 130, whatever the moment; `delay` counts from the handler's installation."""
    params = _params(tmp_path / "p.yaml", iterations=120, val_interval=10, checkpoint_every=4)
    proc = subprocess.Popen([EPS, "stage", "search", "--params", params, "--out", tmp_path / "r"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 60
        while not _handles(proc.pid, signal.SIGTERM):  # eps installs SIGINT's first (Python always catches SIGINT)
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.001)
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lines = err.strip().splitlines()
    word, code = ("terminated (SIGTERM)", 143) if sig == signal.SIGTERM else ("interrupted", 130)
    assert proc.returncode == code and len(lines) == 1 and lines[0].startswith(word), (proc.returncode, err)


def test_a_lost_peer_line_keeps_the_backends_words_not_its_source_location(monkeypatch):
    from eps.pipeline.cli import _describe
    monkeypatch.setenv("WORLD_SIZE", "2")   # a rank of a torchrun job
    err = RuntimeError("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
                       "[127.0.0.1]:29379: Connection reset by peer. This is typically caused by a remote peer")
    code, line = _describe(err)
    assert code == 2 and "(Read error [127.0.0.1]:29379: Connection reset by peer)" in line, line
    assert "pair.cc" not in line and "typically" not in line, line


# --------------------------------------------------------------------------------------- 6. torchrun failures

def _torchrun(args, **popen) -> subprocess.Popen:
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "--no-python", "eps", *map(str, args)]
    env = {**_env(), "PATH": f"{TORCHRUN.parent}:{os.environ['PATH']}"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _rank_pids(marker: str) -> dict[int, int]:
    """{rank: pid} of the torchrun workers whose command line holds ``marker``."""
    found = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            environ = dict(x.split(b"=", 1) for x in (d / "environ").read_bytes().split(b"\0") if b"=" in x)
            cmdline = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if b"TORCHELASTIC_RUN_ID" in environ and b"RANK" in environ and marker.encode() in cmdline:
            found[int(environ[b"RANK"])] = int(d.name)
    return found


def _eps_lines(stderr: str) -> list[str]:
    """What eps itself said: its one-line messages (torchrun's log lines start with a level and a timestamp)."""
    return [line for line in stderr.splitlines() if line.startswith(("error: ", "terminated (", "interrupted"))]


@pytest.mark.distributed
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this python")
def test_a_rank_killed_mid_search_gives_one_eps_line_and_no_eps_traceback(tmp_path):
    params = _params(tmp_path / "p.yaml", iterations=400, val_interval=10, checkpoint_every=1)
    out = tmp_path / "runs"
    proc = _torchrun(["stage", "search", "--params", params, "--out", out])
    try:
        deadline = time.monotonic() + 300
        while not (out / "nb201/.work/search/last.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        ranks = _rank_pids(str(out))
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    said = _eps_lines(err)
    assert len(said) == 1, err
    assert "run the same command again" in said[0] or "resume with the same command" in said[0], said
    assert "report it" not in err and not EPS_FRAME.search(err), err


@pytest.mark.distributed
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this python")
@pytest.mark.parametrize("refusal", ["second writer", "unknown space"])
def test_a_refusal_under_torchrun_is_one_line_from_one_rank(tmp_path, refusal):
    """A second writer (rank 0 cannot take the run folder's lock; both ranks stop) or an input error every rank
    finds before the ranks meet: one line."""
    from eps.pipeline.runfolder import RunPaths
    params = _params(tmp_path / "p.yaml", iterations=20, val_interval=10)
    out = tmp_path / "runs"
    lock = RunPaths(out, "nb201").lock_file("search")
    lock.parent.mkdir(parents=True)
    with filelock.FileLock(str(lock), timeout=0):
        space = ["--space", "nope"] if refusal == "unknown space" else []
        proc = _torchrun(["stage", "search", "--params", params, "--out", out, *space])
        _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    said = _eps_lines(err)
    expected = "error: unknown search space 'nope'" if space else "error: another eps process is writing"
    assert len(said) == 1 and said[0].startswith(expected), err
    assert not EPS_FRAME.search(err), err


# ------------------------------------------------------------------------------- 7. the error handler never fails

class _Unprintable(Exception):
    def __str__(self):
        raise ValueError("no text")


class _Odd(BaseException):
    pass


HANDLED = [  # (exception, exit status, words the one line holds)
    (MemoryError(), 2, "out of memory; reduce batch_size"),
    (MemoryError("cannot allocate 14.4 GB"), 2, "out of memory (cannot allocate 14.4 GB)"),
    (Exception(b"bytes, not a str"), 1, "unexpected Exception: b'bytes, not a str'"),
    (Exception({"a": 1}), 1, "unexpected Exception: {'a': 1}"),
    (RuntimeError("first line\nsecond line\n  third"), 1, "unexpected RuntimeError: first line;"),
    (RuntimeError(), 1, "unexpected RuntimeError; rerun"),
    (_Unprintable(), 1, "unexpected _Unprintable; rerun"),
    (_Odd("a BaseException of a plugin"), 1, "unexpected _Odd: a BaseException of a plugin"),
    (IndexError("list index out of range"), 1, "unexpected IndexError"),
    (TypeError("empty(): argument 'size' failed"), 1, "unexpected TypeError"),
    (SystemError("error return without exception set"), 1, "unexpected SystemError"),
    (RecursionError(), 2, "nested too deeply"),
    (RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"), 2, "does not fit the machine"),
    (EpsError("--out runs/a\nb: is a file"), 2, "error: --out runs/a\\nb: is a file"),
    (EpsError(KeyError("nb201")), 2, "error: 'nb201'"),
    (EpsError("a path with a terminal escape \x1b[31m"), 2, "escape \\x1b[31m"),
    (OSError(errno.ENOSPC, "No space left on device", "runs/a\nb"), 2, "runs/a\\nb: No space left on device; free"),
    (KeyboardInterrupt(), 130, "interrupted; run the same command again"),
    (Terminated(), 143, "terminated (SIGTERM); run the same command again"),
]


@pytest.mark.unit
@pytest.mark.parametrize("exc, code, words", HANDLED, ids=lambda v: type(v).__name__ if isinstance(v, BaseException)
                         else None)
def test_the_handler_prints_one_line_whatever_the_exception(capsys, monkeypatch, exc, code, words):
    from eps.pipeline import cli
    monkeypatch.delenv("EPS_DEBUG", raising=False)
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)

    @cli.friendly
    def command():
        raise exc

    with pytest.raises(typer.Exit) as stop:
        command()
    err = capsys.readouterr().err
    assert stop.value.exit_code == code, err
    assert len(err.splitlines()) == 1 and words in err, err
    assert "Traceback" not in err


@pytest.mark.unit
def test_under_torchrun_only_rank_0_reports_what_every_rank_sees(capsys, monkeypatch):
    """A repeated refusal, an interrupt, a lost peer: rank 0's line only. A cause only rank 1 saw: rank 1's."""
    from eps.errors import RankError
    from eps.pipeline import cli
    monkeypatch.delenv("EPS_DEBUG", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    from eps import distributed
    lost = RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500")
    for rank, joined, exc, said in [
            ("1", True, RankError("refused"), ""), ("1", True, KeyboardInterrupt(), ""), ("1", True, lost, ""),
            ("1", False, EpsError("bad params"), ""), ("1", True, EpsError("rank 1's data"), "rank 1's data"),
            ("1", True, MemoryError(), "out of memory"), ("0", True, lost, "rank lost"),
            ("0", False, EpsError("bad params"), "bad params"), ("0", True, Terminated(), "SIGTERM from torchrun")]:
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setattr(distributed, "_JOINED", joined)

        @cli.friendly
        def command():
            raise exc

        with pytest.raises(typer.Exit):
            command()
        err = capsys.readouterr().err
        assert (said in err and len(err.splitlines()) == 1) if said else err == "", (rank, exc, err)
        assert "report it" not in err


def test_a_closed_stdout_ends_quietly_with_141(tmp_path):
    """`eps params | head -1` once head has gone: no traceback, no 'Exception ignored', status 141 (128 + SIGPIPE,
    as `git log | head -1` and any program killed by SIGPIPE)."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([EPS, "params"], stdout=write, stderr=subprocess.PIPE, text=True, env=_env(),
                              cwd=tmp_path, timeout=60)
    finally:
        os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr and "error" not in proc.stderr


@pytest.mark.e2e
def test_report_into_a_closed_stdout_ends_quietly_with_141(tmp_path):
    params = _params(tmp_path / "p.yaml", iterations=20, val_interval=10)
    run_eps("stage", "search", "--params", params, "--out", tmp_path / "runs", one_thread=True)
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([EPS, "report", "--params", params, "--out", tmp_path / "runs"], stdout=write,
                              stderr=subprocess.PIPE, text=True, env=_env(), timeout=300)
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr
    assert (tmp_path / "runs/nb201/report/report.txt").exists()  # written before anything is shown


def test_report_of_no_spaces_is_an_error(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("spaces: []\n")
    proc = run_eps("report", "--params", empty, "--out", tmp_path / "runs", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no spaces" in proc.stderr, proc.stderr


def test_a_newline_in_out_stays_on_the_error_line(tmp_path):
    (tmp_path / "f").write_text("a file, not a folder")
    proc = run_eps("stage", "search", "--params", _params(tmp_path / "p.yaml"), "--out", tmp_path / "f" / "a\nb",
                   check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "a\\nb" in proc.stderr and proc.stderr.startswith("error: "), proc.stderr


def test_a_huge_setting_crashing_torch_is_one_line(tmp_path):
    """space.channels 10**30 reaches torch as an integer it cannot take: whatever raises, one line, no traceback."""
    cfg = yaml.safe_load(_params(tmp_path / "p.yaml").read_text())
    cfg["nb201"]["space"]["channels"] = 10 ** 30
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_eps("stage", "search", "--params", tmp_path / "big.yaml", "--out", tmp_path / "runs", check=False,
                   one_thread=True, timeout=120)
    assert proc.returncode in (1, 2) and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
