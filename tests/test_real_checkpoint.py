"""A real pretrained decoder, end to end: SmolLM2-135M-Instruct (Llama architecture, 30 layers,
GQA 9/3, head_dim 64, rope theta 1e5, tied head, real byte-level BPE tokenizer).

Random tiny fixtures hide what real activations expose (massive activations, real token
statistics); this ports the real thing, verifies it, and checks the user's path on its own.
"""

from __future__ import annotations

import pytest
import torch

from hf2kh.port import PortOptions, import_generated, run_port
from tests.fixtures import real
from tests.fixtures.real import smollm2_checkpoint


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    checkpoint = smollm2_checkpoint()  # dequantized once, then read from the on-disk cache
    out = tmp_path_factory.mktemp("smollm2_port") / "out"
    result = run_port(
        PortOptions(repo=str(checkpoint), out=out, name="smollm2", verify=True),
        progress=lambda line: None,
    )
    return checkpoint, out, result


def test_port_verifies(smollm2):
    _, _, result = smollm2
    report = result.verification
    failed = [(c.name, c.detail) for c in report.checks if not c.passed]
    assert report.passed, failed
    by_group = {c.group for c in report.checks}
    assert {"layers", "blocks", "logits", "generation", "tokenizer"} <= by_group
    blocks = [c for c in report.checks if c.group == "blocks"]
    assert len(blocks) == 30 and all(c.passed for c in blocks)
    assert result.weights_mapped == result.weights_total


def test_recognized_spec(smollm2):
    _, out, _ = smollm2
    convert = (out / "smollm2" / "convert_smollm2_checkpoints.py").read_text()
    for expected in (
        '"tie_word_embeddings": True',
        '"num_key_value_heads": 3',
        '"head_dim": 64',
        '"rope_max_wavelength": 100000.0',
    ):
        assert expected in convert


def test_text_generation_matches_hf(smollm2):
    import keras_hub
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint, out, _ = smollm2
    import_generated(out, "smollm2")
    causal_lm = keras_hub.models.CausalLM.from_preset(str(out / "preset"))
    causal_lm.compile(sampler="greedy")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    hf = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    prompt = "The capital of France is"
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hf_ids = hf.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False
        )
    expected = tokenizer.decode(hf_ids[0], skip_special_tokens=True)
    text = causal_lm.generate(prompt, max_length=ids.shape[1] + 10)
    assert text == expected
    assert "Paris" in text  # real weights, real answer


def test_smollm2_checkpoint_is_cached_by_package_versions(smollm2):
    checkpoint, _, _ = smollm2
    key = {
        "recipe": real.SMOLLM2_RECIPE,
        "gguf_file": real.SMOLLM2_GGUF,
        **real.package_versions(real.SMOLLM2_KEY_DISTRIBUTIONS),
    }
    assert {"transformers", "gguf", "torch"} <= set(key)
    assert checkpoint == real.cache_root() / f"smollm2-135m-instruct-{real.cache_key(key)}"
    assert (checkpoint / real.COMPLETE).is_file() and (checkpoint / "model.safetensors").is_file()


def test_cached_build_builds_once_per_key_and_rebuilds_a_damaged_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("HF2KH_TEST_CACHE", str(tmp_path / "cache"))
    builds = []

    def build(out):
        builds.append(out)
        (out / "weights.bin").write_bytes(b"w" * (len(builds) + 10))

    first = real.cached_build("thing", {"torch": "1"}, build)
    assert first.parent == tmp_path / "cache" and len(builds) == 1
    assert real.cached_build("thing", {"torch": "1"}, build) == first and len(builds) == 1
    # another package version: another entry
    second = real.cached_build("thing", {"torch": "2"}, build)
    assert second != first and len(builds) == 2
    # a damaged entry (a file changed size) is rebuilt, as is one without its marker
    (first / "weights.bin").write_bytes(b"x")
    assert real.cached_build("thing", {"torch": "1"}, build) == first and len(builds) == 3
    (first / real.COMPLETE).unlink()
    assert real.cached_build("thing", {"torch": "1"}, build) == first and len(builds) == 4
    # a failed build leaves nothing behind
    with pytest.raises(RuntimeError):
        real.cached_build("thing", {"torch": "3"}, lambda out: (_ for _ in ()).throw(RuntimeError))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [first.name, second.name]
    )


def test_package_versions_key_the_cache(monkeypatch):
    versions = real.package_versions(real.SMOLLM2_KEY_DISTRIBUTIONS)
    assert all(v != "not installed" for v in versions.values()), versions
    key = real.cache_key(versions)
    monkeypatch.setattr(
        real.importlib.metadata, "version", lambda name: "0.0" if name == "gguf" else versions[name]
    )
    assert real.cache_key(real.package_versions(real.SMOLLM2_KEY_DISTRIBUTIONS)) != key
