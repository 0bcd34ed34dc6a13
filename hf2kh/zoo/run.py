"""The sweep: one worker process per model type, `jobs` at a time, each under a time limit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hf2kh.zoo.types import Excluded, ZooType
from hf2kh.zoo.worker import Outcome

RESULTS_VERSION = 1
DEFAULT_TIMEOUT = 300.0


@dataclass
class ZooOptions:
    only: list[str] | None = None
    json_out: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    jobs: int = 1
    out: Path | None = None  # keep checkpoints, ports and logs here (default: a temp dir)


@dataclass
class ZooResults:
    outcomes: list[Outcome]
    excluded: list[Excluded]
    seconds: float
    command: str
    started: str
    versions: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts

    def to_json(self) -> dict:
        return {
            "version": RESULTS_VERSION,
            "command": self.command,
            "started": self.started,
            "seconds": round(self.seconds, 1),
            "versions": self.versions,
            "counts": self.counts(),
            "ours": sum(o.ours for o in self.outcomes),
            "results": [asdict(o) for o in self.outcomes],
            "excluded": [asdict(e) for e in self.excluded],
        }

    def write_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")


def run_zoo(
    options: ZooOptions, on_result: Callable[[Outcome], None] = lambda outcome: None
) -> ZooResults:
    from hf2kh.zoo.tokenizer import kind_for, train
    from hf2kh.zoo.types import candidate_types, select

    start = time.monotonic()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    types, excluded = candidate_types()
    chosen = select(types, options.only)
    root = Path(options.out) if options.out else Path(tempfile.mkdtemp(prefix="hf2kh-zoo-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        tokenizer_dirs: dict[str, Path] = {}
        for kind in sorted({kind_for(t.task) for t in chosen}):
            tokenizer_dirs[kind] = root / "_tokenizers" / kind
            train(kind, tokenizer_dirs[kind])

        def one(zoo_type: ZooType) -> Outcome:
            outcome = run_worker(
                zoo_type,
                tokenizer_dirs[kind_for(zoo_type.task)],
                root / zoo_type.model_type,
                options.timeout,
                options.jobs,
            )
            on_result(outcome)
            return outcome

        with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
            outcomes = list(pool.map(one, chosen))
    finally:
        if options.out is None:
            shutil.rmtree(root, ignore_errors=True)
    swept = [o for o in outcomes if o.status != "excluded"]
    excluded = excluded + [
        Excluded(o.model_type, o.reason or "") for o in outcomes if o.status == "excluded"
    ]
    results = ZooResults(
        swept,
        sorted(excluded, key=lambda e: e.model_type),
        time.monotonic() - start,
        "hf2kh zoo " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["zoo"] else "hf2kh zoo",
        started,
        _versions(),
    )
    if options.json_out:
        results.write_json(options.json_out)
    return results


def run_worker(
    zoo_type: ZooType, tokenizer_dir: Path, work: Path, timeout: float, jobs: int = 1
) -> Outcome:
    """Run `hf2kh.zoo.worker` for one type in a fresh process group; kill it at `timeout`."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    job = {
        "model_type": zoo_type.model_type,
        "task": zoo_type.task,
        "architecture": zoo_type.architecture,
        "tokenizer_dir": str(tokenizer_dir.resolve()),
        "work": str(work.resolve()),
    }
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job, indent=1) + "\n")
    env = {
        **os.environ,
        "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "torch"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    if jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        env.setdefault("OMP_NUM_THREADS", str(threads))
    start = time.monotonic()
    with open(work / "log.txt", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "hf2kh.zoo.worker", str(job_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work,
            env=env,
            start_new_session=True,
        )
        try:
            process.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process)
    seconds = round(time.monotonic() - start, 1)
    result_path = work / "result.json"
    if not timed_out and result_path.exists():
        outcome = Outcome(**json.loads(result_path.read_text()))
        outcome.seconds = seconds
        return outcome
    stage = (work / "stage").read_text().strip() if (work / "stage").exists() else "config"
    outcome = Outcome(zoo_type.model_type, zoo_type.task, zoo_type.architecture, "error")
    outcome.stage, outcome.seconds = stage, seconds
    if timed_out:
        outcome.reason = f"timeout: still running after {timeout:g} s"
    else:
        outcome.reason = f"the worker died (exit code {process.returncode}): {_last_line(work)}"
        outcome.ours = True
    return outcome


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def _last_line(work: Path) -> str:
    log = work / "log.txt"
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "(no output)"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {}
    for package in ("transformers", "torch", "keras", "keras-hub"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found
