"""BLOOM and Falcon (old and new decoder architecture) on the model IR: each fixture ports and
verifies; its IR says what the config sets (ALiBi slopes, the embedding LayerNorm, the residual
BLOOM adds inside its attention and MLP read as block steps, the fused q/k/v row layouts:
per head, multi-query blocked, grouped; the score scale of `baddbmm`'s alpha and of an in-place
`div_`); the same IR comes out with every name blanked; a wrong ALiBi reference is refused, not
ported; the generated package's own tests and ruff pass."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoConfig
from transformers.models.bloom import modeling_bloom

from hf2kh.components import alibi as alibi_component
from hf2kh.errors import UnsupportedModelError
from hf2kh.generate.render import RUFF_SETTINGS
from hf2kh.inspect.build import build_graph_and_model
from hf2kh.ir import Alibi, NormKind, QkvLayout, from_dict, to_dict
from hf2kh.recognize import recognize_model
from hf2kh.recognize.model import _step_text

FAMILIES = ["bloom", "falcon", "falcon_new"]

PRE_NORM = [
    "h = self_attention_layernorm(x)",
    "attention = self_attention(h)",
    "x = x + attention",
    "h = feedforward_layernorm(x)",
    "feedforward = feedforward(h)",
    "x = x + feedforward",
]


def _ir(port):
    return from_dict(json.loads((port.out / "model_ir.json").read_text()))


def _steps(ir, k=0):
    return [_step_text(s) for s in ir.block_types[k].steps]


def _recognized(path):
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    return recognize_model(graph, model, config, name="m", source="s", revision=None)


@pytest.mark.parametrize("name", FAMILIES)
def test_port_verifies(ported, name):
    port = ported(name)
    assert port.cli.exit_code == 0, port.cli.describe()
    report = port.report
    assert report["passed"] is True
    names = [c["name"] for c in report["checks"]]
    assert any("greedy" in n for n in names) and any("logits" in n for n in names), names
    assert any("tokenizer" in n for n in names), names
    assert all(c["passed"] for c in report["checks"])
    layers = [n for n in names if n.startswith("transformer_layer_") and "alone" not in n]
    assert len(layers) == _ir(port).num_layers


def test_bloom_ir(ported, hf_fixture):
    config = AutoConfig.from_pretrained(hf_fixture("bloom"))
    ir = _ir(ported("bloom"))
    a = ir.attention
    # ALiBi instead of rope or learned positions, 6 heads (not a power of two)
    assert a.alibi == Alibi() and a.rope is None and ir.stem.hf_positions is None
    assert a.num_query_heads == a.num_key_value_heads == config.n_head == 6
    # per-head fused rows [q_h | k_h | v_h], read on numbers (BLOOM splits a view, not the output)
    assert a.qkv_layout is QkvLayout.PER_HEAD
    assert a.query_bias and a.key_bias and a.value_bias and a.output_bias
    # the scale is baddbmm's alpha (inv_norm_factor), not a `scaling` attribute
    assert math.isclose(a.scale, a.head_dim**-0.5, rel_tol=1e-12)
    # LayerNorm on the word embeddings, as a stem component
    norm = ir.stem.embedding_norm
    assert ir.stem.hf_embedding_norm == "transformer.word_embeddings_layernorm"
    assert norm.kind is NormKind.LAYER and norm.bias and norm.epsilon == config.layer_norm_epsilon
    # BLOOM adds the residual inside BloomAttention and BloomMLP (dropout_add): plain adds here
    assert _steps(ir) == PRE_NORM
    backbone = (ported("bloom").out / "tiny_bloom" / "tiny_bloom_backbone.py").read_text()
    assert "x = self.embeddings_layernorm(x)" in backbone


@pytest.mark.parametrize("heads", [*range(1, 21), 24, 40, 112])
def test_alibi_slopes_match_transformers(heads):
    """The reference slopes (printed into generated packages) are BLOOM's, powers of two or not."""
    ours = torch.tensor(alibi_component.alibi_slopes(heads), dtype=torch.float32)
    theirs = modeling_bloom._get_alibi_slopes(heads, torch.device("cpu"))
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)


def test_alibi_slopes_are_the_papers_for_powers_of_two():
    for heads in (1, 2, 4, 8, 16, 32):
        start = 2 ** (-8 / heads)
        expected = [start ** (i + 1) for i in range(heads)]
        assert np.allclose(alibi_component.alibi_slopes(heads), expected, rtol=1e-12)


def test_generated_alibi_bias_matches_bloom(ported):
    """The generated attention's bias, with a cache offset, is HF's alibi tensor up to a
    per-query constant (which the softmax drops)."""
    port = ported("bloom")
    sys.path.insert(0, str(port.out))
    try:
        from tiny_bloom.tiny_bloom_attention import TinyBloomAttention
    finally:
        sys.path.remove(str(port.out))
    layer = TinyBloomAttention(num_query_heads=6, num_key_value_heads=6, head_dim=8)
    start, queries, keys = 3, 4, 7
    ours = np.asarray(layer._alibi_bias(queries, keys, start))  # (heads, query, key)
    mask = torch.ones(1, keys, dtype=torch.long)
    hf = modeling_bloom.build_alibi_tensor(mask, 6, torch.float32).reshape(6, keys).numpy()
    for q in range(queries):
        row = ours[:, q, : start + q + 1]
        ref = hf[:, : start + q + 1]
        np.testing.assert_allclose(row - row[:, -1:], ref - ref[:, -1:], rtol=1e-6, atol=1e-6)


def test_a_wrong_alibi_reference_is_refused(hf_fixture, monkeypatch):
    """The slopes are checked on numbers: with a reference that differs from what the model adds
    to its scores, the port stops (instead of porting a bias it does not compute)."""
    monkeypatch.setattr(
        alibi_component, "alibi_slopes", lambda n, max_bias=8.0: [0.5**k for k in range(n)]
    )
    with pytest.raises(UnsupportedModelError, match="bias added to its attention scores"):
        _recognized(hf_fixture("bloom"))


def test_falcon_ir(ported, hf_fixture):
    """Falcon-7B layout: multi-query rows [q_1..q_H | k | v] (blocked, one k/v head), one norm
    feeding the parallel attention and MLP, the scale an in-place `div_` by sqrt(head_dim)."""
    config = AutoConfig.from_pretrained(hf_fixture("falcon"))
    ir = _ir(ported("falcon"))
    a = ir.attention
    assert a.qkv_layout is QkvLayout.BLOCKED
    assert a.num_query_heads == config.num_attention_heads == 4 and a.num_key_value_heads == 1
    assert math.isclose(a.scale, a.head_dim**-0.5, rel_tol=1e-12)
    assert a.rope.theta == 20000.0 and a.alibi is None
    assert a.query_bias and a.output_bias
    assert _steps(ir) == [
        "h = self_attention_layernorm(x)",
        "attention = self_attention(h)",
        "feedforward = feedforward(h)",
        "branches = feedforward + attention",
        "x = x + branches",
    ]
    assert ir.stem.embedding_norm is None and ir.head.tied


def test_falcon_new_decoder_architecture_ir(ported, hf_fixture):
    """Falcon-40B layout: rows grouped per key/value head [q x 4 | k | v], two norms."""
    config = AutoConfig.from_pretrained(hf_fixture("falcon_new"))
    assert config.new_decoder_architecture and config.num_kv_heads == 2
    ir = _ir(ported("falcon_new"))
    a = ir.attention
    assert a.qkv_layout is QkvLayout.GROUPED
    assert (a.num_query_heads, a.num_key_value_heads, a.head_dim) == (8, 2, 8)
    assert not (a.query_bias or a.output_bias)
    assert math.isclose(a.scale, a.head_dim**-0.5, rel_tol=1e-12)
    assert a.rope.theta == 50000.0
    assert _steps(ir) == [
        "h = self_attention_layernorm(x)",
        "h_2 = feedforward_layernorm(x)",
        "attention = self_attention(h)",
        "feedforward = feedforward(h_2)",
        "branches = feedforward + attention",
        "x = x + branches",
    ]
    assert not ir.head.tied
    rows = json.loads(
        (ported("falcon_new").out / "tiny_falcon_new" / "weight_map.json").read_text()
    )
    key = next(r for r in rows["rows"] if r["keras_path"].endswith("self_attention/key/kernel"))
    assert key["transform"][:3] == [
        {"op": "reshape", "shape": [2, 6, 8, 64]},
        {"op": "split", "axis": 1, "sizes": [4, 1, 1], "index": 1},
        {"op": "reshape", "shape": [16, 64]},
    ]


def _without_names(data):
    if isinstance(data, dict):
        return {
            k: _without_names(v)
            for k, v in data.items()
            if k not in ("hf_class", "hf_model_class", "evidence")
        }
    if isinstance(data, list):
        return [_without_names(v) for v in data]
    return data


@pytest.mark.parametrize("name", FAMILIES)
def test_same_ir_with_every_name_blanked(hf_fixture, name):
    """model_type, architectures and every module's class renamed: the same IR."""
    path = hf_fixture(name)
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    original = recognize_model(graph, model, config, name="m", source="s", revision=None)

    config.__class__ = type("RenamedConfig", (type(config),), {"model_type": "renamed"})
    config.model_type = "renamed"
    config.architectures = []
    renamed_classes: dict[type, type] = {}
    for module in model.modules():
        cls = type(module)
        if cls not in renamed_classes:
            renamed_classes[cls] = type(f"Module{len(renamed_classes)}", (cls,), {})
        module.__class__ = renamed_classes[cls]
    graph.model_type = "renamed"
    graph.architectures = []
    graph.model_class = "Renamed"
    for node in graph.modules:
        node.class_name = "Module"
    renamed = recognize_model(graph, model, config, name="m", source="s", revision=None)
    assert _without_names(to_dict(renamed)) == _without_names(to_dict(original))
    assert renamed.block_types[0].hf_class.startswith("Module")


@pytest.mark.parametrize("name", FAMILIES)
def test_generated_package_tests_and_ruff_pass(ported, name):
    port = ported(name)
    assert port.cli.exit_code == 0, port.cli.describe()
    package = port.out / port.package
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package)],
        cwd=port.out,
        env={**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(port.out)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and not re.search(r"failed|error", summary), summary
    for rules in ([], ["--select", "E,F,W,I,B", "--ignore", "E501"]):  # ruff's defaults, more
        lint = subprocess.run(
            [sys.executable, "-m", "ruff", "check", *RUFF_SETTINGS, "--isolated", "--no-cache"]
            + [*rules, "."],
            cwd=package,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert lint.returncode == 0, lint.stdout
