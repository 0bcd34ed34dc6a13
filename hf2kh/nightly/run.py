"""Port and verify each entry of a nightly list in its own process, under a time limit."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hf2kh.nightly.listfile import Entry

# `hf2kh port` exit codes (README "Exit codes") as the statuses of a nightly run.
STATUSES = {0: "passed", 1: "failed", 2: "refused", 3: "error"}


@dataclass(frozen=True)
class CheckResult:
    name: str
    group: str
    passed: bool
    error: float | None  # the elementwise relative error pass/fail is decided on (if a tensor)


@dataclass(frozen=True)
class EntryResult:
    id: str
    repo: str
    options: tuple[str, ...]
    status: str  # passed, failed, refused, error, timeout
    exit_code: int | None
    message: str | None  # the port's `error:` line, or why it has none
    seconds: float
    checks: tuple[CheckResult, ...] = ()
    log: str | None = None

    @staticmethod
    def from_json(data: dict) -> EntryResult:
        checks = tuple(CheckResult(**c) for c in data.get("checks", ()))
        return EntryResult(**{**data, "options": tuple(data["options"]), "checks": checks})


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "-", text).strip("-")[:60] or "entry"


def run_entry(entry: Entry, index: int, out: Path, timeout: float) -> EntryResult:
    """`hf2kh port <repo> --verify` for `entry` in a fresh interpreter; its result."""
    from hf2kh.verify.terminal import quiet_env

    limit = entry.timeout or timeout
    name = f"{index:03d}-{_slug(entry.repo)}"
    port_dir, log = out / "ports" / name, out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    port_dir.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "hf2kh.cli",
        "port",
        entry.repo,
        "--out",
        str(port_dir),
        "--verify",
        "--force",
        "--quiet",
        *entry.options,
    ]
    start = time.monotonic()
    env = quiet_env({**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            _, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return EntryResult(
                entry.id,
                entry.repo,
                entry.options,
                "timeout",
                None,
                f"no result within {limit:.0f} s",
                time.monotonic() - start,
                log=str(log),
            )
        log_file.write(stderr)
    seconds = time.monotonic() - start
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    message = errors[-1].removeprefix("error: ") if errors else None
    status = STATUSES.get(proc.returncode, "error")
    if status == "error" and message is None:
        message = f"exited {proc.returncode}"
    checks: tuple[CheckResult, ...] = ()
    if proc.returncode in (0, 1):  # a port was written by this run (a refusal writes nothing)
        checks = _checks(port_dir / "report.json")
    return EntryResult(
        entry.id,
        entry.repo,
        entry.options,
        status,
        proc.returncode,
        message,
        seconds,
        checks,
        str(log),
    )


def _checks(report: Path) -> tuple[CheckResult, ...]:
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return ()
    return tuple(
        CheckResult(c["name"], c["group"], bool(c["passed"]), c.get("rel_elementwise"))
        for c in data.get("checks") or ()
    )


def write_json(results: list[EntryResult], path: Path, environment: dict) -> None:
    data = {
        "version": 1,
        "environment": environment,
        "entries": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(data, indent=1) + "\n")


def read_json(path: Path) -> list[EntryResult]:
    from hf2kh.errors import BadOptionError

    try:
        data = json.loads(path.read_text())
        return [EntryResult.from_json(e) for e in data["entries"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadOptionError(f"{path} is not an hf2kh nightly JSON report: {exc}") from exc
