"""Mixture-of-experts models record their sample forward on the `meta` device.

transformers 5 runs expert blocks with `experts_implementation="grouped_mm"` by default; on `meta`
that reaches `torch.nn.functional.grouped_mm`, whose meta kernel accepts only bfloat16 ("Expected
inputs of BF16 type but got mat_a.dtype=torch.float32"), and the "eager" loop cannot run there
either (it asks which experts were hit). hf2kh.inspect builds the meta model with "batched_mm"
(each token's top-k expert weights gathered, one `bmm`), which has routing-independent shapes.
"""

from __future__ import annotations

import pytest
import torch

from hf2kh.inspect.build import build_graph, build_graph_and_model

TINY = dict(
    vocab_size=96,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)


def _mixtral():
    from transformers import MixtralConfig

    config = MixtralConfig(**TINY, intermediate_size=48, num_local_experts=4, num_experts_per_tok=2)
    config.architectures = ["MixtralForCausalLM"]
    return config


def _qwen2_moe():
    from transformers import Qwen2MoeConfig

    config = Qwen2MoeConfig(
        **TINY,
        intermediate_size=64,
        moe_intermediate_size=24,
        shared_expert_intermediate_size=40,
        num_experts=4,
        num_experts_per_tok=2,
    )
    config.architectures = ["Qwen2MoeForCausalLM"]
    return config


CONFIGS = {"mixtral": _mixtral, "qwen2_moe": _qwen2_moe}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_moe_sample_forward_records_on_meta(name):
    config = CONFIGS[name]()
    graph, model = build_graph_and_model(config)
    assert next(model.parameters()).device.type == "meta"
    # both blocks were recorded, with their routed experts
    functions = [c.target for c in graph.calls if c.kind == "function"]
    assert "topk" in " ".join(functions)
    assert any("bmm" in f for f in functions), "the experts' batched matmuls are recorded"
    expert_params = [p for p in graph.parameters if len(p.shape) == 3]
    assert expert_params and all(p.shape[0] == 4 for p in expert_params)  # (experts, out, in)
    assert [g.indices for g in graph.block_groups] == [[0, 1]]


def test_meta_choice_does_not_leak_into_the_callers_config():
    """The float32 reference is built later from the same config: it keeps transformers' own
    experts implementation, not the one inspect needed on `meta`."""
    config = _mixtral()
    before = config._experts_implementation
    build_graph(config)
    assert config._experts_implementation == before


def test_batched_mm_is_the_same_function_as_eager():
    """What inspect records (batched_mm) computes what the eager expert loop computes."""
    import transformers

    config = _qwen2_moe()
    torch.manual_seed(0)
    eager = transformers.Qwen2MoeForCausalLM._from_config(config, experts_implementation="eager")
    batched = transformers.Qwen2MoeForCausalLM._from_config(
        _qwen2_moe(), experts_implementation="batched_mm"
    )
    batched.load_state_dict(eager.state_dict())
    ids = torch.arange(16).reshape(2, 8) % 90 + 1
    with torch.no_grad():
        a = eager(ids).logits
        b = batched(ids).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
