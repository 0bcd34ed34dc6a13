"""GPT-J, CodeGen, YaRN and Ministral 3 on the model IR: rope applied inside attention, a
sharded fused q/k/v, YaRN frequencies, a query temperature by position.

GPT-J and CodeGen hand their blocks no rotary tables: the attention gathers sin/cos from a buffer
of its own (`repeat`, `gather`, `repeat_interleave`) and rotates the first `rotary_dim` features
in interleaved pairs, which the probe measures on the attention itself. CodeGen's fused
`qkv_proj` holds 4 model-parallel shards of `[q | v | k]`, found from row numbers. The YaRN
fixture is a Llama with non-default YaRN parameters; Ministral 3 adds Llama 4's query
temperature, `1 + beta * log(1 + floor(position / length))`, live past position 16 in the
verified sequences. Each fixture ports and verifies (its package's own tests and ruff too) in
tests/test_port_decoders.py (outcome table); here: the IR holds what the config sets, and the
same IR comes out with every name blanked.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from hf2kh.components import rope as rope_component
from hf2kh.ir import QkvLayout, RopeLayout, RopeScaling, from_dict
from hf2kh.recognize import probes
from tests import test_port_families_bloom_falcon as bloom_falcon

FAMILIES = ["gptj", "codegen", "llama_yarn", "ministral3"]


def _ir(port):
    assert port.cli.exit_code == 0, port.cli.describe()
    return from_dict(json.loads((port.out / "model_ir.json").read_text()))


@pytest.mark.parametrize("name", FAMILIES)
def test_same_ir_with_every_name_blanked(hf_fixture, name):
    bloom_falcon.test_same_ir_with_every_name_blanked(hf_fixture, name)


def test_gptj_rope_inside_attention_interleaved_partial(ported, hf_fixture):
    config = AutoConfig.from_pretrained(hf_fixture("gptj"))
    port = ported("gptj")
    ir = _ir(port)
    a = ir.attention
    assert a.head_dim == config.n_embd // config.n_head == 16
    assert a.rope.layout is RopeLayout.INTERLEAVED
    assert a.rope.rotary_dim == config.rotary_dim == 6
    assert a.rope.theta == 10000.0 and a.rope.scaling is RopeScaling.NONE
    assert ir.head.bias
    assert any("no rotary tables handed to the block" in e for e in port.report["evidence"])


def test_codegen_sharded_fused_qkv(ported, hf_fixture):
    config = AutoConfig.from_pretrained(hf_fixture("codegen"))
    a = _ir(ported("codegen")).attention
    assert a.qkv_layout is QkvLayout.SHARDED
    assert (a.qkv_shards, a.qkv_order) == (4, "qvk")  # CodeGen's mp_num and split order
    assert a.num_query_heads == a.num_key_value_heads == config.n_head == 8
    assert a.rope.rotary_dim == config.rotary_dim == 4
    assert a.rope.layout is RopeLayout.INTERLEAVED


def test_yarn_parameters_reach_the_ir(ported, hf_fixture):
    params = AutoConfig.from_pretrained(hf_fixture("llama_yarn")).rope_parameters
    rope = _ir(ported("llama_yarn")).attention.rope
    assert rope.scaling is RopeScaling.YARN
    assert rope.theta == params["rope_theta"] == 20000.0
    assert rope.factor == params["factor"] == 4.0
    assert rope.original_max_position_embeddings == params["original_max_position_embeddings"]
    assert (rope.beta_fast, rope.beta_slow) == (8.0, 1.0)
    assert rope.truncate is False
    # the YaRN paper's mscale ratio: (0.1 * 1.0 * ln 4 + 1) / (0.1 * 0.5 * ln 4 + 1)
    expected = (0.1 * math.log(4.0) + 1) / (0.05 * math.log(4.0) + 1)
    assert rope.attention_factor == pytest.approx(expected, rel=1e-12)


def test_yarn_frequencies_match_transformers(hf_fixture):
    """The probe's YaRN reference against transformers' own function, on the fixture's config
    and with truncation on (the fixture has it off)."""
    config = AutoConfig.from_pretrained(hf_fixture("llama_yarn"))
    rope = dict(config.rope_parameters)
    for truncate in (False, True):
        config.rope_parameters = {**rope, "truncate": truncate}
        expected, factor = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
        scaling = {
            "scaling": "yarn",
            "factor": rope["factor"],
            "original_max_position_embeddings": rope["original_max_position_embeddings"],
            "beta_fast": rope["beta_fast"],
            "beta_slow": rope["beta_slow"],
            "truncate": truncate,
        }
        found = probes.rope_inv_freq(rope["rope_theta"], config.head_dim, scaling)
        torch.testing.assert_close(found, expected, rtol=1e-6, atol=0)
        assert factor != 1.0


def test_ministral3_query_temperature_and_yarn(ported, hf_fixture):
    params = AutoConfig.from_pretrained(hf_fixture("ministral3")).rope_parameters
    port = ported("ministral3")
    a = _ir(port).attention
    t = a.query_temperature
    assert (t.beta, t.length) == (params["llama_4_scaling_beta"], 16) == (0.3, 16)
    assert a.rope.scaling is RopeScaling.YARN
    assert a.rope.attention_factor == 1.0  # mscale == mscale_all_dim
    assert (a.rope.beta_fast, a.rope.beta_slow) == (16.0, 2.0)
    assert a.scale == pytest.approx(a.head_dim**-0.5)  # the temperature is not a score scale
    source = (port.out / port.package / f"{port.package}_attention.py").read_text()
    assert "def _query_temperature(self, query, start_index):" in source


def test_gpt_oss_table_of_each_frequency_once():
    """GPT-OSS hands its blocks a cos table with each YaRN frequency once (it rotates the two
    halves with it): read as a rope of twice the table's width (before: none of the known
    references)."""
    from transformers import GptOssConfig
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssRotaryEmbedding

    params = {
        "rope_type": "yarn",
        "factor": 32.0,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "truncate": False,
        "original_max_position_embeddings": 128,
        "rope_theta": 150000.0,
    }
    config = GptOssConfig(
        hidden_size=64,
        head_dim=16,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_parameters=params,
    )
    cos, _ = GptOssRotaryEmbedding(config)(torch.zeros(1), torch.arange(64)[None])
    assert cos.shape[-1] == 8
    rope = rope_component.recognize_table("the table", [cos[0]], config)
    assert (rope.rotary_dim, rope.scaling, rope.factor) == (16, RopeScaling.YARN, 32.0)
    assert rope.truncate is False and rope.attention_factor == pytest.approx(
        0.1 * math.log(32.0) + 1
    )


def test_latent_attention_is_refused_naming_the_latent():
    """MiniCPM3's multi-head latent attention (keys and values from `kv_a_proj_with_mqa`
    expanded by `kv_b_proj`) stops recognition with one line naming both, on the zoo's tiny
    config (whose head sizes are now consistent: its forward runs)."""
    from hf2kh.errors import UnsupportedModelError
    from hf2kh.inspect.build import build_graph_and_model
    from hf2kh.recognize.model import recognize_model
    from hf2kh.zoo.build import tiny_config
    from hf2kh.zoo.shrink import Tokens
    from hf2kh.zoo.types import ZooType

    zoo_type = ZooType("minicpm3", "causal_lm", "MiniCPM3ForCausalLM")
    config, _ = tiny_config(zoo_type, Tokens(500, {"bos": 1, "eos": 2, "pad": 0}))
    graph, model = build_graph_and_model(config)
    with pytest.raises(UnsupportedModelError) as info:
        recognize_model(graph, model, config, name="m", source="s", revision=None)
    message = str(info.value)
    assert "\n" not in message and "multi-head latent attention" in message
    assert "kv_a_proj_with_mqa" in message and "kv_b_proj" in message
