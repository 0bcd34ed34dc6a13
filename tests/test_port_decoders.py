"""`hf2kh port --verify` on every decoder family, and independent checks of what it wrote.

Each fixture is ported once per session through the real CLI (typer app, in process). Then,
independently of hf2kh's own verification, the generated package is imported from disk, the
preset loaded with `keras_hub.models.CausalLM.from_preset`, and its logits and text generation
compared with the HF model; the generated package's own tests run under pytest, and ruff checks
its code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hf2kh.cli import app
from hf2kh.generate.render import RUFF_SETTINGS
from hf2kh.port import import_generated

DECODERS = [
    "llama",
    "llama_tied",
    "llama3",
    "llama_bias",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gpt2",
    "gpt_neox",
]

_PORTS: dict[str, tuple[Path, object]] = {}


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="session")
def ported(hf_fixture, tmp_path_factory):
    """name -> (output dir, CLI result), porting each fixture at most once."""

    def get(name: str):
        if name not in _PORTS:
            out = tmp_path_factory.mktemp("ports") / name
            try:
                result = run_cli(
                    "port",
                    str(hf_fixture(name)),
                    "--out",
                    str(out),
                    "--name",
                    f"tiny_{name}",
                    "--verify",
                    "--junit",
                    str(out.parent / "junit.xml"),
                )
            except Exception as exc:  # noqa: BLE001 - kept so the failing test shows it
                result = exc
            _PORTS[name] = (out, result)
        return _PORTS[name]

    return get


def _hf_model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    ).eval()


@pytest.mark.parametrize("name", DECODERS)
def test_port_verify_passes(ported, name):
    out, result = ported(name)
    assert getattr(result, "exit_code", 1) == 0, getattr(result, "output", result)
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True
    assert Path(report["package_dir"]).is_dir() and Path(report["preset_dir"]).is_dir()
    groups = {c["group"] for c in report["checks"]}
    assert {"layers", "blocks", "logits", "generation", "tokenizer"} <= groups
    assert all(c["passed"] for c in report["checks"])
    assert report["weights"]["mapped"] == report["weights"]["total"]
    suite = ET.parse(out.parent / "junit.xml").getroot()
    assert suite.get("failures") == "0"
    assert int(suite.get("tests")) == len(report["checks"])


@pytest.mark.parametrize("name", DECODERS)
def test_preset_logits_and_text_generation_match_hf(ported, hf_fixture, name):
    """Independent of hf2kh's verify: the user's path through keras_hub's public API."""
    import keras
    import keras_hub
    from transformers import AutoTokenizer

    out, _ = ported(name)
    import_generated(out, f"tiny_{name}")
    causal_lm = keras_hub.models.CausalLM.from_preset(str(out / "preset"))
    assert type(causal_lm).__name__ == f"Tiny{name.title().replace('_', '')}CausalLM"
    hf = _hf_model(hf_fixture(name))
    rng = np.random.default_rng(0)
    token_ids = rng.integers(0, hf.config.vocab_size, size=(2, 19)).astype("int32")
    padding_mask = np.ones_like(token_ids)
    padding_mask[1, 12:] = 0
    with torch.no_grad():
        expected = hf(
            input_ids=torch.as_tensor(token_ids, dtype=torch.long),
            attention_mask=torch.as_tensor(padding_mask),
        ).logits.numpy()
    got = keras.ops.convert_to_numpy(
        causal_lm({"token_ids": token_ids, "padding_mask": padding_mask})
    )
    valid = padding_mask.astype(bool)
    error = np.abs(got[valid] - expected[valid]).max() / np.sqrt(np.mean(expected[valid] ** 2))
    assert error <= 1e-5

    tokenizer = AutoTokenizer.from_pretrained(hf_fixture(name))
    prompt = "The quick brown fox"
    prompt_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    new_tokens = 12
    with torch.no_grad():
        hf_ids = hf.generate(
            prompt_ids,
            attention_mask=torch.ones_like(prompt_ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        )[0]
    expected_text = tokenizer.decode(hf_ids, skip_special_tokens=True)
    causal_lm.compile(sampler="greedy")
    text = causal_lm.generate(prompt, max_length=prompt_ids.shape[1] + new_tokens)
    assert text == expected_text


@pytest.mark.parametrize("name", DECODERS)
def test_generated_package_tests_pass(ported, name):
    out, _ = ported(name)
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(out)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"tiny_{name}"],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout


@pytest.mark.parametrize("name", DECODERS)
def test_generated_code_is_ruff_clean(ported, name):
    out, _ = ported(name)
    result = subprocess.run(
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
            str(out / f"tiny_{name}"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
    header = (out / f"tiny_{name}" / f"tiny_{name}_backbone.py").read_text().splitlines()[0]
    assert header.startswith("# Generated by hf2kh from ")


def test_generated_code_only_has_the_features_it_uses(ported):
    llama = (ported("llama")[0] / "tiny_llama").glob("*.py")
    gpt2_dir = ported("gpt2")[0] / "tiny_gpt2"
    gpt2_files = {p.name for p in gpt2_dir.glob("*.py")}
    assert "tiny_gpt2_rotary_embedding.py" not in gpt2_files  # learned positions, no rope
    assert "tiny_gpt2_layernorm.py" not in gpt2_files  # stock keras LayerNormalization
    assert "sliding_window" not in "".join(p.read_text() for p in llama)
    mistral = (ported("mistral")[0] / "tiny_mistral" / "tiny_mistral_decoder.py").read_text()
    assert "sliding_window" in mistral
    gemma = (ported("gemma")[0] / "tiny_gemma" / "tiny_gemma_backbone.py").read_text()
    assert "embedding_scale" in gemma


def _corrupt_copy(source: Path, target: Path, edit) -> Path:
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    tensors = load_file(target / "model.safetensors")
    edit(tensors)
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_extra_tensor_fails_the_port_naming_it(hf_fixture, tmp_path):
    bad = _corrupt_copy(
        hf_fixture("llama"),
        tmp_path / "extra",
        lambda t: t.update({"model.extra_scale": torch.ones(3)}),
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "hf2kh.cli", "port", str(bad), "--out", str(out), "--name", "extra"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "model.extra_scale" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_missing_tensor_leaves_a_keras_variable_unfilled(hf_fixture, tmp_path):
    bad = _corrupt_copy(
        hf_fixture("llama"),
        tmp_path / "missing",
        lambda t: t.pop("model.layers.1.mlp.up_proj.weight"),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf2kh.cli",
            "port",
            str(bad),
            "--out",
            str(tmp_path / "out"),
            "--name",
            "missing",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "transformer_layer_1/feedforward_intermediate_dense/kernel" in result.stderr
    assert "model.layers.1.mlp.up_proj.weight" in result.stderr


def test_existing_output_is_not_overwritten_without_force(hf_fixture, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = subprocess.run(
        [sys.executable, "-m", "hf2kh.cli", "port", str(hf_fixture("llama")), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "--force" in result.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_name_shadowing_keras_hub_is_refused(hf_fixture, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf2kh.cli",
            "port",
            str(hf_fixture("gemma")),
            "--out",
            str(tmp_path / "o"),
            "--name",
            "gemma",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "shadow" in result.stderr


def test_gpt2_checkpoint_in_original_layout(hf_fixture, tmp_path):
    """Saved from the base model like the original GPT-2 (no `transformer.` prefix) and carrying
    the old causal-mask buffers `h.N.attn.bias`: transformers loads it, and so does the port."""
    from safetensors.torch import load_file

    from hf2kh.port import PortOptions, run_port

    def to_original_layout(tensors):
        stored = {
            k.removeprefix("transformer."): v for k, v in tensors.items() if k != "lm_head.weight"
        }
        layers = {k.split(".")[1] for k in stored if k.startswith("h.")}
        for i in layers:
            stored[f"h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64, dtype=torch.bool))[
                None, None
            ]
        tensors.clear()
        tensors.update(stored)

    ckpt = _corrupt_copy(hf_fixture("gpt2"), tmp_path / "gpt2_original", to_original_layout)
    assert "h.0.attn.c_attn.weight" in load_file(ckpt / "model.safetensors")
    result = run_port(
        PortOptions(repo=str(ckpt), out=tmp_path / "out", name="gpt2_original", verify=True),
        progress=lambda line: None,
    )
    assert result.verification.passed, [c.name for c in result.verification.checks if not c.passed]
    table = json.loads((result.package_dir / "weight_map.json").read_text())
    assert "h.0.attn.c_attn.weight" in {row["hf_name"] for row in table["rows"]}
    assert "h.0.attn.bias" in table["declared"]
    assert result.weights_mapped == result.weights_total
