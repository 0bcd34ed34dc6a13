"""`hf2kh port --out DIR [--force]`: what may be replaced, atomic replacement, locks and signals.

Most tests replace the pipeline (`hf2kh.port._port_into`) by a fake that writes a small port in a
few milliseconds: what is tested here is `hf2kh.output` and the CLI around it. One subprocess test
stops a real port with SIGTERM.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import hf2kh.port
from hf2kh import output
from hf2kh.interrupt import Interrupted
from hf2kh.port import PortResult
from tests.cli_run import run_cli

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = str(REPO_ROOT / "examples" / "tiny-llama")
PORT_FILES = ("layer_graph.json", "report.json", "pkg/__init__.py", "preset/config.json")


def _fake_port_into(token: str, during: Callable[[Path], None] | None = None):
    """A stand-in for `_port_into` writing PORT_FILES (each holding `token`) into the staging
    directory; `during(staging)` runs half-way, to interrupt it."""

    def port_into(options, staging: Path, out: Path, progress) -> PortResult:
        progress(f"fake: writing port {token}")
        for i, rel in enumerate(PORT_FILES):
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_text(token)
            if during is not None and i == 1:
                during(staging)
        return PortResult(
            name="pkg",
            package_dir=staging / "pkg",
            preset_dir=staging / "preset",
            report_path=staging / "report.json",
            spec_lines=[],
            weights_mapped=1,
            weights_total=1,
        )

    return port_into


@pytest.fixture
def fake_port(monkeypatch):
    """`fake_port(token, during=None)`: the next ports write a fake port holding `token`."""

    def use(token: str, during: Callable[[Path], None] | None = None) -> None:
        monkeypatch.setattr(hf2kh.port, "_port_into", _fake_port_into(token, during))

    return use


def _port(out: Path, *flags: str):
    return run_cli("port", TINY, "--out", str(out), *flags)


def holds_port(out: Path) -> str:
    """The token of the complete fake port at `out` (fails if it is missing or incomplete)."""
    assert (out / output.PORT_MARKER).is_file(), sorted(p.name for p in out.parent.iterdir())
    assert not (out / output.STAGING_MARKER).exists()
    tokens = {(out / rel).read_text() for rel in PORT_FILES}
    assert len(tokens) == 1, tokens
    return tokens.pop()


def leftovers(out: Path) -> list[str]:
    """Everything hf2kh might have left beside `out` (staging, aside, lock)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _user_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.txt").write_text("five years of work")
    return path


# ------------------------------------------------------------------ what may be written


def test_a_users_directory_is_refused_even_with_force(tmp_path, fake_port):
    fake_port("new")
    out = _user_dir(tmp_path / "mine")
    result = _port(out, "--force")
    assert result.code == 2
    assert result.only_error() == (
        f"refusing to replace {out}: it is not empty and holds no hf2kh port (even with "
        "--force, hf2kh replaces only its own ports); choose another --out"
    )
    assert sorted(p.name for p in out.iterdir()) == ["thesis.txt"]
    assert (out / "thesis.txt").read_text() == "five years of work"
    assert leftovers(out) == []


@pytest.mark.parametrize("content", ["empty", "user file", "earlier port"])
def test_the_current_directory_is_refused(tmp_path, monkeypatch, fake_port, content):
    cwd = tmp_path / "work"
    if content == "user file":
        _user_dir(cwd)
    elif content == "earlier port":
        fake_port("old")
        assert _port(cwd).code == 0
    else:
        cwd.mkdir()
    before = sorted(p.name for p in cwd.iterdir())
    monkeypatch.chdir(cwd)
    fake_port("new")
    result = _port(Path("."), "--force")
    assert result.code == 2
    assert result.only_error() == (
        f"refusing to write a port into {cwd}: it is the current directory; pass an --out "
        "that names a new or empty directory"
    )
    assert sorted(p.name for p in cwd.iterdir()) == before


def test_home_and_a_directory_containing_it_are_refused(tmp_path, monkeypatch, fake_port):
    fake_port("new")
    home = _user_dir(tmp_path / "users" / "me")
    monkeypatch.setenv("HOME", str(home))
    result = _port(Path("~"), "--force")
    assert result.code == 2
    assert f"refusing to write a port into {home}: it is the home directory" in result.only_error()
    result = _port(tmp_path / "users", "--force")
    assert result.code == 2
    assert result.only_error().startswith(
        f"refusing to write a port into {tmp_path / 'users'}: it is a directory containing the "
        f"home directory ({home})"
    )
    assert (home / "thesis.txt").read_text() == "five years of work"


def test_a_filesystem_root_is_refused(fake_port):
    fake_port("new")
    result = _port(Path("/"), "--force")
    assert result.code == 2
    assert result.only_error().startswith(
        "refusing to write a port into /: it is a filesystem root"
    )


def test_a_file_is_refused(tmp_path, fake_port):
    fake_port("new")
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    result = _port(out, "--force")
    assert result.code == 2
    assert result.only_error() == f"--out {out} exists and is not a directory; choose another --out"
    assert out.read_text() == "mine"


def test_an_empty_directory_is_used_without_force(tmp_path, fake_port):
    fake_port("new")
    out = tmp_path / "empty"
    out.mkdir()
    assert _port(out).code == 0
    assert holds_port(out) == "new"
    assert leftovers(out) == []


def test_an_earlier_port_is_replaced_only_with_force(tmp_path, fake_port):
    out = tmp_path / "out"
    fake_port("old")
    assert _port(out).code == 0
    fake_port("new")
    result = _port(out)
    assert result.code == 2
    assert result.only_error() == (
        f"output directory {out} holds an earlier port; pass --force to replace it"
    )
    assert holds_port(out) == "old"
    assert _port(out, "--force").code == 0
    assert holds_port(out) == "new"
    assert leftovers(out) == []


def test_a_port_written_before_the_marker_is_recognized(tmp_path, fake_port):
    """Ports of earlier hf2kh versions carry no marker: their report.json keys tell them."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "layer_graph.json").write_text("{}")
    keys = ["repo", "revision", "package_dir", "preset_dir", "layer_graph", "spec", "weights"]
    report = "{" + ", ".join(f'"{k}": null' for k in [*keys, "checks", "passed"]) + "}"
    (out / "report.json").write_text(report)
    fake_port("new")
    assert _port(out, "--force").code == 0
    assert holds_port(out) == "new"
    # A report.json alone, as a user might keep one, is not a port.
    (out / output.PORT_MARKER).unlink()
    (out / "layer_graph.json").unlink()
    assert _port(out, "--force").code == 2


# ------------------------------------------------------------------ interruptions


def _raise_after(fn: Callable, exc: BaseException) -> Callable:
    def wrapped(*args, **kwargs):
        fn(*args, **kwargs)
        raise exc

    return wrapped


def _raise_instead(exc: BaseException) -> Callable:
    def wrapped(*args, **kwargs):
        raise exc

    return wrapped


def _half_delete_then_stop(real_rmtree: Callable) -> Callable:
    """An rmtree whose first call deletes one file of a port and is then stopped by SIGTERM."""
    state = {"stopped": False}

    def rmtree(path, *args, **kwargs):
        if not state["stopped"] and (Path(path) / "report.json").exists():
            state["stopped"] = True
            (Path(path) / "report.json").unlink()
            raise Interrupted(signal.SIGTERM)
        return real_rmtree(path, *args, **kwargs)

    return rmtree


def _fail_renaming_staging_in(real_rename: Callable) -> Callable:
    def rename(src, dst, *args, **kwargs):
        if ".partial-" in str(src):
            raise Interrupted(signal.SIGTERM)
        return real_rename(src, dst, *args, **kwargs)

    return rename


# Where the replacement is stopped, and which port `--out` must hold afterwards.
STOPS = {
    "before the marker": ("exchange", "old"),
    "before the exchange": ("exchange", "old"),
    "right after the exchange": ("exchange", "new"),
    "while deleting the old port (exchange)": ("exchange", "new"),
    "between the two renames (fallback)": ("fallback", "old"),
    "while deleting the old port (fallback)": ("fallback", "new"),
    "not stopped (fallback)": ("fallback", "new"),
}


@pytest.mark.parametrize("stop", list(STOPS))
def test_a_stopped_replacement_leaves_the_old_or_the_new_port(
    tmp_path, monkeypatch, fake_port, stop
):
    mode, expected = STOPS[stop]
    out = tmp_path / "out"
    fake_port("old")
    assert _port(out).code == 0
    fake_port("new")
    sigterm = Interrupted(signal.SIGTERM)
    if mode == "fallback":
        monkeypatch.setattr(output, "_exchange", lambda a, b: False)
    if stop == "before the marker":
        monkeypatch.setattr(output, "_write_marker", _raise_instead(sigterm))
    elif stop == "before the exchange":
        monkeypatch.setattr(output, "_exchange", _raise_instead(sigterm))
    elif stop == "right after the exchange":
        monkeypatch.setattr(output, "_exchange", _raise_after(output._exchange, sigterm))
    elif stop.startswith("while deleting"):
        monkeypatch.setattr(output.shutil, "rmtree", _half_delete_then_stop(output.shutil.rmtree))
    elif stop == "between the two renames (fallback)":
        monkeypatch.setattr(output.os, "rename", _fail_renaming_staging_in(output.os.rename))
    result = _port(out, "--force")
    assert result.code == (0 if stop.startswith("not stopped") else 143), result.err
    assert holds_port(out) == expected
    assert leftovers(out) == []


def test_the_exchange_really_swaps_on_linux(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux-only; elsewhere the fallback is used")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    assert output._exchange(a, b)
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def _complete_fake_port(path: Path, token: str, staging_marker: bool = False) -> None:
    for rel in PORT_FILES:
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(token)
    if staging_marker:
        (path / output.STAGING_MARKER).write_text("")
    else:
        (path / output.PORT_MARKER).write_text("{}")


def test_a_run_killed_between_the_renames_is_repaired_by_the_next(tmp_path, fake_port):
    """SIGKILL between 'old port aside' and 'new port in' (fallback mode) leaves `--out` missing;
    the next run for that `--out` puts the old port back and removes the staged one."""
    out = tmp_path / "out"
    _complete_fake_port(tmp_path / ".out.old-k1ll3d", "old")
    _complete_fake_port(tmp_path / ".out.partial-k1ll3d", "new")
    _complete_fake_port(tmp_path / ".out.partial-st4g3", "half", staging_marker=True)
    fake_port("newer")
    result = _port(out)
    assert result.code == 2
    assert result.only_error().endswith("holds an earlier port; pass --force to replace it")
    # The refusal came before the lock: nothing was repaired yet. With --force it is.
    assert _port(out, "--force").code == 0
    assert holds_port(out) == "newer"
    assert leftovers(out) == []


def test_the_old_port_moved_aside_comes_back(tmp_path, fake_port):
    out = tmp_path / "out"
    _complete_fake_port(tmp_path / ".out.old-k1ll3d", "old")
    fake_port("new")
    result = _port(out, "--force", "--name", "x")
    assert "restored the port that an interrupted run had moved aside" in result.out
    # It was restored, then replaced, since --force was given.
    assert result.code == 0 and holds_port(out) == "new" and leftovers(out) == []


def test_lookalike_directories_without_hf2kh_markers_are_untouched(tmp_path, fake_port):
    out = tmp_path / "out"
    _user_dir(tmp_path / ".out.partial-mine")
    _user_dir(tmp_path / ".out.old-mine")
    fake_port("new")
    assert _port(out).code == 0
    assert holds_port(out) == "new"
    assert leftovers(out) == [".out.old-mine", ".out.partial-mine"]
    assert (tmp_path / ".out.partial-mine" / "thesis.txt").is_file()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_port_removes_the_staging_directory(tmp_path, fake_port, signum):
    out = tmp_path / "out"
    fake_port("old")
    assert _port(out).code == 0
    seen: list[Path] = []

    def stop(staging: Path) -> None:
        seen.append(staging)
        os.kill(os.getpid(), signum)
        time.sleep(10)  # the handler raises before this ends

    def not_handled_by_hf2kh(signum, frame):
        raise RuntimeError("hf2kh did not install its own handler")

    fake_port("new", during=stop)
    before = {s: signal.signal(s, not_handled_by_hf2kh) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = _port(out, "--force")
        assert signal.getsignal(signal.SIGTERM) is not_handled_by_hf2kh  # restored afterwards
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    assert seen and not seen[0].exists()
    if signum == signal.SIGTERM:
        assert result.code == 143
        assert result.only_error() == "terminated by SIGTERM; nothing was written"
    else:
        assert result.code == 130
        assert result.only_error() == "interrupted by SIGINT; nothing was written"
    assert holds_port(out) == "old"
    assert leftovers(out) == []


# ------------------------------------------------------------------ concurrent ports


def test_a_second_port_for_the_same_out_fails_while_the_first_runs(tmp_path, fake_port):
    out = tmp_path / "out"
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with output.staged_output(out, False, lambda line: None) as staging:
                _fake_port_into("first")(None, staging, out, lambda line: None)
                entered.set()
                release.wait(30)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
            entered.set()

    thread = threading.Thread(target=first)
    thread.start()
    assert entered.wait(30)
    fake_port("second")
    result = _port(out, "--force")
    release.set()
    thread.join(30)
    assert not errors
    assert result.code == 2
    assert result.only_error() == (
        f"another hf2kh port is writing {out} (it holds {tmp_path / '.out.hf2kh-lock'}); "
        "wait for it to finish or choose another --out"
    )
    assert holds_port(out) == "first"
    assert leftovers(out) == []


def test_a_lock_file_left_by_a_killed_port_does_not_block(tmp_path, fake_port):
    """flock locks die with their process; the file itself may stay behind."""
    out = tmp_path / "out"
    (tmp_path / ".out.hf2kh-lock").write_text("")
    fake_port("new")
    assert _port(out).code == 0
    assert holds_port(out) == "new" and leftovers(out) == []


def test_an_unwritable_parent_is_one_line(tmp_path, fake_port, monkeypatch):
    fake_port("new")
    monkeypatch.setattr(output.os, "access", lambda path, mode: False)
    result = _port(tmp_path / "out")
    assert result.code == 2
    assert result.only_error() == f"cannot write in {tmp_path}; choose another --out"


def test_exchange_reports_unsupported_filesystems_as_false(tmp_path, monkeypatch):
    """EINVAL (a filesystem without RENAME_EXCHANGE) selects the fallback rather than failing."""
    import ctypes

    monkeypatch.setattr(ctypes, "get_errno", lambda: errno.EINVAL)
    assert output._exchange(tmp_path / "missing-a", tmp_path / "missing-b") is False


# ------------------------------------------------------------------ a real port, stopped


def test_sigterm_stops_a_real_port_and_leaves_the_earlier_one(tmp_path):
    out = tmp_path / "out"
    _complete_fake_port(out, "old")
    env = {**os.environ, "KERAS_BACKEND": "torch", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hf2kh.cli", "port", TINY, "--out", str(out), "--force"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        staged = None
        while staged is None and time.monotonic() < deadline and proc.poll() is None:
            staged = next(iter(tmp_path.glob(".out.partial-*/layer_graph.json")), None)
            time.sleep(0.05)
        assert staged is not None, "the port never reached its inspect stage"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert stderr.splitlines()[-1] == "error: terminated by SIGTERM; nothing was written"
    assert "> inspect:" in stdout
    assert holds_port(out) == "old"
    assert leftovers(out) == []
