"""The recognizer reads each fixture's non-default values from evidence, not from names."""

from __future__ import annotations

import dataclasses
import math

import pytest
from transformers import AutoConfig

from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.build import build_graph_and_model
from hf2kh.recognize import recognize_decoder


def _spec(path, name="m"):
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    return recognize_decoder(graph, model, config, name=name, source=str(path), revision=None)


def test_llama_non_default_values(hf_fixture):
    spec = _spec(hf_fixture("llama"))
    config = AutoConfig.from_pretrained(hf_fixture("llama"))
    assert spec.norm.kind == "rms" and spec.norm.epsilon == config.rms_norm_eps == 1e-5
    assert spec.rope.theta == config.rope_parameters["rope_theta"] == 500000.0
    assert spec.attention.num_key_value_heads == config.num_key_value_heads
    assert spec.attention.num_query_heads == config.num_attention_heads
    assert not spec.embedding.tie_word_embeddings
    assert spec.block_layout == "sequential" and spec.mlp.gated and spec.mlp.activation == "silu"


def test_llama3_rope_scaling_and_head_dim(hf_fixture):
    spec = _spec(hf_fixture("llama3"))
    config = AutoConfig.from_pretrained(hf_fixture("llama3"))
    params = config.rope_parameters
    assert spec.rope.scaling == "llama3"
    assert spec.rope.factor == params["factor"]
    assert spec.rope.original_max_position_embeddings == params["original_max_position_embeddings"]
    assert (
        spec.attention.head_dim
        == config.head_dim
        != config.hidden_size // config.num_attention_heads
    )
    assert spec.embedding.tie_word_embeddings


def test_biases_and_linear_rope(hf_fixture):
    spec = _spec(hf_fixture("llama_bias"))
    a = spec.attention
    assert a.query_bias and a.key_bias and a.value_bias and a.output_bias and spec.mlp.bias
    assert spec.rope.scaling == "linear" and spec.rope.factor == 2.0


def test_mistral_window_comes_from_the_mask(hf_fixture):
    spec = _spec(hf_fixture("mistral"))
    assert spec.attention.sliding_window == 8
    assert any("sliding window of 8" in line for line in spec.evidence)


def test_qwen2_qkv_bias_without_output_bias(hf_fixture):
    a = _spec(hf_fixture("qwen2")).attention
    assert a.query_bias and a.key_bias and a.value_bias and not a.output_bias
    assert a.sliding_window is None


def test_qwen3_qk_norm(hf_fixture):
    a = _spec(hf_fixture("qwen3")).attention
    assert a.qk_norm is not None and a.qk_norm.kind == "rms" and a.qk_norm.epsilon == 1e-5


def test_gemma_scaled_embeddings_offset_norm_tanh_gelu(hf_fixture):
    spec = _spec(hf_fixture("gemma"))
    config = AutoConfig.from_pretrained(hf_fixture("gemma"))
    assert math.isclose(spec.embedding.scale, config.hidden_size**0.5, rel_tol=1e-6)
    assert spec.norm.scale_offset == 1.0
    assert spec.mlp.activation == "gelu_approximate"


def test_gpt2_fused_conv1d_learned_positions(hf_fixture):
    spec = _spec(hf_fixture("gpt2"))
    assert spec.attention.fused_qkv and spec.weights["qkv.kernel"].layout == "conv1d"
    assert spec.embedding.position == "learned" and spec.rope is None
    assert spec.norm.kind == "layer" and spec.norm.bias and spec.norm.epsilon == 1e-4
    assert spec.mlp.activation == "gelu_approximate" and not spec.mlp.gated


def test_decisions_do_not_read_model_type_or_class_names(hf_fixture):
    """Blank every name the checkpoint reports: the spec is the same."""
    path = hf_fixture("qwen3")
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    original = recognize_decoder(graph, model, config, name="m", source="s", revision=None)
    graph.model_type = "renamed"
    graph.architectures = []
    graph.model_class = "Renamed"
    for node in graph.modules:
        node.class_name = "Module"
    renamed = recognize_decoder(graph, model, config, name="m", source="s", revision=None)
    ignore = {"evidence", "hf_block_class"}
    fields = [f.name for f in dataclasses.fields(original) if f.name not in ignore]
    assert {f: getattr(renamed, f) for f in fields} == {f: getattr(original, f) for f in fields}


@pytest.mark.parametrize("name", ["bloom", "gpt_neo", "phi", "bert"])
def test_unsupported_models_are_refused_with_the_reason(hf_fixture, name):
    with pytest.raises(UnsupportedModelError) as info:
        _spec(hf_fixture(name))
    assert "\n" not in str(info.value) and str(info.value)


def test_gpt_neox_parallel_partial_rotary_per_head_fused(hf_fixture):
    spec = _spec(hf_fixture("gpt_neox"))
    config = AutoConfig.from_pretrained(hf_fixture("gpt_neox"))
    head_dim = config.hidden_size // config.num_attention_heads
    assert spec.block_layout == "parallel"  # two norms, both reading the block input
    assert spec.attention.fused_qkv and spec.attention.fused_layout == "per_head"
    assert spec.rope.rotary_dim == int(head_dim * config.rope_parameters["partial_rotary_factor"])
    assert spec.rope.rotary_dim < spec.attention.head_dim == head_dim
