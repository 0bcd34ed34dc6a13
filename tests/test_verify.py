"""Verification finds and localizes a wrong port, and writes its reports."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import torch

from hf2kh.port import PortOptions, import_generated, run_port
from hf2kh.verify.compare import compare
from hf2kh.verify.decoder import verify_decoder


@pytest.fixture(scope="module")
def llama_port(hf_fixture, tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "port"
    run_port(
        PortOptions(repo=str(hf_fixture("llama")), out=out, name="verify_llama"),
        progress=lambda s: None,
    )
    return out


def _load(llama_port, hf_fixture):
    import keras_hub
    from transformers import AutoModelForCausalLM

    import_generated(llama_port, "verify_llama")
    causal_lm = keras_hub.models.CausalLM.from_preset(str(llama_port / "preset"))
    hf = AutoModelForCausalLM.from_pretrained(
        hf_fixture("llama"), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    blocks = [f"model.layers.{i}" for i in range(hf.config.num_hidden_layers)]
    return causal_lm, hf, blocks


def _perturb_norm(causal_lm, layer: int) -> None:
    norm = causal_lm.backbone.transformer_layers[layer].self_attention_layernorm
    norm.scale.assign(
        norm.scale.numpy() * 1.05 if hasattr(norm.scale, "numpy") else norm.scale * 1.05
    )


def test_a_wrong_block_is_named_and_blamed(llama_port, hf_fixture):
    causal_lm, hf, blocks = _load(llama_port, hf_fixture)
    _perturb_norm(causal_lm, 1)
    report = verify_decoder(hf, causal_lm, blocks, None, [], name="verify_llama", new_tokens=4)
    assert not report.passed
    by_name = {c.name: c for c in report.checks}
    assert by_name["transformer_layer_0"].passed
    assert not by_name["transformer_layer_1"].passed
    assert not by_name["transformer_layer_1 alone"].passed
    assert "transformer_layer_1" in report.first_divergence
    assert "model.layers.1" in report.first_divergence
    assert "at fault" in report.first_divergence


def test_accumulated_error_is_told_apart_from_a_wrong_block(llama_port, hf_fixture):
    causal_lm, hf, blocks = _load(llama_port, hf_fixture)
    _perturb_norm(causal_lm, 0)
    report = verify_decoder(hf, causal_lm, blocks, None, [], name="verify_llama", new_tokens=4)
    by_name = {c.name: c for c in report.checks}
    assert not by_name["transformer_layer_0"].passed
    # Layer 1 is fine on HF's own inputs: its end-to-end error only accumulates from layer 0.
    assert by_name["transformer_layer_1 alone"].passed
    assert report.first_divergence.startswith("transformer_layer_0")


def test_reports_json_and_junit(llama_port, hf_fixture, tmp_path):
    causal_lm, hf, blocks = _load(llama_port, hf_fixture)
    _perturb_norm(causal_lm, 1)
    report = verify_decoder(hf, causal_lm, blocks, None, [], name="verify_llama", new_tokens=4)
    report.write_json(tmp_path / "r.json")
    report.write_junit(tmp_path / "r.xml")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] is False and data["first_divergence"]
    suite = ET.parse(tmp_path / "r.xml").getroot()
    assert int(suite.get("tests")) == len(report.checks)
    failed = {
        case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None
    }
    assert failed == {c.name for c in report.checks if not c.passed}
    assert "transformer_layer_1" in failed


def test_compare_uses_only_valid_positions():
    reference = np.ones((2, 3, 4))
    candidate = reference.copy()
    candidate[1, 2] = 100.0  # a padded position
    valid = np.array([[1, 1, 1], [1, 1, 0]], bool)
    assert compare("x", reference, candidate, valid).passed
    assert not compare("x", reference, candidate).passed
    result = compare("x", reference, candidate)
    assert result.worst_index[:2] == (1, 2)


def test_cli_exits_1_when_verification_fails(monkeypatch, capfd, tmp_path):
    """The CLI maps a failed verification to exit code 1 with its first divergence."""
    import sys

    import hf2kh.port
    from hf2kh.cli import main
    from hf2kh.port import PortResult
    from hf2kh.verify.report import Check, VerifyReport

    report = VerifyReport(model="m", dtype="float32", device="cpu")
    report.checks = [Check("logits", "logits", False, "off", 1.0, 1.0)]
    report.first_divergence = "logits: every block matches"
    result = PortResult(
        "m", tmp_path / "m", tmp_path / "preset", tmp_path / "report.json", [], 1, 1
    )
    result.verification = report
    monkeypatch.setattr(hf2kh.port, "run_port", lambda options, progress: result)
    monkeypatch.setattr(
        sys, "argv", ["hf2kh", "port", "x", "--out", str(tmp_path / "o"), "--verify"]
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capfd.readouterr().err
    assert "error: verification failed: logits: every block matches" in err
