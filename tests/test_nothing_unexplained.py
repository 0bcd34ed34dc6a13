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


def _recognize(model_type: str):
    zoo_type = next(t for t in candidate_types()[0] if t.model_type == model_type)
    config, _ = tiny_config(zoo_type, TOKENS)
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
