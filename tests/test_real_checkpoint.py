"""A real pretrained decoder, end to end: SmolLM2-135M-Instruct (Llama architecture, 30 layers,
GQA 9/3, head_dim 64, rope theta 1e5, tied head, real byte-level BPE tokenizer).

Random tiny fixtures hide what real activations expose (massive activations, real token
statistics); this ports the real thing, verifies it, and checks the user's path on its own.
"""

from __future__ import annotations

import pytest
import torch

from hf2kh.port import PortOptions, import_generated, run_port
from tests.fixtures.real import smollm2_checkpoint


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    checkpoint = smollm2_checkpoint(tmp_path_factory.mktemp("smollm2") / "ckpt")
    out = tmp_path_factory.mktemp("smollm2_port") / "out"
    result = run_port(
        PortOptions(repo=str(checkpoint), out=out, name="smollm2", verify=True),
        progress=lambda line: None,
    )
    return checkpoint, out, result


def test_port_verifies(smollm2):
    _, _, result = smollm2
    report = result.verification
    failed = [(c.name, c.detail) for c in report.checks if not c.passed]
    assert report.passed, failed
    by_group = {c.group for c in report.checks}
    assert {"layers", "blocks", "logits", "generation", "tokenizer"} <= by_group
    blocks = [c for c in report.checks if c.group == "blocks"]
    assert len(blocks) == 30 and all(c.passed for c in blocks)
    assert result.weights_mapped == result.weights_total


def test_recognized_spec(smollm2):
    _, out, _ = smollm2
    backbone = (out / "smollm2" / "smollm2_backbone.py").read_text()
    assert "tie_weights=True" in backbone
    convert = (out / "smollm2" / "convert_smollm2_checkpoints.py").read_text()
    for expected in (
        '"num_key_value_heads": 3',
        '"head_dim": 64',
        '"rope_max_wavelength": 100000.0',
    ):
        assert expected in convert


def test_text_generation_matches_hf(smollm2):
    import keras_hub
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint, out, _ = smollm2
    import_generated(out, "smollm2")
    causal_lm = keras_hub.models.CausalLM.from_preset(str(out / "preset"))
    causal_lm.compile(sampler="greedy")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    hf = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    prompt = "The capital of France is"
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hf_ids = hf.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False
        )
    expected = tokenizer.decode(hf_ids[0], skip_special_tokens=True)
    text = causal_lm.generate(prompt, max_length=ids.shape[1] + 10)
    assert text == expected
    assert "Paris" in text  # real weights, real answer
