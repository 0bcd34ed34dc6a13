"""`hf2kh verify <port-dir> [<repo-or-dir>]`: re-check an existing port (registered in
`hf2kh.cli`). The package, preset and model IR are found in the port directory; the checkpoint is
the one the port records in its report.json, or the one given on the command line."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from hf2kh.errors import SourceError


@dataclass(frozen=True)
class ExistingPort:
    """An earlier `hf2kh port`'s output directory."""

    root: Path
    report: dict
    name: str

    @property
    def files(self):
        from hf2kh.verify.run import PortFiles

        return PortFiles(self.root, self.name, self.root / "preset", self.root / "model_ir.json")


def open_port(root: Path) -> ExistingPort:
    """The port in `root`, or one `SourceError` line saying why `root` is not one."""
    from hf2kh import output

    if not root.is_dir():
        raise SourceError(f"{root} is not a directory; give the --out directory of a port")
    if not output.is_port(root):
        raise SourceError(f"{root} is not an hf2kh port (no {output.PORT_MARKER} marker)")
    missing = [n for n in ("report.json", "model_ir.json", "preset") if not (root / n).exists()]
    if missing:
        raise SourceError(f"the port in {root} is incomplete: no {', '.join(missing)}")
    try:
        report = json.loads((root / "report.json").read_text())
        name = json.loads((root / "model_ir.json").read_text())["name"]
    except (OSError, ValueError, KeyError) as exc:
        raise SourceError(f"cannot read the port's report.json or model_ir.json: {exc}") from exc
    if not (root / name).is_dir():
        raise SourceError(f"the port in {root} has no package directory {name}/")
    return ExistingPort(root, report, name)


def run_verify(
    port_dir: Path,
    repo: str | None,
    *,
    revision: str | None = None,
    token: str | None = None,
    trust_remote_code: bool = False,
    options=None,
    stream: bool | None = None,
):
    """Verify the port in `port_dir` against `repo` (default: the port's own checkpoint) and
    record the result in its report.json; `stream` None: streamed when the model would not fit
    in memory twice (`hf2kh.verify.stream`). Returns the `VerifyReport`."""
    import dataclasses

    from hf2kh.source import open_checkpoint
    from hf2kh.verify.run import Reference, VerifyOptions, report_fields, verify

    port = open_port(port_dir)
    options = options or VerifyOptions(dtype=preset_dtype(port.root / "preset"))
    if repo is None:
        repo = port.report.get("repo")
        if not repo:
            raise SourceError("the port's report.json names no checkpoint; give one")
        revision = revision or port.report.get("revision")
    ckpt = open_checkpoint(
        repo, revision=revision, token=token, trust_remote_code=trust_remote_code
    )
    if ckpt.weight_format != "safetensors":
        raise SourceError("hf2kh verify reads safetensors checkpoints only")
    if stream is None:
        from hf2kh.source import tensor_index
        from hf2kh.verify.stream import checkpoint_params, estimate

        stream = not estimate(checkpoint_params(tensor_index(ckpt)), options.dtype).fits
    options = dataclasses.replace(options, stream=stream)
    report = verify(port.files, Reference(Path(ckpt.path), trust_remote_code), options)
    data = {**port.report, **report_fields(report)}
    data["verified_against"] = {"repo": repo, "revision": ckpt.revision}
    _write_atomically(port.root / "report.json", json.dumps(data, indent=1) + "\n")
    return report


def preset_dtype(preset: Path) -> str:
    """The compute dtype the preset was converted in (`port --dtype`), from its config.json."""
    try:
        dtype = json.loads((preset / "config.json").read_text())["config"].get("dtype")
    except (OSError, ValueError, KeyError, AttributeError):
        return "float32"
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name")
    return dtype if dtype in ("float32", "bfloat16", "float16") else "float32"


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise SourceError(f"cannot update {path}: {exc.strerror}") from exc
