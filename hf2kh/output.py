"""Where a port lands: which `--out` directories may be written, and how a port is moved in.

Rules (README, "Output directory"):

- `--out` may name a new path, an empty directory, or a directory holding an earlier hf2kh port
  (recognized by the `.hf2kh-port` marker written into every port, or by the `report.json` and
  `layer_graph.json` of a port written before the marker existed). An earlier port is replaced
  only with `--force`.
- Anything else is refused, `--force` or not: a non-empty directory without a port, a file, and,
  even when empty or holding a port, the current directory, the home directory, a filesystem root
  and any directory containing one of these.
- The port is written into a staging directory beside `--out` (same parent, hidden name) and
  moved in only when complete. On Linux the staged port and the earlier one trade places in one
  `renameat2(RENAME_EXCHANGE)`, so `--out` holds a complete port at every instant; elsewhere the
  earlier port is renamed aside, the new one renamed in (the aside one is renamed back if that
  fails), and a run killed between the two renames is repaired by the next run for that `--out`.
  SIGINT and SIGTERM are held back during these renames and turned into exceptions before them,
  so a stopped port removes its staging directory.
- One port at a time per `--out`: a second one fails at once naming the lock (`flock`, released
  by the kernel when its holder dies, so a killed port never leaves a stale lock).
- Leftovers of a killed run (staging directories, the old port of a replacement) are removed by
  the next run for that `--out`, but only directories with hf2kh's own names and markers.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from hf2kh import __version__
from hf2kh.errors import OutputBusyError, OutputExistsError, OutputRefusedError
from hf2kh.interrupt import deferred_signals, signals_as_exceptions

PORT_MARKER = ".hf2kh-port"  # in every finished port; written last, before the port moves in
STAGING_MARKER = ".hf2kh-staging"  # in a staging directory from the moment it is created
_LEGACY_REPORT_KEYS = {"repo", "package_dir", "preset_dir", "layer_graph", "weights", "checks"}


def target_path(out: Path) -> Path:
    """The absolute `--out` path (`~` expanded, symlinks resolved)."""
    return Path(out).expanduser().resolve()


def is_port(path: Path) -> bool:
    """Whether `path` is a directory holding a port that hf2kh wrote."""
    if not path.is_dir() or path.is_symlink():
        return False
    if (path / PORT_MARKER).is_file():
        return True
    try:
        report = json.loads((path / "report.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(report, dict)
        and _LEGACY_REPORT_KEYS <= report.keys()
        and (path / "layer_graph.json").is_file()
    )


def _protected_reason(out: Path) -> str | None:
    """Why `out` may never be replaced, or None."""
    if out.parent == out:
        return "a filesystem root"
    for what, place in (("current directory", Path.cwd()), ("home directory", Path.home())):
        place = place.resolve()
        if place == out:
            return f"the {what}"
        if place.is_relative_to(out):
            return f"a directory containing the {what} ({place})"
    return None


def check_target(out: Path, force: bool) -> None:
    """Raise unless a port may be written to the absolute path `out` (see the module docstring)."""
    reason = _protected_reason(out)
    if reason is not None:
        raise OutputRefusedError(
            f"refusing to write a port into {out}: it is {reason}; pass an --out that names a "
            "new or empty directory"
        )
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise OutputRefusedError(f"--out {out} exists and is not a directory; choose another --out")
    if not any(out.iterdir()):
        return
    if not is_port(out):
        raise OutputRefusedError(
            f"refusing to replace {out}: it is not empty and holds no hf2kh port (even with "
            "--force, hf2kh replaces only its own ports); choose another --out"
        )
    if not force:
        raise OutputExistsError(
            f"output directory {out} holds an earlier port; pass --force to replace it"
        )


@contextmanager
def _exclusive_lock(out: Path) -> Iterator[None]:
    """Hold `.<name>.hf2kh-lock` beside `out`, or fail at once if another port holds it."""
    path = out.parent / f".{out.name}.hf2kh-lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusyError(
                f"another hf2kh port is writing {out} (it holds {path}); wait for it to finish "
                "or choose another --out"
            ) from None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        # The holder before us unlinks the file before releasing it; lock the file now there.
        if current is not None and os.path.samestat(current, os.fstat(fd)):
            break
        os.close(fd)
    try:
        yield
    finally:
        with suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _leftovers(out: Path) -> list[Path]:
    """Directories that a killed run for `out` left beside it: hf2kh's names and markers only."""
    prefixes = (f".{out.name}.partial-", f".{out.name}.old-")
    return sorted(
        entry
        for entry in out.parent.iterdir()
        if entry.name.startswith(prefixes)
        and entry.is_dir()
        and not entry.is_symlink()
        and ((entry / STAGING_MARKER).is_file() or is_port(entry))
    )


def _recover(out: Path, progress: Callable[[str], None]) -> None:
    """Repair what a killed run for `out` left behind (called with the lock held)."""
    leftovers = _leftovers(out)
    if not out.exists():
        aside = [p for p in leftovers if p.name.startswith(f".{out.name}.old-") and is_port(p)]
        if aside:
            os.rename(aside[-1], out)
            leftovers.remove(aside[-1])
            progress(f"output: restored the port that an interrupted run had moved aside to {out}")
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _move_in(staging: Path, out: Path) -> Path | None:
    """Put the complete port `staging` at `out`; return the earlier port's new path, if any."""
    if not (out.exists() and any(out.iterdir())):
        os.rename(staging, out)  # a new path, or an empty directory: rename replaces it atomically
        return None
    if _exchange(staging, out):
        return staging
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, aside)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(aside, out)
        raise
    return aside


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_marker(staging: Path, description: dict) -> None:
    marker = {"hf2kh_port": 1, "hf2kh_version": __version__, **description}
    (staging / PORT_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
    (staging / STAGING_MARKER).unlink()


@contextmanager
def staged_output(
    out: Path,
    force: bool,
    progress: Callable[[str], None] = print,
    description: dict | None = None,
) -> Iterator[Path]:
    """Yield a staging directory for a port into the absolute path `out`; when the block ends
    without an exception, mark the port complete and move it in (replacing an earlier port).
    On any exception, SIGTERM and SIGINT included, the staging directory is removed."""
    check_target(out, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputRefusedError(f"cannot create {out.parent}: {exc.strerror}") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise OutputRefusedError(f"cannot write in {out.parent}; choose another --out")
    with _exclusive_lock(out), signals_as_exceptions():
        check_target(out, force)  # again: another port may have finished while we started
        _recover(out, progress)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        discard: list[Path] = [staging]
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would stick to the port
        try:
            (staging / STAGING_MARKER).write_text("an hf2kh port being written\n")
            yield staging
            with deferred_signals():
                _write_marker(staging, description or {})
                check_target(out, force)
                old = _move_in(staging, out)
            if old is not None:
                discard.append(old)
                shutil.rmtree(old)
        except BaseException:
            for path in discard:
                shutil.rmtree(path, ignore_errors=True)
            raise
