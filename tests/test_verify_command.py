"""`hf2kh verify <port-dir> [<repo-or-dir>]`: re-checking an existing port, on the shared llama
port (conftest `ported`), copied so that each test may change it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import h5py
import numpy as np
import pytest

from tests.fixtures.cli import run_cli
from tests.fixtures.factory import build_fixture


@pytest.fixture
def llama_port(ported, tmp_path) -> Path:
    """A private copy of the shared llama port (whose checkpoint stays where it was built)."""
    port = ported("llama")
    assert port.cli.exit_code == 0, port.cli.describe()
    copy = tmp_path / "llama port"
    shutil.copytree(port.out, copy)
    return copy


def _checks(port_dir: Path, group: str) -> dict[str, dict]:
    report = json.loads((port_dir / "report.json").read_text())
    return {c["name"]: c for c in report["checks"] if c["group"] == group}


def test_verify_rechecks_a_port_against_the_checkpoint_it_records(llama_port, hf_fixture):
    junit = llama_port.parent / "verify.xml"
    run = run_cli("verify", llama_port, "--junit", junit)
    assert run.exit_code == 0, run.describe()
    assert run.stderr == ""
    assert "verification PASSED" in run.stdout
    report = json.loads((llama_port / "report.json").read_text())
    assert report["passed"] is True
    assert report["verified_against"]["repo"] == str(hf_fixture("llama"))
    groups = {c["group"] for c in report["checks"]}
    assert {"layers", "blocks", "logits", "generation", "tokenizer"} <= groups
    env = report["environment"]
    assert env["keras_backend"] == "torch" and env["hf_backend"] == "torch"
    assert env["dtype"] == "float32" and env["device"] == "cpu"
    assert env["tolerance"] == 1e-5 and env["tolerance_source"] == "float32 default"
    assert {"torch", "transformers", "keras", "keras-hub"} <= set(env["versions"])
    assert env["seeds"] == {"inputs": [0, 1, 2], "greedy_prompts": 99}
    assert env["threads"]["torch"] >= 1 and set(env["tf32"]) == {"matmul", "cudnn"}
    suite = ET.parse(junit).getroot()
    assert int(suite.get("tests")) == len(report["checks"]) and suite.get("failures") == "0"


def test_rtol_overrides_the_tolerance(llama_port):
    """The exact port's float32 errors are ~1e-6: a 1e-9 tolerance must fail it."""
    run = run_cli("verify", llama_port, "--rtol", "1e-9")
    assert run.exit_code == 1, run.describe()
    assert run.error_lines and run.error_lines[0].startswith("error: verification failed: ")
    report = json.loads((llama_port / "report.json").read_text())
    assert report["environment"]["tolerance"] == 1e-9
    assert report["environment"]["tolerance_source"] == "--rtol"
    assert not _checks(llama_port, "logits")["logits"]["passed"]


def test_verify_against_another_checkpoint(llama_port, tmp_path):
    """The same architecture with other weights (another seed): the port must not pass."""
    other = build_fixture("llama", tmp_path / "other llama", seed=1)
    run = run_cli("verify", llama_port, other)
    assert run.exit_code == 1, run.describe()
    assert len(run.error_lines) == 1
    report = json.loads((llama_port / "report.json").read_text())
    assert report["verified_against"]["repo"] == str(other)
    assert report["passed"] is False


@pytest.mark.parametrize("args", [("--backend", "mxnet"), ("--rtol", "0")])
def test_bad_options_exit_2(llama_port, args):
    run = run_cli("verify", llama_port, *args)
    assert run.exit_code == 2, run.describe()
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: --")


def test_a_directory_that_is_not_a_port_exits_2(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    run = run_cli("verify", tmp_path)
    assert run.exit_code == 2
    assert run.stderr == f"error: {tmp_path} is not an hf2kh port (no .hf2kh-port marker)\n"


# ----------------------------------------------------------------------------------------------
# Done when (issue 9): a corrupted weight and a changed norm epsilon are named by block and
# sublayer, by HF path and Keras path, end to end and block alone.
# ----------------------------------------------------------------------------------------------


def _decoder_block_group(weights: h5py.File, index: int) -> str:
    """The h5 group of the index-th decoder block (Keras names them `<class>`, `<class>_1`...)."""
    names = sorted(
        (n for n in weights["layers"] if "feedforward_output_dense" in weights["layers"][n]),
        key=lambda n: (len(n), n),
    )
    return f"layers/{names[index]}"


def test_a_corrupted_weight_is_named_by_block_and_sublayer(llama_port):
    with h5py.File(llama_port / "preset" / "model.weights.h5", "r+") as weights:
        kernel = weights[f"{_decoder_block_group(weights, 1)}/feedforward_output_dense/vars/0"]
        value = np.array(kernel)
        value[3, 5] += 0.5  # one element of block 1's MLP output projection
        kernel[...] = value
    run = run_cli("verify", llama_port)
    assert run.exit_code == 1, run.describe()
    assert run.error_lines[0].startswith(
        "error: verification failed: transformer_layer_1 (HF model.layers.1): wrong on its own "
        "inputs too"
    )
    assert "transformer_layer_1/feedforward_output_dense" in run.error_lines[0]
    assert "model.layers.1.mlp.down_proj" in run.error_lines[0]
    located = _checks(llama_port, "sublayers")
    assert set(located) == {
        "transformer_layer_1/feedforward_output_dense (end to end)",
        "transformer_layer_1/feedforward_output_dense (alone)",
    }
    for check in located.values():
        assert not check["passed"]
        assert check["detail"].startswith("HF model.layers.1.mlp.down_proj: ")
        assert check["detail"].endswith("the error starts here")
        assert check["worst_index"][-1] == 5  # the corrupted output column
    layers = _checks(llama_port, "layers")
    assert layers["transformer_layer_0"]["passed"] and not layers["transformer_layer_1"]["passed"]


def _set_everywhere(data, key: str, value, found: list):
    """Set `key` to `value` in every dict nested in `data`, recording the old values."""
    if isinstance(data, dict):
        for k, v in data.items():
            if k == key:
                found.append(v)
                data[k] = value
            else:
                _set_everywhere(v, key, value, found)
    elif isinstance(data, list):
        for item in data:
            _set_everywhere(item, key, value, found)


def test_a_changed_norm_epsilon_is_named_by_block_and_sublayer(llama_port):
    """The backbone's config is in the preset twice (config.json, and task.json's backbone,
    which is what `CausalLM.from_preset` reads): change the epsilon in both."""
    for name in ("config.json", "task.json"):
        path = llama_port / "preset" / name
        data, found = json.loads(path.read_text()), []
        _set_everywhere(data, "layer_norm_epsilon", 1e-1, found)
        assert found == [1e-5], name  # the fixture's non-default value
        path.write_text(json.dumps(data))
    run = run_cli("verify", llama_port)
    assert run.exit_code == 1, run.describe()
    assert "transformer_layer_0 (HF model.layers.0)" in run.error_lines[0]
    located = _checks(llama_port, "sublayers")
    for mode in ("end to end", "alone"):
        check = located[f"transformer_layer_0/self_attention_layernorm ({mode})"]
        assert check["detail"].startswith("HF model.layers.0.input_layernorm: ")
        assert not check["passed"]


def test_port_refuses_a_bad_backend_before_writing_anything(hf_fixture, tmp_path):
    out = tmp_path / "out"
    run = run_cli("port", hf_fixture("llama"), "--out", out, "--verify", "--backend", "mxnet")
    assert run.exit_code == 2, run.describe()
    assert run.stderr == "error: --backend must be one of torch, jax, tensorflow, not 'mxnet'\n"
    assert not out.exists()


def test_module_outputs_that_are_not_the_same_tensor_do_not_localize(ported, tmp_path):
    """BLOOM's HF attention module returns its output plus the residual, the Keras attention
    sublayer does not: that point differs even in the passing block 0, so a corrupted MLP
    projection of block 1 is named, not the attention before it."""
    port = ported("bloom")
    assert port.cli.exit_code == 0, port.cli.describe()
    port_dir = tmp_path / "bloom port"
    shutil.copytree(port.out, port_dir)
    with h5py.File(port_dir / "preset" / "model.weights.h5", "r+") as weights:
        kernel = weights[f"{_decoder_block_group(weights, 1)}/feedforward_output_dense/vars/0"]
        value = np.array(kernel)
        value[3, 5] += 0.5
        kernel[...] = value
    run = run_cli("verify", port_dir)
    assert run.exit_code == 1, run.describe()
    located = _checks(port_dir, "sublayers")
    assert set(located) == {
        "transformer_layer_1/feedforward_output_dense (end to end)",
        "transformer_layer_1/feedforward_output_dense (alone)",
    }
    for check in located.values():
        assert check["detail"].startswith("HF transformer.h.1.mlp.dense_4h_to_h: ")


def test_a_bfloat16_port_is_verified_in_bfloat16_unless_told_otherwise(ported, tmp_path):
    """`hf2kh verify` reads the dtype the preset was converted in: the bfloat16 port passes with
    bfloat16's tolerance, and fails when held to float32's (its errors are of bfloat16 size)."""
    port = ported("llama", "--dtype", "bfloat16")
    assert port.cli.exit_code == 0, port.cli.describe()
    port_dir = tmp_path / "bf16 port"
    shutil.copytree(port.out, port_dir)
    run = run_cli("verify", port_dir)
    assert run.exit_code == 0, run.describe()
    report = json.loads((port_dir / "report.json").read_text())
    assert report["environment"]["dtype"] == "bfloat16"
    assert report["environment"]["tolerance_source"] == "bfloat16 default"
    strict = run_cli("verify", port_dir, "--dtype", "float32")
    assert strict.exit_code == 1, strict.describe()
    assert not _checks(port_dir, "logits")["logits"]["passed"]
