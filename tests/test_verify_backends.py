"""The generated code is keras.ops only: ports verify on the jax and tensorflow backends too
(`hf2kh verify --backend`, the Keras side in a child process, the HF side on torch), and nothing
from TensorFlow or absl reaches the terminal of a real `hf2kh` process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.cli import run_cli

# mistral: a sliding window; bloom: a fused q/k/v (per head) and ALiBi; bert: an encoder
# (bidirectional attention with the padding mask, post-norm, token types, masked-LM head);
# glm4_moe: a mixture of experts (top-k, group-limited choice, a correction bias, a shared
# expert) beside a dense first layer; modernbert: rope in an encoder, bidirectional sliding
# windows, a first layer without its attention norm, a bias-free masked-LM head; albert: one
# block layer applied at every depth (each call's output compared); eurobert: a masked-LM head
# that gathers the masked positions in the task and calls the backbone's untied LM head.
# The last three run with `-m slow` only: each backend run costs 15-30 s and the default suite is
# near its time budget; the first four cover decoders, encoders, fused and fused-kernel attention.
SLOW = ("glm4_moe", "albert", "eurobert")
FIXTURES = [
    pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
    for name in ("mistral", "bloom", "bert", "modernbert", *SLOW)
]
ENCODERS = ("bert", "modernbert", "albert", "eurobert")  # no generation to compare


def _console_script() -> str:
    script = Path(sys.executable).with_name("hf2kh")
    return str(script) if script.exists() else (shutil.which("hf2kh") or "hf2kh")


def _copy(ported, fixture: str, tmp_path: Path) -> Path:
    port = ported(fixture)
    assert port.cli.exit_code == 0, port.cli.describe()
    copy = tmp_path / f"{fixture} port"
    shutil.copytree(port.out, copy)
    return copy


@pytest.mark.parametrize("fixture", FIXTURES)
def test_verifies_on_jax(ported, tmp_path, fixture):
    port_dir = _copy(ported, fixture, tmp_path)
    run = run_cli("verify", port_dir, "--backend", "jax")
    assert run.exit_code == 0, run.describe()
    report = json.loads((port_dir / "report.json").read_text())
    assert report["passed"] is True
    assert report["environment"]["keras_backend"] == "jax"
    groups = {c["group"] for c in report["checks"]}
    assert {"layers", "blocks", "logits", "tokenizer"} <= groups
    assert ("generation" in groups) is (fixture not in ENCODERS)
    assert all(c["passed"] for c in report["checks"])


@pytest.mark.parametrize("fixture", FIXTURES)
def test_verifies_on_tensorflow_with_a_quiet_terminal(ported, tmp_path, fixture):
    """Through the console script in a fresh process: TensorFlow is imported by keras_hub in this
    process and is the backend of the child; stderr stays empty."""
    port_dir = _copy(ported, fixture, tmp_path)
    env = {**os.environ, "KERAS_BACKEND": "torch", "COLUMNS": "80"}
    for key in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY", "ABSL_MIN_LOG_LEVEL"):
        env.pop(key, None)  # what a user's shell has: nothing set
    proc = subprocess.run(
        [_console_script(), "verify", str(port_dir), "--backend", "tensorflow"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stderr == ""
    assert "verification PASSED" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
    report = json.loads((port_dir / "report.json").read_text())
    assert report["passed"] is True
    assert report["environment"]["keras_backend"] == "tensorflow"


def test_importing_tensorflow_under_the_cli_is_silent():
    """The CLI's guard keeps TensorFlow's native import lines (cudart_stub, oneDNN, absl's
    'All log messages before absl::InitializeLog()') off fd 2; without it they appear."""
    code = (
        "import sys; from hf2kh.verify.terminal import silence_native_logs\n"
        "if sys.argv[1] == 'guarded': silence_native_logs()\n"
        "import tensorflow\n"
        "print('still here', file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "ABSL", "GRPC"))}
    run = [sys.executable, "-c", code]
    guarded = subprocess.run([*run, "guarded"], env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert guarded.returncode == 0 and guarded.stderr == "still here\n", guarded.stderr
    bare = subprocess.run([*run, "bare"], env=env, capture_output=True, text=True, timeout=300)
    assert bare.returncode == 0 and "still here" in bare.stderr
    assert bare.stderr != "still here\n"  # TensorFlow does log when nothing stops it
