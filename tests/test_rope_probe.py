"""The rope layout probe when head_dim equals the probe's sample length (64 tokens).

A matmul-like score product takes the key transposed, `(..., head_dim, positions)`; with
head_dim 64 (SmolLM2, most Llamas) that shape is `(..., 64, 64)` and cannot say which axis is
which, so the probe reads it from the op. Before, such a Llama was refused ("the key reaching
the score product is not rotated in any known rope layout").
"""

from __future__ import annotations

import pytest
import transformers

from hf2kh.inspect.build import build_graph_and_model
from hf2kh.ir import RopeLayout
from hf2kh.recognize import recognize_model


@pytest.mark.parametrize("num_key_value_heads", [2, 4])
def test_rope_found_with_head_dim_of_the_probe_length(num_key_value_heads):
    config = transformers.LlamaConfig(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=num_key_value_heads,
        head_dim=64,
        rope_theta=123456.0,
        architectures=["LlamaForCausalLM"],
    )
    graph, model = build_graph_and_model(config)
    ir = recognize_model(graph, model, config, name="m", source="s", revision=None)
    assert ir.attention.rope.layout is RopeLayout.HALF_SPLIT
    assert ir.attention.rope.theta == pytest.approx(123456.0)
