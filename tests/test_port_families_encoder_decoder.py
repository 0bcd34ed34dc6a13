"""Decoders of encoder-decoder families loaded as causal LMs (issue 7): what the recognizer reads
from the bart, marian and blenderbot_small fixtures, against their configs and HF's modules.

HF's `*ForCausalLM` runs the decoder without encoder states, so each block's cross-attention is
never called: its weights must be declared unused with that reason (and nothing else), found
from the recorded forward. Positions are learned tables (BART's offset by 2), Marian's a stored
sinusoidal table; the embedding norm sits after the positions (BART) or before them
(BlenderbotSmall). CTRL (not an encoder-decoder) computes its fixed sinusoids into a buffer: no
table among its weights. The full port of each fixture is verified in tests/test_port_decoders.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from hf2kh.generate.weight_map import build_table
from hf2kh.inspect.build import build_graph_and_model
from hf2kh.ir import EmbeddingNormInput, NotRunReason, Positions
from hf2kh.recognize import recognize_model

FIXTURES = ("bart", "marian", "blenderbot_small")


def _ir_and_shapes(path):
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    ir = recognize_model(graph, model, config, name="m", source=str(path), revision=None)
    return ir, {p.name: tuple(p.shape) for p in graph.parameters}, config


@pytest.mark.parametrize("name", FIXTURES)
def test_cross_attention_is_declared_unused_and_nothing_else(hf_fixture, name):
    ir, shapes, config = _ir_and_shapes(hf_fixture(name))
    hf = AutoModelForCausalLM.from_pretrained(hf_fixture(name))
    cross = {n for n, _ in hf.named_parameters() if ".encoder_attn" in n}
    assert len(cross) == config.decoder_layers * 10  # q/k/v/out weight+bias, norm weight+bias
    table = build_table(ir, shapes)
    assert set(table.declared) == cross
    assert set(table.declared.values()) == {NotRunReason.CROSS_ATTENTION.value}
    mapped = {r.hf_name for r in table.rows}
    assert not mapped & cross
    for block in ir.block_types:
        assert {n.hf_path for n in block.not_run} == {"encoder_attn", "encoder_attn_layer_norm"}


def test_bart_positions_offset_scale_and_norm_after_positions(hf_fixture):
    ir, _, config = _ir_and_shapes(hf_fixture("bart"))
    stem = ir.stem
    assert stem.positions is Positions.LEARNED
    assert stem.position_offset == 2
    assert stem.max_positions == config.max_position_embeddings + 2
    assert math.isclose(stem.embedding_scale, math.sqrt(config.d_model), rel_tol=1e-6)
    assert stem.embedding_norm is not None
    assert stem.embedding_norm_input is EmbeddingNormInput.SUM
    assert not ir.head.tied


def test_marian_stored_sinusoidal_table_and_scale(hf_fixture):
    ir, _, config = _ir_and_shapes(hf_fixture("marian"))
    stem = ir.stem
    assert stem.positions is Positions.LEARNED and stem.position_offset == 0
    assert math.isclose(stem.embedding_scale, math.sqrt(config.d_model), rel_tol=1e-6)
    assert stem.embedding_norm is None
    # the table the port reads is the fixed sinusoid (the factory keeps frozen parameters)
    hf = AutoModelForCausalLM.from_pretrained(hf_fixture("marian"))
    table = hf.get_submodule(stem.hf_positions).weight.detach().numpy()
    half = config.d_model // 2
    rates = 1.0 / np.power(10000.0, 2 * np.arange(half) / config.d_model)
    angles = np.arange(table.shape[0])[:, None] * rates[None, :]
    np.testing.assert_allclose(table[:, :half], np.sin(angles), atol=1e-6)
    np.testing.assert_allclose(table[:, half:], np.cos(angles), atol=1e-6)


def test_blenderbot_small_norm_reads_the_token_embeddings_alone(hf_fixture):
    ir, _, _ = _ir_and_shapes(hf_fixture("blenderbot_small"))
    stem = ir.stem
    assert stem.positions is Positions.LEARNED and stem.position_offset == 0
    assert stem.embedding_norm_input is EmbeddingNormInput.TOKENS
    assert stem.embedding_scale is None  # its decoder ignores scale_embedding (transformers 5)


def test_ctrl_computed_sinusoids_and_scale(hf_fixture):
    ir, shapes, config = _ir_and_shapes(hf_fixture("ctrl"))
    stem = ir.stem
    assert stem.positions is Positions.SINUSOIDAL and stem.sinusoid_base == 10000.0
    assert stem.hf_positions is None and not any("pos" in n for n in shapes)
    assert math.isclose(stem.embedding_scale, math.sqrt(config.n_embd), rel_tol=1e-6)
    assert ir.head.tied and ir.head.bias
