"""GPT-Neo, Gemma 2 and Gemma 3 text on the model IR: each fixture ports and verifies, its IR says
what the config sets (per-layer windows, softcaps, score scale, rope theta per layer type,
sandwich norms), the same IR comes out with every name blanked, and the generated package's own
tests and ruff pass."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest
from transformers import AutoConfig

from hf2kh.generate.render import RUFF_SETTINGS
from hf2kh.inspect.build import build_graph_and_model
from hf2kh.ir import Norm, from_dict, to_dict
from hf2kh.recognize import recognize_model
from hf2kh.recognize.model import _step_text

FAMILIES = ["gpt_neo", "gemma2", "gemma3"]

PRE_NORM = [
    "h = self_attention_layernorm(x)",
    "attention = self_attention(h)",
    "x = x + attention",
    "h = feedforward_layernorm(x)",
    "feedforward = feedforward(h)",
    "x = x + feedforward",
]
SANDWICH = [
    "h = self_attention_layernorm(x)",
    "attention = self_attention(h)",
    "attention = post_attention_layernorm(attention)",
    "x = x + attention",
    "h = feedforward_layernorm(x)",
    "feedforward = feedforward(h)",
    "feedforward = post_feedforward_layernorm(feedforward)",
    "x = x + feedforward",
]


def _ir(port):
    return from_dict(json.loads((port.out / "model_ir.json").read_text()))


def _steps(ir, k=0):
    return [_step_text(s) for s in ir.block_types[k].steps]


def _normalized(steps):
    """Residual adds as `x = x + y` whatever the operand order HF used."""
    out = []
    for s in steps:
        left, _, right = s.partition(" = ")
        parts = right.split(" + ")
        if len(parts) == 2 and "x" in parts:
            right = " + ".join(["x", *(p for p in parts if p != "x")])
        out.append(f"{left} = {right}")
    return out


@pytest.mark.parametrize("name", FAMILIES)
def test_port_verifies(ported, name):
    port = ported(name)
    assert port.cli.exit_code == 0, port.cli.describe()
    report = port.report
    assert report["passed"] is True
    names = [c["name"] for c in report["checks"]]
    assert any("greedy" in n for n in names) and any("logits" in n for n in names), names
    assert all(c["passed"] for c in report["checks"])


def test_gpt_neo_ir(ported, hf_fixture):
    config = AutoConfig.from_pretrained(hf_fixture("gpt_neo"))
    ir = _ir(ported("gpt_neo"))
    # local layers attend to window_size tokens, global ones to all; one block type for both
    expected = [config.window_size if t == "local" else None for t in config.attention_layers]
    assert [o.sliding_window for o in ir.layer_options] == expected == [None, 8]
    assert ir.layers == (0, 0)
    # no scaling anywhere on the score path: scale 1.0, not head_dim**-0.5
    assert ir.attention.scale == 1.0 and ir.attention.softcap is None
    assert _normalized(_steps(ir)) == PRE_NORM
    assert ir.head.softcap is None


def test_gemma2_ir(ported, hf_fixture):
    config = AutoConfig.from_pretrained(hf_fixture("gemma2"))
    ir = _ir(ported("gemma2"))
    windows = [
        config.sliding_window if t == "sliding_attention" else None for t in config.layer_types
    ]
    assert [o.sliding_window for o in ir.layer_options] == windows == [8, None]
    assert len(ir.block_types) == 1
    attention = ir.attention
    assert attention.softcap == config.attn_logit_softcapping == 20.0
    assert ir.head.softcap == config.final_logit_softcapping == 15.0
    assert math.isclose(attention.scale, config.query_pre_attn_scalar**-0.5, rel_tol=1e-12)
    assert not math.isclose(attention.scale, attention.head_dim**-0.5)
    assert attention.head_dim == config.head_dim and attention.num_key_value_heads == 2
    assert _normalized(_steps(ir)) == SANDWICH
    norms = [c.spec for c in ir.block_types[0].components if isinstance(c.spec, Norm)]
    assert len(norms) == 4 and all(n.scale_offset == 1.0 and n.epsilon == 1e-5 for n in norms)


def test_gemma3_ir(ported, hf_fixture):
    config = AutoConfig.from_pretrained(hf_fixture("gemma3"))
    ir = _ir(ported("gemma3"))
    windows = [
        config.sliding_window if t == "sliding_attention" else None for t in config.layer_types
    ]
    assert [o.sliding_window for o in ir.layer_options] == windows == [6, 6, None]
    # the rope differs between layer types: two block types of one structure
    thetas = [ir.block_type(i).attention.rope.theta for i in range(ir.num_layers)]
    assert thetas == [config.rope_parameters[t]["rope_theta"] for t in config.layer_types]
    assert thetas == [5000.0, 5000.0, 200000.0] and ir.layers == (0, 0, 1)
    attention = ir.attention
    assert attention.qk_norm is not None and attention.qk_norm.scale_offset == 1.0
    assert attention.softcap is None  # Gemma 3's attention ignores attn_logit_softcapping
    assert ir.head.softcap == config.final_logit_softcapping == 12.0
    assert math.isclose(attention.scale, config.query_pre_attn_scalar**-0.5, rel_tol=1e-12)
    assert _normalized(_steps(ir, 0)) == _normalized(_steps(ir, 1)) == SANDWICH
    backbone = (ported("gemma3").out / "tiny_gemma3" / "tiny_gemma3_backbone.py").read_text()
    assert "rope_max_wavelength=rope_max_wavelengths[i]" in backbone
    assert "sliding_window=sliding_windows[i]" in backbone


def _without_names(data):
    if isinstance(data, dict):
        return {
            k: _without_names(v)
            for k, v in data.items()
            if k not in ("hf_class", "hf_model_class", "evidence")
        }
    if isinstance(data, list):
        return [_without_names(v) for v in data]
    return data


@pytest.mark.parametrize("name", FAMILIES)
def test_same_ir_with_every_name_blanked(hf_fixture, name):
    """model_type, architectures and every module's class renamed: the same IR."""
    path = hf_fixture(name)
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    original = recognize_model(graph, model, config, name="m", source="s", revision=None)

    config.__class__ = type("RenamedConfig", (type(config),), {"model_type": "renamed"})
    config.model_type = "renamed"
    config.architectures = []
    renamed_classes: dict[type, type] = {}
    for module in model.modules():
        cls = type(module)
        if cls not in renamed_classes:
            renamed_classes[cls] = type(f"Module{len(renamed_classes)}", (cls,), {})
        module.__class__ = renamed_classes[cls]
    graph.model_type = "renamed"
    graph.architectures = []
    graph.model_class = "Renamed"
    for node in graph.modules:
        node.class_name = "Module"
    renamed = recognize_model(graph, model, config, name="m", source="s", revision=None)
    assert _without_names(to_dict(renamed)) == _without_names(to_dict(original))
    assert renamed.block_types[0].hf_class.startswith("Module")


@pytest.mark.parametrize("name", FAMILIES)
def test_generated_package_tests_and_ruff_pass(ported, name):
    port = ported(name)
    assert port.cli.exit_code == 0, port.cli.describe()
    package = port.out / port.package
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package)],
        cwd=port.out,
        env={**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(port.out)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and not re.search(r"failed|error", summary), summary
    lint = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            *RUFF_SETTINGS,
            "--isolated",
            "--select",
            "E,F,W,I,B",
            "--ignore",
            "E501",
            str(package),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert lint.returncode == 0, lint.stdout
