"""GLM, Cohere and Granite on the model IR: rope on interleaved pairs and constant scales.

GLM spreads half-split cos/sin tables to pairs inside attention (`repeat_interleave`), Cohere's
rotary module builds the tables in pairs already; both rotate features (2i, 2i + 1) together,
which the layout probe measures on the attention itself. Granite multiplies its embeddings, each
residual branch, its attention scores and its logits by config constants (all 1.0 by default,
non-default in the fixture); Cohere scales its logits. Each fixture ports and verifies in
tests/test_port_decoders.py (outcome table); here: the IR holds what the config sets, the
generated code computes it, and the same IR comes out with every name blanked.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from transformers import AutoConfig

from hf2kh.components import rope as rope_component
from hf2kh.errors import UnsupportedModelError
from hf2kh.ir import RopeLayout, from_dict
from hf2kh.recognize.model import _step_text
from tests import test_port_families_bloom_falcon as bloom_falcon

FAMILIES = ["glm", "cohere", "granite"]

# the blank-names check of the BLOOM/Falcon tests, on these fixtures
same_ir_blanked = bloom_falcon.test_same_ir_with_every_name_blanked


def _ir(port):
    return from_dict(json.loads((port.out / "model_ir.json").read_text()))


@pytest.mark.parametrize("name", FAMILIES)
def test_same_ir_with_every_name_blanked(hf_fixture, name):
    same_ir_blanked(hf_fixture, name)


def test_glm_rope_is_interleaved_and_partial(ported, hf_fixture):
    config = AutoConfig.from_pretrained(hf_fixture("glm"))
    port = ported("glm")
    assert port.cli.exit_code == 0, port.cli.describe()
    a = _ir(port).attention
    assert a.rope.layout is RopeLayout.INTERLEAVED
    assert a.head_dim == config.head_dim == 16
    assert a.rope.rotary_dim == int(16 * config.rope_parameters["partial_rotary_factor"]) == 12
    assert a.rope.theta == config.rope_parameters["rope_theta"] == 20000.0
    assert a.query_bias and a.key_bias and a.value_bias and not a.output_bias


def test_cohere_pairs_table_and_logit_scale(ported, hf_fixture):
    config = AutoConfig.from_pretrained(hf_fixture("cohere"))
    ir = _ir(ported("cohere"))
    assert ir.attention.rope.layout is RopeLayout.INTERLEAVED
    assert ir.attention.rope.rotary_dim == ir.attention.head_dim
    assert ir.head.logit_scale == config.logit_scale == 0.25
    assert ir.head.tied and ir.head.softcap is None


def test_granite_scales(ported, hf_fixture):
    config = AutoConfig.from_pretrained(hf_fixture("granite"))
    port = ported("granite")
    ir = _ir(port)
    assert [_step_text(s) for s in ir.block_types[0].steps] == [
        "h = self_attention_layernorm(x)",
        "attention = self_attention(h)",
        "attention = attention * 0.4",
        "x = x + attention",
        "h = feedforward_layernorm(x)",
        "feedforward = feedforward(h)",
        "feedforward = feedforward * 0.4",
        "x = x + feedforward",
    ]
    assert math.isclose(ir.head.logit_scale, 1 / config.logits_scaling, rel_tol=1e-7)
    assert math.isclose(ir.stem.embedding_scale, config.embedding_multiplier, rel_tol=1e-6)
    assert math.isclose(ir.attention.scale, config.attention_multiplier, rel_tol=1e-7)
    assert ir.attention.rope.layout is RopeLayout.HALF_SPLIT
    # the constants are constructor arguments, printed in the block's call()
    code = (port.out / port.package / f"{port.package}_decoder.py").read_text()
    assert "attention = attention * self.attention_output_scale" in code
    assert "feedforward = feedforward * self.feedforward_output_scale" in code
    preset = json.loads((port.out / "preset" / "config.json").read_text())["config"]
    assert preset["attention_output_scale"] == preset["feedforward_output_scale"] == 0.4
    assert math.isclose(preset["logit_scale"], 0.2, rel_tol=1e-7)


def test_generated_interleaved_rotary_matches_hf(ported):
    """The generated rotary layer, with a cache offset, rotates as GLM's `apply_rotary_pos_emb`
    does (pairs (2i, 2i + 1), the first 12 of 16 features)."""
    from transformers.models.glm import modeling_glm

    port = ported("glm")
    assert port.cli.exit_code == 0, port.cli.describe()
    sys.path.insert(0, str(port.out))
    try:
        from tiny_glm.tiny_glm_rotary_embedding import TinyGlmRotaryEmbedding
    finally:
        sys.path.remove(str(port.out))
    layer = TinyGlmRotaryEmbedding(max_wavelength=20000.0, rotary_dim=12)
    start, length, heads, dim = 5, 7, 3, 16
    x = torch.randn(2, length, heads, dim, generator=torch.Generator().manual_seed(0))
    ours = np.asarray(layer(x.numpy(), start_index=start))
    inv_freq = 1.0 / (20000.0 ** (torch.arange(0, 12, 2).float() / 12))
    freqs = torch.arange(start, start + length).float()[:, None] * inv_freq[None]
    emb = torch.cat([freqs, freqs], -1)[None]  # GLM's rotary module: half-split tables
    q = x.transpose(1, 2)  # (batch, heads, length, dim)
    hf, _ = modeling_glm.apply_rotary_pos_emb(q, q, emb.cos(), emb.sin())
    np.testing.assert_allclose(ours, hf.transpose(1, 2).numpy(), rtol=1e-5, atol=1e-5)


def test_a_rotation_in_no_known_layout_is_refused(hf_fixture, monkeypatch):
    """The layout is measured: if neither reference rotates as the model does, the port stops
    naming the attention (here both references are made to disagree with GLM's rotation)."""
    real = rope_component._rotation_error
    monkeypatch.setattr(
        rope_component,
        "_rotation_error",
        lambda v, a, d, layout: real(v, a, d, layout) if layout is None else 1.0,
    )
    with pytest.raises(UnsupportedModelError, match="not rotated in any known rope layout"):
        bloom_falcon._recognized(hf_fixture("glm"))
