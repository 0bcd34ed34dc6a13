"""Run the verification of a port, shared by `hf2kh port --verify` and `hf2kh verify`.

The HF side always runs on torch. The Keras side runs in this process when `--backend` is the
backend this process already imported (torch, the CLI's default), otherwise in a child process
with `KERAS_BACKEND` set (`hf2kh.verify.child`), which loads the HF model, the generated package
and the preset itself and hands back the report as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from hf2kh.errors import BadOptionError, Hf2khError, VerificationFailed

BACKENDS = ("torch", "jax", "tensorflow")
# A child verification (another backend) gets this long before it is stopped.
CHILD_TIMEOUT_S = 3600


@dataclass(frozen=True)
class VerifyOptions:
    dtype: str = "float32"
    device: str = "cpu"
    backend: str = "torch"
    rtol: float | None = None  # None: the dtype's tolerance (`hf2kh.verify.compare.TOLERANCES`)
    stream: bool = False  # hold one block at a time on both sides (`hf2kh.verify.stream`)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise BadOptionError(
                f"--backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}"
            )
        if self.rtol is not None and not self.rtol > 0:
            raise BadOptionError(f"--rtol must be a positive number, not {self.rtol}")


@dataclass(frozen=True)
class PortFiles:
    """Where a port's parts are: the directory holding the generated package `name`, the preset,
    the model IR."""

    parent: Path
    name: str
    preset: Path
    model_ir: Path


@dataclass(frozen=True)
class Reference:
    """The checkpoint the port is compared with: a local directory in HF layout."""

    path: Path
    trust_remote_code: bool = False


def current_backend() -> str:
    import keras

    return keras.backend.backend()


def verify(files: PortFiles, reference: Reference, options: VerifyOptions, loaded=None):
    """Verify the port in `files` against `reference`; `loaded` (HFSide) saves loading the HF
    model again when this process already has it. Returns a `VerifyReport`."""
    if options.backend != current_backend():
        return verify_in_child(files, reference, options)
    from hf2kh.ir.serialize import from_dict
    from hf2kh.port import import_generated

    ir = from_dict(json.loads(files.model_ir.read_text()))
    blocks = [ir.block_path(i) for i in range(ir.num_layers)]
    hf = loaded or load_hf_side(reference, options, blocks)
    module = import_generated(files.parent, files.name)
    return verify_loaded(module, ir, files, hf, options)


@dataclass(frozen=True)
class HFSide:
    model: object
    tokenizer: object
    tokenizer_spec: object


def load_hf_side(
    reference: Reference, options: VerifyOptions, block_paths: list[str] = ()
) -> HFSide:
    """The HF model, its tokenizer and tokenizer spec; streamed (`block_paths` are the blocks
    read one at a time) with `options.stream`."""
    from hf2kh.generate.tokenizer import read_tokenizer_spec
    from hf2kh.port import load_hf_model, load_hf_tokenizer
    from hf2kh.source import load_config, open_checkpoint

    ckpt = open_checkpoint(str(reference.path), trust_remote_code=reference.trust_remote_code)
    config = load_config(ckpt)
    if options.stream:
        from hf2kh.verify.stream import streamed_hf_model

        model = streamed_hf_model(ckpt, config, block_paths, options.device)
    else:
        model = load_hf_model(ckpt, config, options.device, reference.trust_remote_code)
    return HFSide(model, load_hf_tokenizer(ckpt), read_tokenizer_spec(ckpt.path))


def verify_loaded(module, ir, files: PortFiles, hf: HFSide, options: VerifyOptions):
    """Compare the generated package (imported as `module`) with its preset against HF."""
    import keras_hub

    from hf2kh.generate.tokenizer import tokenizer_test_corpus
    from hf2kh.verify.decoder import verify_decoder
    from hf2kh.verify.environment import environment
    from hf2kh.verify.sublayers import sublayer_points
    from hf2kh.verify.terminal import native_stderr_silenced

    if options.stream and ir.head.task.value != "causal_lm":
        raise BadOptionError(
            f"streamed verification covers causal LMs; this port is a {ir.head.task.value}"
        )
    if ir.head.task.value != "causal_lm":  # encoders: hf2kh.verify.encoder
        from hf2kh.verify.encoder import verify_masked_lm_port

        report = verify_masked_lm_port(
            module,
            ir,
            str(files.preset),
            hf.model,
            hf.tokenizer,
            hf.tokenizer_spec,
            dtype=options.dtype,
            device=options.device,
            rtol=options.rtol,
        )
        report.environment = environment(options)
        return report
    if options.stream:
        from hf2kh.verify.stream import streamed_causal_lm

        causal_lm = streamed_causal_lm(files.preset)
    else:
        with native_stderr_silenced():  # sentencepiece logs loading its model at INFO level
            causal_lm = keras_hub.models.CausalLM.from_preset(str(files.preset))
    expected_cls = getattr(module, f"{ir.class_prefix}CausalLM")
    if type(causal_lm) is not expected_cls:
        raise VerificationFailed(
            f"the preset loads as {type(causal_lm).__name__}, not {expected_cls.__name__}"
        )
    blocks = [ir.block_path(i) for i in range(ir.num_layers)]
    report = verify_decoder(
        hf.model,
        causal_lm,
        blocks,
        hf.tokenizer,
        tokenizer_test_corpus(hf.tokenizer_spec.special_tokens),
        name=ir.name,
        dtype=options.dtype,
        device=options.device,
        rtol=options.rtol,
        sublayers=sublayer_points(ir, files.parent / files.name / "weight_map.json"),
        **_streamed_settings(options.stream),
    )
    report.environment = environment(options)
    if options.stream:
        from hf2kh.verify.stream import GREEDY_SKIPPED

        report.notes.append(GREEDY_SKIPPED)
    return report


def _streamed_settings(stream: bool) -> dict:
    """A streamed verification's batch (one, short) and no greedy generation."""
    if not stream:
        return {}
    from hf2kh.verify.stream import STREAMED_CASES

    return {"cases": list(STREAMED_CASES), "greedy": False}


def report_fields(verification) -> dict:
    """The verification's part of a port's report.json."""
    data = verification.to_json()
    return {
        "checks": data["checks"],
        "first_divergence": verification.first_divergence,
        "passed": verification.passed,
        "environment": verification.environment,
        "notes": verification.notes,  # what was not compared (streamed: greedy generation)
    }


def verify_in_child(files: PortFiles, reference: Reference, options: VerifyOptions):
    """Run `verify` in a fresh interpreter with `KERAS_BACKEND=options.backend`."""
    from hf2kh.verify.report import VerifyReport
    from hf2kh.verify.terminal import quiet_env

    with tempfile.TemporaryDirectory(prefix="hf2kh-verify-") as tmp:
        request = Path(tmp) / "request.json"
        answer = Path(tmp) / "report.json"
        request.write_text(
            json.dumps(
                {
                    "files": {k: str(v) for k, v in asdict(files).items()},
                    "reference": {
                        k: str(v) if isinstance(v, Path) else v
                        for k, v in asdict(reference).items()
                    },
                    "options": asdict(options),
                    "answer": str(answer),
                }
            )
        )
        env = quiet_env({**os.environ, "KERAS_BACKEND": options.backend})
        try:
            result = subprocess.run(
                [sys.executable, "-m", "hf2kh.verify.child", str(request)],
                env=env,
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise Hf2khError(
                f"verification on the {options.backend} backend took over {CHILD_TIMEOUT_S} s"
            ) from exc
        if result.returncode != 0 or not answer.exists():
            raise ChildFailed(options.backend, result.returncode, result.stderr)
        return VerifyReport.from_json(json.loads(answer.read_text()))


class ChildFailed(Hf2khError):
    """The child verification ended with an error: its own `error:` line and exit code."""

    def __init__(self, backend: str, code: int, stderr: str):
        lines = [line for line in stderr.strip().splitlines() if line.startswith("error: ")]
        last = (
            lines[-1].removeprefix("error: ")
            if lines
            else (stderr.strip().splitlines() or ["(no output)"])[-1]
        )
        super().__init__(f"verification on the {backend} backend: {last}")
        self.exit_code = code if code in (1, 2, 3) else 3
