"""The recognizer reads each fixture's non-default values into the model IR from evidence, not
from names; its block steps are what the model computes, in order."""

from __future__ import annotations

import math

import pytest
from transformers import AutoConfig

from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.build import build_graph_and_model
from hf2kh.ir import (
    Activation,
    Mlp,
    Norm,
    NormKind,
    Positions,
    QkvLayout,
    RopeScaling,
    Task,
    WeightLayout,
    from_dict,
    to_dict,
)
from hf2kh.recognize import recognize_model
from hf2kh.recognize.model import _step_text
from tests.fixtures.outcomes import OUTCOMES, VERIFIED


def _ir(path, name="m"):
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    return recognize_model(graph, model, config, name=name, source=str(path), revision=None)


def _steps(ir, block_type=0) -> list[str]:
    return [_step_text(s) for s in ir.block_types[block_type].steps]


def _specs(ir, kind):
    return [c.spec for c in ir.block_types[0].components if isinstance(c.spec, kind)]


PRE_NORM = [
    "h = self_attention_layernorm(x)",
    "attention = self_attention(h)",
    "x = x + attention",
    "h = feedforward_layernorm(x)",
    "feedforward = feedforward(h)",
    "x = x + feedforward",
]


def test_llama_non_default_values(hf_fixture):
    ir = _ir(hf_fixture("llama"))
    config = AutoConfig.from_pretrained(hf_fixture("llama"))
    (norm, _) = _specs(ir, Norm)
    assert norm.kind is NormKind.RMS and norm.epsilon == config.rms_norm_eps == 1e-5
    assert ir.attention.rope.theta == config.rope_parameters["rope_theta"] == 500000.0
    assert ir.attention.num_key_value_heads == config.num_key_value_heads
    assert ir.attention.num_query_heads == config.num_attention_heads
    assert not ir.head.tied and ir.head.final_norm == norm
    (mlp,) = _specs(ir, Mlp)
    assert mlp.gated and mlp.activation is Activation.SILU
    assert _steps(ir) == PRE_NORM
    assert from_dict(to_dict(ir)) == ir


def test_llama3_rope_scaling_and_head_dim(hf_fixture):
    ir = _ir(hf_fixture("llama3"))
    config = AutoConfig.from_pretrained(hf_fixture("llama3"))
    params, rope = config.rope_parameters, ir.attention.rope
    assert rope.scaling is RopeScaling.LLAMA3
    assert rope.factor == params["factor"]
    assert rope.original_max_position_embeddings == params["original_max_position_embeddings"]
    assert (
        ir.attention.head_dim == config.head_dim != config.hidden_size // config.num_attention_heads
    )
    assert ir.head.tied


def test_biases_and_linear_rope(hf_fixture):
    ir = _ir(hf_fixture("llama_bias"))
    a = ir.attention
    assert a.query_bias and a.key_bias and a.value_bias and a.output_bias
    assert _specs(ir, Mlp)[0].bias
    assert a.rope.scaling is RopeScaling.LINEAR and a.rope.factor == 2.0


def test_mistral_window_comes_from_the_mask(hf_fixture):
    ir = _ir(hf_fixture("mistral"))
    assert {o.sliding_window for o in ir.layer_options} == {8}
    assert any("sliding window of 8" in line for line in ir.evidence)


def test_qwen2_qkv_bias_without_output_bias(hf_fixture):
    ir = _ir(hf_fixture("qwen2"))
    a = ir.attention
    assert a.query_bias and a.key_bias and a.value_bias and not a.output_bias
    assert {o.sliding_window for o in ir.layer_options} == {None}


def test_qwen3_qk_norm(hf_fixture):
    a = _ir(hf_fixture("qwen3")).attention
    assert a.qk_norm is not None and a.qk_norm.kind is NormKind.RMS and a.qk_norm.epsilon == 1e-5


def test_gemma_scaled_embeddings_offset_norm_tanh_gelu(hf_fixture):
    ir = _ir(hf_fixture("gemma"))
    config = AutoConfig.from_pretrained(hf_fixture("gemma"))
    assert math.isclose(ir.stem.embedding_scale, config.hidden_size**0.5, rel_tol=1e-6)
    assert all(n.scale_offset == 1.0 for n in _specs(ir, Norm))
    assert _specs(ir, Mlp)[0].activation is Activation.GELU_TANH


def test_gpt2_fused_conv1d_learned_positions(hf_fixture):
    ir = _ir(hf_fixture("gpt2"))
    a = ir.attention
    assert a.qkv_layout is QkvLayout.BLOCKED and a.qkv_weight_layout is WeightLayout.CONV1D
    assert ir.stem.positions is Positions.LEARNED and a.rope is None
    norm = _specs(ir, Norm)[0]
    assert norm.kind is NormKind.LAYER and norm.bias and norm.epsilon == 1e-4
    mlp = _specs(ir, Mlp)[0]
    assert mlp.activation is Activation.GELU_TANH and not mlp.gated
    assert mlp.weight_layout is WeightLayout.CONV1D


def test_gpt_neox_parallel_partial_rotary_per_head_fused(hf_fixture):
    ir = _ir(hf_fixture("gpt_neox"))
    config = AutoConfig.from_pretrained(hf_fixture("gpt_neox"))
    head_dim = config.hidden_size // config.num_attention_heads
    # two norms, both reading the block input; the branches are summed, then added to x
    assert _steps(ir) == [
        "h = self_attention_layernorm(x)",
        "attention = self_attention(h)",
        "h = feedforward_layernorm(x)",
        "feedforward = feedforward(h)",
        "branches = feedforward + attention",
        "x = branches + x",
    ]
    a = ir.attention
    assert a.qkv_layout is QkvLayout.PER_HEAD
    assert a.rope.rotary_dim == int(head_dim * config.rope_parameters["partial_rotary_factor"])
    assert a.rope.rotary_dim < a.head_dim == head_dim


def test_modernbert_decoder_windows_rope_per_type_and_a_head_transform(hf_fixture):
    """ModernBERT's decoder: causal layers, the sliding ones reading `local_attention // 2`
    tokens, each layer type's rope theta, layer 0 without its attention norm, and a causal LM
    head with a dense transform before the tied decoder and its bias."""
    path = hf_fixture("modernbert_decoder")
    config = AutoConfig.from_pretrained(path)
    ir = _ir(path)
    assert ir.head.task is Task.CAUSAL_LM and ir.num_layers == 3
    for i, layer_type in enumerate(config.layer_types):
        attention = ir.block_type(i).attention
        assert attention.causal
        assert attention.rope.theta == config.rope_parameters[layer_type]["rope_theta"]
        window = config.local_attention // 2 if layer_type == "sliding_attention" else None
        assert ir.layer_options[i].sliding_window == window
    assert _steps(ir, ir.layers[0]) == ["attention = self_attention(x)", *PRE_NORM[2:]]
    assert _steps(ir, ir.layers[1]) == PRE_NORM
    transform = ir.head.transform
    assert transform.activation is Activation.GELU and not transform.dense_bias
    assert transform.norm.epsilon == config.norm_eps == 1e-4 and not transform.norm.bias
    assert ir.head.tied and ir.head.bias and ir.head.final_norm.epsilon == 1e-4


def _without_names(data):
    """The IR's JSON without the fields that only report HF's class names."""
    if isinstance(data, dict):
        return {
            k: _without_names(v)
            for k, v in data.items()
            if k not in ("hf_class", "hf_model_class", "evidence")
        }
    if isinstance(data, list):
        return [_without_names(v) for v in data]
    return data


@pytest.mark.parametrize(
    "fixture",
    [
        *("qwen3", "bert", "bert_base", "modernbert", "albert", "roberta_prelayernorm"),
        *("roberta_cls", "eurobert"),  # a classifier without a pooler; an LM head alone
        # relative tables and buckets found on numbers; a gelu ContextPooler
        *("deberta_v2", "deberta_v2_cls"),
        # cross-attention found unused by evidence; positions by their lookup; a norm before them
        *("bart", "blenderbot_small"),
    ],
)
def test_decisions_do_not_read_model_type_or_class_names(hf_fixture, fixture):
    """Blank every name the checkpoint reports (model_type, architectures, every module's class,
    through renamed subclasses): the IR is the same."""
    path = hf_fixture(fixture)
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    original = recognize_model(graph, model, config, name="m", source="s", revision=None)

    renamed_config_class = type("RenamedConfig", (type(config),), {"model_type": "renamed"})
    config.__class__ = renamed_config_class
    config.architectures = []
    renamed_classes: dict[type, type] = {}
    for module in model.modules():
        cls = type(module)
        if cls not in renamed_classes:
            renamed_classes[cls] = type(f"Module{len(renamed_classes)}", (cls,), {})
        module.__class__ = renamed_classes[cls]
    assert all(type(m).__name__.startswith("Module") for m in model.modules())
    config.model_type = "renamed"
    assert config.model_type == "renamed" and type(config).__name__ == "RenamedConfig"
    graph.model_type = "renamed"
    graph.architectures = []
    graph.model_class = "Renamed"
    for node in graph.modules:
        node.class_name = "Module"
    renamed = recognize_model(graph, model, config, name="m", source="s", revision=None)
    assert _without_names(to_dict(renamed)) == _without_names(to_dict(original))
    assert renamed.block_types[0].hf_class.startswith("Module")


@pytest.mark.parametrize(
    "name", [name for name, outcome in OUTCOMES.items() if outcome != VERIFIED]
)
def test_unsupported_models_are_refused_with_the_reason(hf_fixture, name):
    """The recognizer alone refuses what the port refuses, with the same reason (one table:
    tests/fixtures/outcomes.py)."""
    with pytest.raises(UnsupportedModelError) as info:
        _ir(hf_fixture(name))
    assert "\n" not in str(info.value) and OUTCOMES[name] in str(info.value)
