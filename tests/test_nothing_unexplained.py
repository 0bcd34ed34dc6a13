"""Issue 7 item 3: an op that no recognized component explains stops the port, naming the op and
the module, before anything is generated (never a port that leaves it out).

Tiny random configs of real model types, built by the zoo's generic shrinker, recorded on the
meta device: DiffLlama's differential attention (`repeat`), AFMoE's gated attention output
(`sigmoid`), BEAM's `view_as`. helium and ernie4_5 (q/k rotated in interleaved pairs through
`repeat_interleave`) and granite (a constant `mul` on each residual branch) were refused here
until the rope layout and the scale steps explained those ops: they are recognized now (and
verify: helium in tests/test_zoo.py, the same forms in the glm and granite fixtures).
"""

from __future__ import annotations

import pytest

from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.build import build_graph_and_model
from hf2kh.ir import RopeLayout, Scale
from hf2kh.recognize import recognize_model
from hf2kh.zoo.build import tiny_config
from hf2kh.zoo.shrink import Tokens
from hf2kh.zoo.types import candidate_types

TOKENS = Tokens(vocab_size=512, ids={"bos": 1, "eos": 2, "pad": 0})


def _recognize(model_type: str, **overrides):
    zoo_type = next(t for t in candidate_types()[0] if t.model_type == model_type)
    config, _ = tiny_config(zoo_type, TOKENS)
    for key, value in overrides.items():
        setattr(config, key, value)
    graph, model = build_graph_and_model(config)
    return recognize_model(graph, model, config, name="m", source="s", revision=None)


@pytest.mark.parametrize(
    "model_type, op, where",
    [
        ("diffllama", "repeat", "model.layers.0.self_attn"),
        ("afmoe", "sigmoid", "model.layers.0.self_attn"),
        ("beam", "view_as", "model.layers.0.self_attn"),
    ],
)
def test_unexplained_op_stops_the_port_naming_it(model_type, op, where):
    with pytest.raises(UnsupportedModelError) as info:
        _recognize(model_type)
    message = str(info.value)
    assert f"op `{op}` in {where} is not explained" in message, message
    assert "\n" not in message


@pytest.mark.parametrize("model_type", ["helium", "ernie4_5"])
def test_interleaved_rope_is_explained(model_type):
    assert _recognize(model_type).attention.rope.layout is RopeLayout.INTERLEAVED


def test_residual_multiplier_is_explained():
    steps = _recognize("granite").block_types[0].steps
    assert [(s.input, s.name) for s in steps if isinstance(s, Scale)] == [
        ("attention", "attention_output_scale"),
        ("feedforward", "feedforward_output_scale"),
    ]


def test_layers_without_rope_are_one_block_class_with_use_rope():
    """SmolLM3 rotates q/k in three of every four layers (`no_rope_layers`); the probe finds the
    others unrotated, and the package's block takes a per-layer `use_rope`."""
    from hf2kh.generate.context import Context

    zoo_type = next(t for t in candidate_types()[0] if t.model_type == "smollm3")
    config, _ = tiny_config(zoo_type, TOKENS)
    ir = _recognize("smollm3")
    with_rope = [ir.block_type(i).attention.rope is not None for i in range(ir.num_layers)]
    assert with_rope == [bool(flag) for flag in config.no_rope_layers]
    assert not all(with_rope) and any(with_rope)
    context = Context(ir, tokenizer=None)
    assert context.rope_per_layer
    assert context.per_layer_args["use_rope"] == with_rope


def test_relu_squared_activation():
    """Arcee's MLP activation, relu(x)**2, is recognized and emitted as such."""
    import keras
    import numpy as np

    from hf2kh.components import mlp as mlp_component
    from hf2kh.ir import Activation

    components = _recognize("arcee").block_types[0].components
    mlp = next(c.spec for c in components if c.name == "feedforward")
    assert mlp.activation is Activation.RELU_SQUARED and not mlp.gated
    x = np.linspace(-3, 3, 13).astype("float32")
    code = mlp_component.expression(mlp, "x")
    emitted = eval(code, {"ops": keras.ops, "x": x})  # the expression the package prints
    np.testing.assert_allclose(np.asarray(emitted), np.maximum(x, 0) ** 2, rtol=1e-6)


@pytest.mark.parametrize("model_type, normalized", [("mixtral", True), ("qwen3_moe", False)])
def test_mixture_of_experts_is_probed(model_type, normalized):
    """The routing is measured on the module's output: top 2 of 4 experts (the zoo's shrunk
    config), renormalized (Mixtral) or not (Qwen3-MoE's norm_topk_prob false)."""
    from hf2kh.ir import Activation, Moe

    block = _recognize(model_type).block_types[0]
    moe = next(c.spec for c in block.components if isinstance(c.spec, Moe))
    assert (moe.num_experts, moe.top_k) == (4, 2)
    assert moe.normalize_top_k is normalized
    assert moe.activation is Activation.SILU and moe.gate_first


def test_qk_norm_over_all_heads():
    """OLMo 2 normalizes the whole q and k projections before splitting heads (4 query heads and
    2 key/value heads of 16 in the zoo's shrunk config): one norm over 64 and 32 features."""
    attention = _recognize("olmo2").attention
    assert attention.qk_norm is not None and not attention.qk_norm_per_head
    assert (attention.num_query_heads, attention.num_key_value_heads) == (4, 2)


def test_shared_mlp_beside_the_experts_is_their_shared_expert():
    """GraniteMoeShared's block adds a gated MLP (`shared_mlp`, one fused gate/up projection)
    that reads the mixture of experts' input to the mixture's output (the zoo's shrunk config
    has none: shared_intermediate_size 0, so it is set here): one mixture of experts with a
    shared expert, not two feedforwards."""
    from hf2kh.ir import Activation, Moe

    block = _recognize("granitemoeshared", shared_intermediate_size=24).block_types[0]
    (moe,) = [c for c in block.components if isinstance(c.spec, Moe)]
    assert moe.spec.shared is not None and moe.spec.shared.intermediate_dim == 24
    assert moe.spec.shared.activation is Activation.SILU and not moe.spec.shared.gated_output
    assert dict(moe.weights)["shared_gate_up:0"] == "shared_mlp.input_linear"
    assert sum(1 for c in block.components if c.name == "feedforward") == 1
