"""One zoo entry, run in its own process: build the tiny checkpoint, port it with verification.

    python -m hf2kh.zoo.worker JOB.json

`JOB.json` names the model type, its head and architecture, the tokenizer directory and the
work directory. The worker writes the stage it is in to `<work>/stage` as it goes (so the parent
can say where a timeout struck) and its outcome to `<work>/result.json` (see `Outcome`).

How outcomes are classified:

- `verified`: the port ran and every check passed;
- `refused`: hf2kh stopped at recognition or later with a one-line `UnsupportedModelError`;
- `failed`: verification failed, or another expected hf2kh error after recognition;
- `error`: a crash (an exception hf2kh did not expect) or any failure before recognition
  (building the config or model, saving, opening the checkpoint, the inspect stage): the
  checkpoint is one transformers builds, so these are bugs of ours (`ours: true`);
- `excluded`: transformers cannot build the model from the type's *default* config either (a
  broken default, not a zoo type); the sweep lists these apart.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from hf2kh.zoo.types import ZooType

BEFORE_RECOGNITION = ("config", "model", "save", "source", "inspect")
STATUSES = ("verified", "refused", "failed", "error")


@dataclass
class Outcome:
    model_type: str
    task: str
    architecture: str
    status: str  # one of STATUSES, or "excluded"
    stage: str | None = None  # where it stopped (None when verified)
    reason: str | None = None  # one line
    ours: bool = False  # a bug of ours: a crash, or a failure before recognition
    worst_error: float | None = None  # largest relative error over the compared tensors
    worst_check: str | None = None
    seconds: float = 0.0
    params: int | None = None
    layers: int | None = None


def package_for(model_type: str) -> str:
    from hf2kh.port import package_name

    return package_name("", f"zoo_{model_type}")


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    zoo_type = ZooType(job["model_type"], job["task"], job["architecture"])
    work = Path(job["work"])
    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    outcome = run_one(zoo_type, Path(job["tokenizer_dir"]), work)
    outcome.seconds = round(time.monotonic() - start, 1)
    (work / "result.json").write_text(json.dumps(asdict(outcome), indent=1) + "\n")
    return 0


def run_one(zoo_type: ZooType, tokenizer_dir: Path, work: Path) -> Outcome:
    from hf2kh.errors import Hf2khError, UnsupportedModelError, VerificationFailed
    from hf2kh.port import PortOptions, run_port
    from hf2kh.zoo.build import BuildError, build_checkpoint, one_line
    from hf2kh.zoo.tokenizer import load_tokens

    outcome = Outcome(zoo_type.model_type, zoo_type.task, zoo_type.architecture, "error")
    stage = _Stage(work)
    stage.set("config")
    try:
        built = build_checkpoint(
            zoo_type, load_tokens(tokenizer_dir), tokenizer_dir, work / "checkpoint"
        )
    except BuildError as exc:
        broken_default = _default_does_not_build(zoo_type) if exc.stage == "model" else None
        if broken_default:
            outcome.status, outcome.reason = "excluded", broken_default
        else:
            outcome.stage, outcome.reason, outcome.ours = exc.stage, str(exc), True
        return outcome
    outcome.params, outcome.layers = built.num_params, built.num_layers

    options = PortOptions(
        repo=str(built.path), out=work / "port", name=package_for(zoo_type.model_type), verify=True
    )
    stage.set("source")  # run_port's first stage (its own progress line follows)
    try:
        result = run_port(options, progress=stage.from_progress)
    except UnsupportedModelError as exc:
        outcome.stage, outcome.reason = stage.name, _line(exc)
        if stage.name in BEFORE_RECOGNITION:
            outcome.ours = True
        else:
            outcome.status = "refused"
        return outcome
    except VerificationFailed as exc:
        outcome.status, outcome.stage, outcome.reason = "failed", stage.name, _line(exc)
        return outcome
    except Hf2khError as exc:
        outcome.stage, outcome.reason = stage.name, _line(exc)
        if stage.name in BEFORE_RECOGNITION:
            outcome.ours = True
        else:
            outcome.status = "failed"
        return outcome
    except Exception as exc:  # noqa: BLE001 - a crash: reported with where it happened
        where = _where(exc)
        outcome.stage, outcome.ours = stage.name, True
        outcome.reason = f"crash: {one_line(exc)}" + (f" (at {where})" if where else "")
        traceback.print_exc()
        return outcome

    report = result.verification
    outcome.worst_error, outcome.worst_check = _worst(report)
    if report is not None and report.passed:
        outcome.status = "verified"
    else:
        outcome.status, outcome.stage = "failed", "verify"
        divergence = getattr(report, "first_divergence", None)
        outcome.reason = _line(divergence or _failed_checks(report) or "verification failed")
    return outcome


class _Stage:
    """The pipeline stage in progress, mirrored to `<work>/stage` for the parent."""

    def __init__(self, work: Path):
        self.path = work / "stage"
        self.name = "config"

    def set(self, name: str) -> None:
        self.name = name
        self.path.write_text(name + "\n")

    def from_progress(self, line: str) -> None:
        head = str(line).split(":", 1)[0].strip()
        if head and head.isidentifier():
            self.set(head)
        print(line, flush=True)


def _default_does_not_build(zoo_type: ZooType) -> str | None:
    """Why transformers cannot build the type's default config (on `meta`), or None if it can."""
    import torch
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from hf2kh.zoo.build import one_line

    try:
        config = CONFIG_MAPPING[zoo_type.model_type]()
        with torch.device("meta"):
            getattr(transformers, zoo_type.architecture)._from_config(config)
    except Exception as exc:  # noqa: BLE001
        return f"transformers cannot build {zoo_type.architecture} from its default config: " + (
            one_line(exc)
        )
    return None


def _worst(report) -> tuple[float | None, str | None]:
    worst, name = None, None
    for check in getattr(report, "checks", None) or []:
        value = check.rel_elementwise if check.rel_elementwise is not None else check.rel_rms
        if value is not None and (worst is None or value > worst):
            worst, name = float(value), check.name
    return worst, name


def _failed_checks(report) -> str:
    failed = [c.name for c in getattr(report, "checks", None) or [] if not c.passed]
    return f"failed checks: {', '.join(failed[:5])}" if failed else ""


def _line(message) -> str:
    from hf2kh.crash import one_line

    return one_line(str(message))[:400]


def _where(exc: BaseException) -> str:
    """The innermost frame of `exc`'s traceback: file (from site-packages or the repo) and line."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    path = frame.filename
    for marker in ("site-packages" + os.sep, os.sep + "hf2kh" + os.sep):
        if marker in path:
            path = (
                path.split(marker, 1)[1]
                if marker.startswith("site")
                else "hf2kh/" + (path.split(marker, 1)[1])
            )
            break
    return f"{path}:{frame.lineno}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
