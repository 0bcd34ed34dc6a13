"""The stem probe records each block's arguments for the later probes. A key/value cache among
them (XLM hands its blocks one even with `use_cache=False`) would collect the meta-device run's
keys and mix devices in every later probe: the probes get no cache, and XLM is refused with its
reason instead of crashing."""

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
    with pytest.raises(UnsupportedModelError, match="cannot tell the MLP output projection"):
        recognize_model(graph, model, config, name="tiny_xlm", source="xlm", revision=None)
