"""Zoo types that crashed the recognizer (a bug of ours) and are now refused with their reason.

XLM: the stem probe records each block's arguments for the later probes. A key/value cache among
them (XLM hands its blocks one even with `use_cache=False`) would collect the meta-device run's
keys and mix devices in every later probe: the probes get no cache.

SqueezeBERT: a module the recognizer needs that the sample forward never calls (its blocks run
inside another module's loop) was a ValueError; it is a refusal naming the module."""

from __future__ import annotations

import pytest

from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.build import build_graph_and_model
from hf2kh.recognize import recognize_model
from hf2kh.zoo.build import tiny_config
from hf2kh.zoo.shrink import Tokens
from hf2kh.zoo.types import ZooType

TOKENS = Tokens(500, {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4, "bos": 2, "eos": 3})


def test_xlm_is_refused_with_its_reason_not_a_device_crash():
    config, _ = tiny_config(ZooType("xlm", "masked_lm", "XLMWithLMHeadModel"), TOKENS)
    graph, model = build_graph_and_model(config)
    # XLM keeps each layer's attention, norms and MLP in separate module lists (no block module):
    # the norm after the first attention is outside every block the recognizer can find
    reason = "module transformer.layer_norm1.0 runs between the blocks"
    with pytest.raises(UnsupportedModelError, match=reason):
        recognize_model(graph, model, config, name="tiny_xlm", source="xlm", revision=None)


def test_a_module_the_sample_forward_never_calls_is_refused_by_name():
    config, _ = tiny_config(ZooType("squeezebert", "masked_lm", "SqueezeBertForMaskedLM"), TOKENS)
    graph, model = build_graph_and_model(config)
    with pytest.raises(UnsupportedModelError, match="was not called in the recorded forward"):
        recognize_model(graph, model, config, name="tiny_sq", source="squeezebert", revision=None)
