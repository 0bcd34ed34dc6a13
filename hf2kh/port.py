"""`hf2kh port`: source -> inspect -> recognize -> generate -> convert -> verify.

Everything is written into a staging directory beside `--out` and moved into place only when
every stage succeeded (`hf2kh.output`), so a failed or interrupted port leaves nothing
half-written.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hf2kh import output
from hf2kh.errors import Hf2khError, SourceError


@dataclass
class PortOptions:
    repo: str
    out: Path
    name: str | None = None
    verify: bool = False
    force: bool = False
    revision: str | None = None
    token: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    device: str = "cpu"
    dtype: str = "float32"
    junit: Path | None = None
    backend: str = "torch"  # the Keras backend verification runs on
    rtol: float | None = None  # overrides the dtype's verification tolerance
    # hold one block at a time (conversion, reference outputs, verification); None: when the
    # model would not fit in memory twice (`hf2kh.verify.stream.estimate`)
    stream: bool | None = None

    def verify_options(self, stream: bool = False):
        from hf2kh.verify.run import VerifyOptions

        return VerifyOptions(self.dtype, self.device, self.backend, self.rtol, stream)


@dataclass
class PortResult:
    name: str
    package_dir: Path
    preset_dir: Path
    report_path: Path
    spec_lines: list[str]
    weights_mapped: int
    weights_total: int
    files: list[str] = field(default_factory=list)
    verification: object | None = None


def package_name(repo: str, name: str | None) -> str:
    raw = name or Path(repo.rstrip("/")).name or "model"
    clean = re.sub(r"[^0-9a-zA-Z]+", "_", raw).strip("_").lower()
    if not clean or clean[0].isdigit():
        clean = f"m_{clean}"
    return clean


def check_name_is_free(name: str) -> None:
    """Refuse a package whose classes would shadow KerasHub's (e.g. `gemma` -> GemmaBackbone)."""
    import keras_hub

    prefix = "".join(part.capitalize() for part in name.split("_"))
    taken = {n.lower() for n in dir(keras_hub.models)}
    if f"{prefix}backbone".lower() in taken:
        raise Hf2khError(
            f"package name {name!r} would shadow keras_hub.models.{prefix}Backbone; "
            "pass --name with another name"
        )


def run_port(options: PortOptions, progress: Callable[[str], None] = print) -> PortResult:
    """Port `options.repo` into `options.out`; see `hf2kh.output` for how `--out` is written."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    if options.verify:
        options.verify_options()  # a bad --backend or --rtol fails before anything is written
    out = output.target_path(options.out)
    description = {"repo": options.repo, "revision": options.revision}
    with output.staged_output(out, options.force, progress, description) as staging:
        result = _port_into(options, staging, out, progress)
    _relocate(result, staging, out)
    return result


def _relocate(result: PortResult, staging: Path, out: Path) -> None:
    result.package_dir = out / result.package_dir.relative_to(staging)
    result.preset_dir = out / result.preset_dir.relative_to(staging)
    result.report_path = out / result.report_path.relative_to(staging)


def _port_into(options: PortOptions, staging: Path, out: Path, progress) -> PortResult:
    from hf2kh.generate.context import Context
    from hf2kh.generate.package import write_package
    from hf2kh.generate.sentence_pooling import read_pooling
    from hf2kh.generate.tokenizer import read_tokenizer_spec
    from hf2kh.generate.weight_map import (
        audit_checkpoint,
        audit_keras,
        build_table,
        declare_unmapped,
        rename_tensors,
    )
    from hf2kh.inspect.build import build_graph_and_model
    from hf2kh.ir import Task, write_json
    from hf2kh.recognize import recognize_model
    from hf2kh.source import check_shapes, load_config, open_checkpoint, tensor_index
    from hf2kh.source.names import stored_names

    progress("source: opening the checkpoint")
    ckpt = open_checkpoint(
        options.repo,
        revision=options.revision,
        token=options.token,
        allow_pickle=options.allow_pickle,
        trust_remote_code=options.trust_remote_code,
    )
    if ckpt.weight_format != "safetensors":
        raise SourceError(
            "the generated conversion script reads safetensors; convert the pickled weights first "
            "(e.g. `save_pretrained(..., safe_serialization=True)`)"
        )
    config = load_config(ckpt)
    name = package_name(options.repo, options.name)
    check_name_is_free(name)

    progress("inspect: recording the layer graph on the meta device")
    graph, meta_model = build_graph_and_model(config, options.trust_remote_code)
    graph.write_json(staging / "layer_graph.json")

    progress("recognize: reading the model IR from the graph")
    ir = recognize_model(
        graph, meta_model, config, name=name, source=options.repo, revision=ckpt.revision
    )
    write_json(ir, staging / "model_ir.json")
    tokenizer_spec = read_tokenizer_spec(ckpt.path)

    progress("audit: mapping every checkpoint tensor")
    index = tensor_index(ckpt)
    shapes = {p.name: p.shape for p in graph.parameters}
    shapes.update({t.name: shapes[t.target] for t in graph.tied})
    buffers = {b.name for b in graph.buffers}
    stored = stored_names(meta_model, index)
    # (and experts stored one by one, which transformers stacks on load: `stored_names`)
    names = {**stored, **{n: stored.get(n, n) for n in set(shapes) | buffers}}
    check_shapes(ckpt, {names[n]: s for n, s in shapes.items()})
    dtypes = {n: i.dtype for n, i in index.items()}
    table = rename_tensors(build_table(ir, shapes), names, dtypes)
    declare_unmapped(
        table,
        set(index),
        {names[b] for b in buffers},
        {names[t.name]: names[t.target] for t in graph.tied},
        list(getattr(meta_model, "_keys_to_ignore_on_load_unexpected", None) or []),
    )
    audit_checkpoint(table, {n: i.shape for n, i in index.items()})
    stream = _choose_streaming(options, index, progress)

    progress("generate: writing the KerasHub package")
    preset_dir = staging / "preset"
    num_params = sum(math.prod(p.shape) for p in graph.parameters)
    ctx = Context(
        ir,
        tokenizer_spec,
        preset_path=str(out / "preset"),
        num_params=num_params,
        sentence_pooling=read_pooling(ckpt.path) if ir.head.task is Task.BASE else None,
    )
    if stream:
        from hf2kh.verify.stream import streamed_hf_model

        blocks = [ir.block_path(i) for i in range(ir.num_layers)]
        hf_model = streamed_hf_model(ckpt, config, blocks, options.device)
    else:
        hf_model = load_hf_model(ckpt, config, options.device, options.trust_remote_code)
    hf_tokenizer = load_hf_tokenizer(ckpt)
    package_dir = staging / name
    files = write_package(ctx, package_dir, ckpt.path, table, hf_model, hf_tokenizer)
    module = import_generated(staging, name)
    backbone_cls = getattr(module, f"{ir.class_prefix}Backbone")
    task_cls = getattr(module, ctx.task_class)
    keras_variables = _keras_variables(backbone_cls, task_cls, ctx.backbone_config)
    audit_keras(table, keras_variables)

    progress("convert: running the generated conversion script")
    run_conversion(staging, name, ckpt.path, preset_dir, options.dtype)

    result = PortResult(
        name=name,
        package_dir=package_dir,
        preset_dir=preset_dir,
        report_path=staging / "report.json",
        spec_lines=list(ir.evidence),
        weights_mapped=len({r.hf_name for r in table.rows}) + len(table.declared),
        weights_total=len(index),
        files=[str(p.relative_to(staging)) for p in files],
    )
    report = {
        "repo": options.repo,
        "revision": ckpt.revision,
        "package_dir": str(out / name),
        "preset_dir": str(out / "preset"),
        "layer_graph": str(out / "layer_graph.json"),
        "model_ir": str(out / "model_ir.json"),
        "evidence": list(ir.evidence),
        "weights": {"mapped": result.weights_mapped, "total": result.weights_total},
        "checks": [],
        "passed": None,
    }
    if options.verify:
        from hf2kh.verify.run import HFSide, PortFiles, Reference, report_fields

        progress("verify: comparing HF and the converted KerasHub model")
        files = PortFiles(staging, name, preset_dir, staging / "model_ir.json")
        reference = Reference(Path(ckpt.path), options.trust_remote_code)
        hf_side = HFSide(hf_model, hf_tokenizer, tokenizer_spec)
        verify_options = options.verify_options(stream)
        verification = verify_port(module, ir, files, reference, hf_side, verify_options)
        result.verification = verification
        report.update(report_fields(verification))
        if options.junit:
            verification.write_junit(options.junit)
    result.report_path.write_text(json.dumps(report, indent=1) + "\n")
    return result


def _choose_streaming(options: PortOptions, index, progress) -> bool:
    """`--stream`/`--no-stream`, else stream when the model would not fit in memory twice."""
    from hf2kh.verify.stream import checkpoint_params, estimate

    if options.stream is not None:
        stream = options.stream
        if stream:
            progress("memory: streaming block by block (--stream)")
        return stream
    need = estimate(checkpoint_params(index), options.dtype)
    if need.fits:
        return False
    progress(f"memory: streaming block by block: the model {need.describe()}")
    return True


def load_hf_model(ckpt, config, device: str = "cpu", trust_remote_code: bool = False):
    """The HF reference: float32, eager attention, on `device` (TF32 off)."""
    import torch

    from hf2kh.inspect.build import model_class_for

    cls = model_class_for(config, trust_remote_code)
    try:
        model = cls.from_pretrained(
            ckpt.path,
            config=config,
            dtype=torch.float32,
            attn_implementation="eager",
            trust_remote_code=trust_remote_code,
            use_safetensors=ckpt.weight_format == "safetensors",
        )
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        raise SourceError(
            f"transformers cannot load the checkpoint: {str(exc).splitlines()[0]}"
        ) from exc
    if device != "cpu":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        model = model.to(device)
    return model.eval()


def load_hf_tokenizer(ckpt):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(ckpt.path, trust_remote_code=ckpt.trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        raise SourceError(
            f"the checkpoint's tokenizer cannot be loaded: {str(exc).splitlines()[0]}"
        ) from exc


def import_generated(parent: Path, name: str):
    """Import the generated package from `parent` (a fresh import, even if one was loaded)."""
    for key in [k for k in sys.modules if k == name or k.startswith(f"{name}.")]:
        del sys.modules[key]
    sys.path.insert(0, str(parent))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(parent))


def _keras_variables(backbone_cls, task_cls, config: dict) -> dict[str, tuple[int, ...]]:
    """The variables the conversion fills: the task's (its backbone's and its head's). Built
    without values (no random initial weights: a large model would not fit)."""
    import keras

    from hf2kh.verify.stream import forget_uninitialized

    with keras.StatelessScope(initialize_variables=False):
        backbone = backbone_cls(**config)
        # not compiled: compiling makes an optimizer, whose variables need values
        task = backbone if task_cls is backbone_cls else task_cls(backbone, compile=False)
    forget_uninitialized(task.weights)
    return {v.path: tuple(v.shape) for v in task.weights}


def run_conversion(parent: Path, name: str, checkpoint: Path, preset: Path, dtype: str) -> None:
    """Run the generated script in a fresh interpreter, exactly as a user would (each tensor is
    read as the preset is written, never the whole model)."""
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "torch")}
    env["PYTHONPATH"] = os.pathsep.join([str(parent), env.get("PYTHONPATH", "")])
    command = [
        sys.executable,
        "-m",
        f"{name}.convert_{name}_checkpoints",
        "--checkpoint",
        str(Path(checkpoint).resolve()),
        "--preset",
        str(preset),
        "--dtype",
        dtype,
    ]
    result = subprocess.run(command, cwd=parent, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        full = next((s for s in FULL_DISK if s in result.stderr), None)
        if full is not None:
            raise Hf2khError(
                f"the disk is full: writing the preset failed ({full}); free some space in "
                f"{preset.parent.parent} and run the port again (--out was left as it was)"
            )
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise Hf2khError(f"the generated conversion script failed: {last}")


# How a full disk (or a file-size limit, or a quota) shows in the conversion script's errors.
FULL_DISK = ("No space left on device", "File too large", "Disk quota exceeded")


def verify_port(module, ir, files, reference, hf_side, verify_options):
    """The port's verification (`hf2kh.verify.run`, shared with `hf2kh verify`): in this process
    with the HF model already loaded, or on another Keras backend in a child process."""
    from hf2kh.verify.run import current_backend, verify, verify_loaded

    if verify_options.backend == current_backend():
        return verify_loaded(module, ir, files, hf_side, verify_options)
    return verify(files, reference, verify_options)
