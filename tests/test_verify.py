"""Verification finds and localizes a wrong port, and writes its reports."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import torch

from hf2kh.port import import_generated
from hf2kh.verify.compare import TOLERANCES, compare
from hf2kh.verify.decoder import (
    GreedyRow,
    _greedy_check,
    is_near_tie,
    judge_greedy,
    verify_decoder,
)


def _load(ported, hf_fixture):
    """The shared llama port (conftest `ported`): a fresh Keras model from its preset, and HF."""
    import keras_hub
    from transformers import AutoModelForCausalLM

    port = ported("llama")
    assert port.cli.exit_code == 0, port.cli.describe()
    import_generated(port.out, port.package)
    causal_lm = keras_hub.models.CausalLM.from_preset(str(port.out / "preset"))
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


def test_a_wrong_block_is_named_and_blamed(ported, hf_fixture):
    causal_lm, hf, blocks = _load(ported, hf_fixture)
    _perturb_norm(causal_lm, 1)
    report = verify_decoder(hf, causal_lm, blocks, None, [], name="tiny_llama", new_tokens=4)
    assert not report.passed
    by_name = {c.name: c for c in report.checks}
    assert by_name["transformer_layer_0"].passed
    assert not by_name["transformer_layer_1"].passed
    assert not by_name["transformer_layer_1 alone"].passed
    assert "transformer_layer_1" in report.first_divergence
    assert "model.layers.1" in report.first_divergence
    assert "at fault" in report.first_divergence


def test_accumulated_error_is_told_apart_from_a_wrong_block(ported, hf_fixture):
    causal_lm, hf, blocks = _load(ported, hf_fixture)
    _perturb_norm(causal_lm, 0)
    report = verify_decoder(hf, causal_lm, blocks, None, [], name="tiny_llama", new_tokens=4)
    by_name = {c.name: c for c in report.checks}
    assert not by_name["transformer_layer_0"].passed
    # Layer 1 is fine on HF's own inputs: its end-to-end error only accumulates from layer 0.
    assert by_name["transformer_layer_1 alone"].passed
    assert report.first_divergence.startswith("transformer_layer_0")


def test_reports_json_and_junit(ported, hf_fixture, tmp_path):
    causal_lm, hf, blocks = _load(ported, hf_fixture)
    _perturb_norm(causal_lm, 1)
    report = verify_decoder(hf, causal_lm, blocks, None, [], name="tiny_llama", new_tokens=4)
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


# ----------------------------------------------------------------------------------------------
# Precision: an error of bfloat16 size is caught in float32
# ----------------------------------------------------------------------------------------------


def test_one_weight_rounded_to_bfloat16_fails_the_float32_check(ported, hf_fixture):
    """Round one weight of the converted model to bfloat16 (a relative error <= 2^-8 per
    element): the float32 verification fails at that block, on its own inputs too; the same model
    judged with the bfloat16 tolerance passes, so the error really is of bfloat16 size."""
    import keras

    causal_lm, hf, blocks = _load(ported, hf_fixture)
    (kernel,) = [
        v
        for v in causal_lm.backbone.transformer_layers[1].weights
        if v.path.endswith("feedforward_output_dense/kernel")
    ]
    before = keras.ops.convert_to_numpy(kernel)
    rounded = torch.from_numpy(before).to(torch.bfloat16).float().numpy()
    relative = np.abs(rounded - before) / np.abs(before).clip(1e-30)
    assert 0 < relative.max() <= 2**-8  # bfloat16 unit roundoff
    kernel.assign(rounded)

    report = verify_decoder(hf, causal_lm, blocks, None, [], name="tiny_llama", new_tokens=4)
    by_name = {c.name: c for c in report.checks}
    assert by_name["transformer_layer_0"].passed
    assert not by_name["transformer_layer_1"].passed
    assert not by_name["transformer_layer_1 alone"].passed
    assert not by_name["logits"].passed
    assert "transformer_layer_1" in report.first_divergence
    assert not report.passed

    lenient = verify_decoder(
        hf, causal_lm, blocks, None, [], name="tiny_llama", dtype="bfloat16", new_tokens=4
    )
    assert all(c.passed for c in lenient.checks if c.group in ("layers", "blocks", "logits"))


# ----------------------------------------------------------------------------------------------
# Greedy generation: token ids, near ties (constructed logits)
# ----------------------------------------------------------------------------------------------

BF16 = TOLERANCES["bfloat16"]
F32 = TOLERANCES["float32"]


def _row(got, expected, margin_at_diff, scale=1.0, margin=5.0):
    margins = [margin] * len(expected)
    first = next((i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b), None)
    if first is not None:
        margins[first] = margin_at_diff
    return GreedyRow(list(got), list(expected), margins, [scale] * len(expected))


def test_near_tie_rule():
    # within NEAR_TIE_FACTOR x tolerance x RMS of the step's logits, in reduced precision only
    assert is_near_tie(0.01, 1.0, BF16)
    assert is_near_tie(0.39, 1.0, BF16) and not is_near_tie(0.41, 1.0, BF16)
    assert is_near_tie(3.9, 10.0, BF16) and not is_near_tie(4.1, 10.0, BF16)
    assert is_near_tie(0.07, 1.0, TOLERANCES["float16"])
    assert not is_near_tie(0.09, 1.0, TOLERANCES["float16"])
    assert not is_near_tie(0.0, 1.0, F32)  # float32: greedy must be identical


def test_greedy_identical_passes_and_reports_the_smallest_margin():
    check = judge_greedy([_row([1, 2, 3], [1, 2, 3], 0.0, margin=0.25)], F32, "g")
    assert check.passed and check.group == "generation"
    assert check.detail == "identical; smallest top-2 margin 2.50e-01"


def test_greedy_difference_at_a_near_tie_is_reported_not_failed():
    rows = [_row([1, 2, 3], [1, 2, 3], 0.0), _row([4, 5, 9, 9], [4, 5, 6, 7], 1e-3)]
    check = judge_greedy(rows, BF16, "g")
    assert check.passed
    assert "row 1 token 2 differs: 9 vs HF 6, HF top-2 margin 1.00e-03" in check.detail
    assert "(a near tie at this precision)" in check.detail
    # the same difference fails in float32, and at a large margin in bfloat16
    assert not judge_greedy(rows, F32, "g").passed
    assert "near tie" not in judge_greedy(rows, F32, "g").detail
    wide = [rows[0], _row([4, 5, 9, 9], [4, 5, 6, 7], 2.0)]
    check = judge_greedy(wide, BF16, "g")
    assert not check.passed and "row 1 token 2 differs" in check.detail
    assert "near tie" not in check.detail


def test_greedy_one_bad_row_fails_the_batch():
    rows = [_row([4, 5, 9], [4, 5, 6], 1e-3), _row([1, 8], [1, 2], 3.0)]
    check = judge_greedy(rows, BF16, "g")
    assert not check.passed
    assert "row 0 token 2" in check.detail and "row 1 token 1" in check.detail


class _TableLM(torch.nn.Module):
    """A stand-in HF model with constructed logits: after token t the best next token is
    (t + 1) % V, the runner-up (t + 2) % V at `margin` below it; the logits' RMS is about 1."""

    def __init__(self, vocab: int, margin: float):
        super().__init__()
        self.vocab, self.margin = vocab, margin
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids):
        last = input_ids % self.vocab
        logits = torch.full((*input_ids.shape, self.vocab), -1.0)
        logits.scatter_(-1, ((last + 1) % self.vocab)[..., None], 1.0)
        logits.scatter_(-1, ((last + 2) % self.vocab)[..., None], 1.0 - self.margin)
        return type("Out", (), {"logits": logits})()


class _ScriptedCausalLM:
    """A stand-in Keras CausalLM whose greedy output follows the table, except that `row`
    takes the runner-up at generated step `step`."""

    def __init__(self, vocab: int, row: int | None, step: int):
        self.vocab, self.row, self.step = vocab, row, step
        self.preprocessor = "the preprocessor"
        self.backbone = type("Backbone", (), {"max_sequence_length": None})()
        self.seen = None

    def compile(self, sampler):
        assert sampler == "greedy"

    def generate(self, inputs, stop_token_ids):
        assert self.preprocessor is None and stop_token_ids is None
        ids, mask = np.array(inputs["token_ids"]), np.array(inputs["padding_mask"])
        self.seen = (ids.copy(), mask.copy())
        for r in range(ids.shape[0]):
            n = int(mask[r].sum())
            for i in range(n, ids.shape[1]):
                runner_up = r == self.row and i - n == self.step
                ids[r, i] = (ids[r, i - 1] + (2 if runner_up else 1)) % self.vocab
        return {"token_ids": ids}


@pytest.mark.parametrize(
    ("margin", "tolerance", "row", "passed", "near"),
    [
        (0.5, F32, None, True, False),  # identical
        (1e-3, BF16, 2, True, True),  # a near tie in bfloat16: reported
        (1e-3, F32, 2, False, False),  # the same in float32: failed
        (1.5, BF16, 1, False, False),  # a clear margin: failed in any dtype
    ],
)
def test_greedy_check_with_constructed_logits(margin, tolerance, row, passed, near):
    vocab = 50
    hf = _TableLM(vocab, margin)
    lm = _ScriptedCausalLM(vocab, row, step=3)
    check = _greedy_check(hf, lm, vocab, new_tokens=6, tolerance=tolerance)
    assert check.passed is passed, check.detail
    assert ("near tie" in check.detail) is near
    assert lm.preprocessor == "the preprocessor"  # restored
    ids, mask = lm.seen
    lengths = mask.sum(axis=1).tolist()
    assert len(set(lengths)) == len(lengths) > 1  # one batch, prompts of different lengths
    if row is not None:
        assert f"row {row} token 3 differs" in check.detail
        assert f"HF top-2 margin {margin:.2e}" in check.detail
