"""A model whose sample forward cannot run on the `meta` device (data-dependent code such as
`.item()` in a hybrid model's recurrent mixer) is recorded on the CPU instead when it is small,
so it reaches the recognizer and is ported or refused with a reason; a large one is refused with
the meta device's error and its size."""

from __future__ import annotations

import pytest

from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect import build
from hf2kh.zoo.build import tiny_config
from hf2kh.zoo.shrink import Tokens
from hf2kh.zoo.types import ZooType

TOKENS = Tokens(480, {"bos": 3, "eos": 3, "unk": 3, "pad": None})
# Falcon-H1: attention and a Mamba-2 mixer side by side; the mixer calls `.item()` on meta.
FALCON_H1 = ZooType("falcon_h1", "causal_lm", "FalconH1ForCausalLM")


@pytest.fixture(scope="module")
def config():
    return tiny_config(FALCON_H1, TOKENS)[0]


def test_the_meta_forward_fails_and_the_cpu_records_the_same_model(config):
    meta_model = build.instantiate(config, "meta")
    with pytest.raises(Exception, match="meta"):
        build.record_forward(meta_model, build.sample_inputs(config, "meta"))

    graph, model = build.build_graph_and_model(config)

    assert next(model.parameters()).is_meta  # probes still get the meta model
    expected = {(n, tuple(p.shape)) for n, p in meta_model.named_parameters()}
    assert {(p.name, p.shape) for p in graph.parameters} == expected
    recorded = {m.path for m in graph.modules if m.calls}
    assert {f"model.layers.{i}.mamba" for i in range(config.num_hidden_layers)} <= recorded
    assert f"model.layers.{config.num_hidden_layers - 1}.self_attn" in recorded
    assert "lm_head" in recorded


def test_a_large_model_is_refused_with_the_meta_error(config, monkeypatch):
    monkeypatch.setattr(build, "CPU_FALLBACK_MAX_PARAMS", 1000)
    with pytest.raises(UnsupportedModelError) as refused:
        build.build_graph_and_model(config)
    message = str(refused.value)
    assert message.startswith("the sample forward of FalconH1ForCausalLM failed on the meta device")
    assert "too large" in message and "parameters, to record on the CPU instead" in message
