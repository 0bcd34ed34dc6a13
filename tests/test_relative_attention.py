"""DeBERTa-v2's disentangled attention on the IR: what the recognizer reads from the two fixtures
(against their configs), the log buckets against transformers' own function, a changed score
scale caught by the numeric probe, and the options no component computes refused in one line.
The ports themselves are verified by tests/test_port_decoders.py and test_port_encoders.py."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, DebertaV2Config
from transformers.models.deberta_v2 import modeling_deberta_v2

from hf2kh.components import relative_attention
from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.build import build_graph_and_model
from hf2kh.ir import Task
from hf2kh.recognize import recognize_model


def _recognize(config):
    graph, model = build_graph_and_model(config)
    return recognize_model(graph, model, config, name="m", source="s", revision=None)


def _tiny(**changes) -> DebertaV2Config:
    values = dict(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=64,
        relative_attention=True,
        position_buckets=8,
        max_relative_positions=32,
        pos_att_type=["c2p", "p2c"],
        share_att_key=True,
        position_biased_input=False,
        architectures=["DebertaV2ForMaskedLM"],
    )
    return DebertaV2Config(**{**values, **changes})


def test_masked_lm_relative_terms_are_read_from_numbers(hf_fixture):
    config = AutoConfig.from_pretrained(hf_fixture("deberta_v2"))
    ir = _recognize(config)
    relative = ir.attention.relative
    assert ir.head.task is Task.MASKED_LM
    assert relative.span == relative.buckets == config.position_buckets == 8
    assert relative.max_distance == config.max_relative_positions == 32
    assert relative.content_to_position and relative.position_to_content
    assert relative.shared_projections is config.share_att_key is True
    # every term divided by sqrt(head_dim * (1 + 2 terms))
    head_dim = config.hidden_size // config.num_attention_heads
    assert ir.attention.scale == pytest.approx((head_dim * 3) ** -0.5)
    stem = ir.stem
    assert stem.hf_relative_table == "deberta.encoder.rel_embeddings"
    assert stem.relative_table_norm.epsilon == config.layer_norm_eps == 1e-5
    assert stem.masked_embeddings and stem.hf_positions is None  # position_biased_input off


def test_classifier_with_separate_position_projections(hf_fixture):
    config = AutoConfig.from_pretrained(hf_fixture("deberta_v2_cls"))
    ir = _recognize(config)
    relative = ir.attention.relative
    assert ir.head.task is Task.TEXT_CLASSIFIER and ir.head.pooler_activation == "gelu"
    assert ir.head.labels[3] == config.id2label[3] == "joy"
    assert relative.span == config.max_relative_positions == 10 and relative.buckets == 0
    assert relative.shared_projections is False
    weights = dict(ir.block_types[0].component("self_attention").weights)
    assert weights["position_key"] == "attention.self.pos_key_proj"
    assert weights["position_query"] == "attention.self.pos_query_proj"
    assert ir.stem.relative_table_norm is None  # norm_rel_ebd "none"
    assert ir.stem.type_vocab_size == config.type_vocab_size == 2


def test_buckets_beyond_the_usual_probe_length_are_seen():
    """DeBERTa-v3's 256 buckets (max_relative_positions -1: the 512 positions) bucket distances
    from 128 on: the stem is probed on more tokens than the relative table has rows."""
    config = _tiny(position_buckets=256, max_relative_positions=-1, max_position_embeddings=512)
    relative = _recognize(config).attention.relative
    assert (relative.buckets, relative.max_distance, relative.span) == (256, 512, 256)


def test_log_buckets_are_transformers_own():
    relative = torch.arange(-300, 301)[:, None] - torch.zeros(1, dtype=torch.long)
    for buckets, max_distance in ((8, 32), (256, 512), (6, 64)):
        expected = modeling_deberta_v2.make_log_bucket_position(relative, buckets, max_distance)
        got = relative_attention.log_buckets(relative, buckets, max_distance)
        assert torch.equal(got, expected)


def test_a_changed_score_scale_is_caught_by_the_probe(monkeypatch):
    """Scores divided by sqrt(2 * head_dim * terms) instead: the structure is the same, the
    numbers are not, and the port stops naming the gather."""
    original = modeling_deberta_v2.scaled_size_sqrt
    monkeypatch.setattr(
        modeling_deberta_v2,
        "scaled_size_sqrt",
        lambda layer, factor: original(layer, factor) * 2**0.5,
    )
    with pytest.raises(UnsupportedModelError) as info:
        _recognize(_tiny())
    assert "op `gather`" in str(info.value) and "match no reference" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("terms", [["c2p", "p2c"], None])
def test_without_relative_terms_the_computed_scale_is_measured(terms):
    """With `relative_attention` off, HF still divides the scores by sqrt(head_dim * (1 +
    the c2p/p2c entries of pos_att_type)), computed at run time: measured on numbers."""
    config = _tiny(relative_attention=False, position_biased_input=True, pos_att_type=terms)
    ir = _recognize(config)
    head_dim = config.hidden_size // config.num_attention_heads
    assert ir.attention.relative is None and ir.stem.hf_relative_table is None
    assert ir.attention.scale == pytest.approx((head_dim * (1 + len(terms or []))) ** -0.5)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (dict(conv_kernel_size=3), "module deberta.encoder.conv runs between the blocks"),
        (dict(legacy=False), "op `linear` in lm_predictions.lm_head.dense"),
    ],
)
def test_options_no_component_computes_are_refused_in_one_line(changes, reason):
    with pytest.raises(UnsupportedModelError) as info:
        _recognize(_tiny(**changes))
    assert reason in str(info.value) and "\n" not in str(info.value)
