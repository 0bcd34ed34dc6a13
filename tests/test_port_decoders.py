"""`hf2kh port --verify` on every fixture: each one is either ported and verified or refused with
its reason (OUTCOMES), and independent checks of what a verified port wrote.

Ports are shared through `conftest.ported` (the CLI entry point in-process, once per session).
Independently of hf2kh's own verification, the generated package is imported from disk, the
preset loaded with `keras_hub.models.CausalLM.from_preset`, its logits compared with the HF
model and its greedy generation compared token id by token id (a batch of prompts of different
lengths, each row against HF's greedy for that prompt alone); the generated packages' own tests
run in one pytest subprocess, and ruff checks their code.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import torch

from hf2kh.generate.render import RUFF_SETTINGS
from hf2kh.port import import_generated
from tests.fixtures.cli import AWKWARD_DIR, run_cli
from tests.fixtures.factory import FIXTURES
from tests.fixtures.outcomes import KNOWN_BUGS, OUTCOMES, VERIFIED

DECODERS = [
    name
    for name, outcome in OUTCOMES.items()
    if outcome == VERIFIED and FIXTURES[name].task == "causal_lm"
]
# The verified ports that work today: the ones the independent checks below run on.
WORKING = [name for name in DECODERS if name not in KNOWN_BUGS]
SUBPROCESS_TIMEOUT = 600


def _cases(names):
    return [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[n]))
        if n in KNOWN_BUGS
        else n
        for n in names
    ]


def test_outcomes_cover_every_fixture():
    assert sorted(OUTCOMES) == sorted(FIXTURES)
    assert set(KNOWN_BUGS) <= set(OUTCOMES)


@pytest.mark.parametrize("name", _cases(OUTCOMES))
def test_fixture_is_verified_or_refused_with_its_reason(ported, name):
    port = ported(name)
    expected = OUTCOMES[name]
    if expected != VERIFIED:
        assert port.cli.exit_code == 2, port.cli.describe()
        assert len(port.cli.error_lines) == 1, port.cli.describe()
        assert expected in port.cli.error_lines[0], port.cli.describe()
        assert "Traceback" not in port.cli.stdout + port.cli.stderr
        assert not port.out.exists()
        return
    assert port.cli.exit_code == 0, port.cli.describe()
    assert not port.cli.error_lines, port.cli.describe()
    report = port.report
    assert report["passed"] is True
    assert report["package_dir"] == str(port.out / port.package)
    assert Path(report["package_dir"]).is_dir() and Path(report["preset_dir"]).is_dir()
    groups = {c["group"] for c in report["checks"]}
    expected_groups = {"layers", "blocks", "tokenizer"}
    expected_groups.add("outputs" if FIXTURES[name].task == "base" else "logits")
    if FIXTURES[name].task == "causal_lm":
        expected_groups.add("generation")
    assert expected_groups <= groups
    assert all(c["passed"] for c in report["checks"])
    assert report["weights"]["mapped"] == report["weights"]["total"]
    suite = ET.parse(port.junit).getroot()
    assert suite.get("failures") == "0"
    assert int(suite.get("tests")) == len(report["checks"])


def test_ports_go_into_a_path_with_spaces_and_quotes(ported):
    """Every shared port is written under `out dir/it's "here"`; the verified ones pass, their
    preset loads and their package's tests run from there (the tests below)."""
    port = ported("llama")
    assert port.out.parts[-2:] == AWKWARD_DIR
    assert " " in str(port.out) and "'" in str(port.out) and '"' in str(port.out)
    assert port.cli.exit_code == 0, port.cli.describe()
    assert port.report["preset_dir"] == str(port.out / "preset")
    presets = (port.out / port.package / f"{port.package}_presets.py").read_text()
    assert (
        repr(str(port.out / "preset")) in presets or json.dumps(str(port.out / "preset")) in presets
    )


def _hf_model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    ).eval()


def _greedy_alone(hf, prompt: list[int], new_tokens: int) -> tuple[list[int], float]:
    """HF's greedy continuation of one prompt (full forwards, no cache), and the smallest top-2
    margin on the way."""
    ids = torch.tensor([prompt])
    tokens, margin = [], float("inf")
    with torch.no_grad():
        for _ in range(new_tokens):
            top = torch.topk(hf(input_ids=ids).logits[0, -1], 2)
            margin = min(margin, float(top.values[0] - top.values[1]))
            tokens.append(int(top.indices[0]))
            ids = torch.cat([ids, top.indices[:1].view(1, 1)], dim=1)
    return tokens, margin


PROMPTS = (
    "The quick brown fox",
    "Hi",
    "def add(a, b):\n    return a + b  # the sum of two numbers",
)


@pytest.mark.parametrize("name", WORKING)
def test_preset_logits_and_greedy_ids_match_hf(ported, hf_fixture, name):
    """Independent of hf2kh's verify: the user's path through keras_hub's public API."""
    import keras
    import keras_hub
    from transformers import AutoTokenizer

    port = ported(name)
    assert port.cli.exit_code == 0, port.cli.describe()
    import_generated(port.out, port.package)
    causal_lm = keras_hub.models.CausalLM.from_preset(str(port.out / "preset"))
    prefix = "".join(part.capitalize() for part in port.package.split("_"))
    assert type(causal_lm).__name__ == f"{prefix}CausalLM"
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

    # Greedy generation as token ids: one batch of prompts of different lengths, right-padded;
    # each row must be HF's greedy continuation of that prompt alone.
    tokenizer = AutoTokenizer.from_pretrained(hf_fixture(name))
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    lengths = [len(p) for p in prompts]
    assert len(set(lengths)) == len(lengths), lengths
    total = max(lengths) + 8
    batch_ids = np.zeros((len(prompts), total), "int32")
    batch_mask = np.zeros((len(prompts), total), bool)
    for row, prompt in enumerate(prompts):
        batch_ids[row, : len(prompt)] = prompt
        batch_mask[row, : len(prompt)] = True
    preprocessor, causal_lm.preprocessor = causal_lm.preprocessor, None
    causal_lm.compile(sampler="greedy")
    output = causal_lm.generate(
        {"token_ids": batch_ids, "padding_mask": batch_mask}, stop_token_ids=None
    )
    causal_lm.preprocessor = preprocessor
    generated = keras.ops.convert_to_numpy(output["token_ids"]).astype(int)
    for row, prompt in enumerate(prompts):
        assert generated[row, : len(prompt)].tolist() == prompt
        expected_ids, margin = _greedy_alone(hf, prompt, total - len(prompt))
        assert generated[row, len(prompt) :].tolist() == expected_ids, (
            f"row {row} (prompt length {len(prompt)}), smallest HF top-2 margin {margin:.2e}"
        )

    # The string path (preprocessor, detokenizer) gives HF's text for HF's cached greedy ids.
    prompt_ids = tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    new_tokens = 12
    with torch.no_grad():
        hf_ids = hf.generate(
            prompt_ids,
            attention_mask=torch.ones_like(prompt_ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        )[0]
    text = causal_lm.generate(PROMPTS[0], max_length=prompt_ids.shape[1] + new_tokens)
    assert text == tokenizer.decode(hf_ids, skip_special_tokens=True)


@pytest.fixture(scope="module")
def package_tests(ported, tmp_path_factory):
    """Every verified port's own generated tests, in one pytest subprocess (JUnit per case)."""
    ports = [ported(name) for name in WORKING]
    failed_ports = [p.fixture for p in ports if p.cli.exit_code != 0]
    junit = tmp_path_factory.mktemp("package_tests") / "junit.xml"
    env = {
        **os.environ,
        "KERAS_BACKEND": "torch",
        "PYTHONPATH": os.pathsep.join(str(p.out) for p in ports if p.cli.exit_code == 0),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            *(str(p.out / p.package) for p in ports if p.cli.exit_code == 0),
        ],
        cwd=junit.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    cases: dict[str, list[tuple[str, str]]] = {}
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            # classname: the test module's dotted path from the common root, ending in
            # `<package>.<package>_..._test`
            parts = case.get("classname", "").split(".")
            package = parts[-2] if len(parts) >= 2 else ""
            outcome = "passed"
            for kind in ("failure", "error", "skipped"):
                if case.find(kind) is not None:
                    outcome = kind
            cases.setdefault(package, []).append((case.get("name"), outcome))
    return result, cases, failed_ports


@pytest.mark.parametrize("name", WORKING)
def test_generated_package_tests_pass(package_tests, name):
    result, cases, failed_ports = package_tests
    assert name not in failed_ports
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    mine = cases.get(f"tiny_{name}", [])
    assert len(mine) >= 3, (mine, result.stdout[-3000:])
    assert all(outcome == "passed" for _, outcome in mine), mine


@pytest.mark.parametrize("name", WORKING)
def test_generated_code_is_ruff_clean(ported, name):
    port = ported(name)
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
            str(port.out / port.package),
        ],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout
    header = (port.out / port.package / f"{port.package}_backbone.py").read_text()
    assert header.splitlines()[0].startswith("# Generated by hf2kh from ")


def test_generated_code_only_has_the_features_it_uses(ported):
    def package(name: str) -> Path:
        port = ported(name)
        return port.out / port.package

    llama = package("llama").glob("*.py")
    gpt2_files = {p.name for p in package("gpt2").glob("*.py")}
    assert "tiny_gpt2_rotary_embedding.py" not in gpt2_files  # learned positions, no rope
    assert "tiny_gpt2_layernorm.py" not in gpt2_files  # stock keras LayerNormalization
    assert "sliding_window" not in "".join(p.read_text() for p in llama)
    mistral = (package("mistral") / "tiny_mistral_decoder.py").read_text()
    assert "sliding_window" in mistral
    gemma = (package("gemma") / "tiny_gemma_backbone.py").read_text()
    assert "embedding_scale" in gemma


def test_attention_is_fused_only_where_the_scores_need_nothing_else(ported):
    """`ops.dot_product_attention` computes attention whose scores need only a scale and a mask,
    and a decoder stacks the query heads of a group along the query axis so that its cached keys
    and values are never repeated; ALiBi (bloom), softcapped scores (gemma2) and one shared
    key/value head (falcon's multi-query) keep the explicit float32 softmax. Each of these ports
    verifies against HF (`test_fixture_is_verified_or_refused_with_its_reason`)."""

    def attention(name: str) -> str:
        port = ported(name)
        assert port.cli.exit_code == 0, port.cli.describe()
        return (port.out / port.package / f"{port.package}_attention.py").read_text()

    mistral = attention("mistral")  # 4 query heads sharing 2 key/value heads
    assert "ops.dot_product_attention(" in mistral
    assert "ops.repeat(attention_mask, groups, axis=1)" in mistral
    assert "repeat(key" not in mistral and "repeat(value" not in mistral
    for name in ("bloom", "gemma2", "falcon"):
        code = attention(name)
        assert "ops.dot_product_attention(" not in code, name
        assert "ops.softmax(scores" in code, name


# ----------------------------------------------------------------------------------------------
# Reduced precision on CPU
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_port_verifies_with_the_dtype_tolerance(ported, dtype):
    from hf2kh.verify.compare import TOLERANCES

    port = ported("llama", "--dtype", dtype)
    assert port.cli.exit_code == 0, port.cli.describe()
    report = port.report
    assert report["passed"] is True, [c for c in report["checks"] if not c["passed"]]
    preset_config = json.loads((port.out / "preset" / "config.json").read_text())
    assert dtype in json.dumps(preset_config["config"]["dtype"])
    (logits,) = [c for c in report["checks"] if c["group"] == "logits"]
    # Really computed in reduced precision: beyond float32's tolerance, within the dtype's.
    assert TOLERANCES["float32"] < logits["rel_elementwise"] <= TOLERANCES[dtype]
    (generation,) = [c for c in report["checks"] if c["group"] == "generation"]
    assert generation["passed"]
    assert generation["detail"].startswith("identical") or "near tie" in generation["detail"]
    assert any(
        c["rel_elementwise"] is not None and c["rel_elementwise"] > TOLERANCES["float32"]
        for c in report["checks"]
        if c["group"] == "layers"
    )


# ----------------------------------------------------------------------------------------------
# A hub id, through a mocked download
# ----------------------------------------------------------------------------------------------

HUB_SHA = "0123456789abcdef0123456789abcdef01234567"


def test_hub_id_port_records_the_resolved_revision(hf_fixture, tmp_path, monkeypatch):
    """`hf2kh port org/hub-llama --revision v1`: the revision the hub resolved (a commit sha)
    reaches the generated files' header and report.json."""
    import huggingface_hub

    source = hf_fixture("llama")
    snapshot = tmp_path / "hub" / "models--org--hub-llama" / "snapshots" / HUB_SHA
    snapshot.mkdir(parents=True)
    calls = []

    def fake_snapshot_download(repo_id, *, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision, tuple(allow_patterns or ())))
        if repo_id != "org/hub-llama" or revision not in ("v1", HUB_SHA):
            raise AssertionError(f"unexpected download {repo_id}@{revision}")
        for file in source.iterdir():
            if any(fnmatch.fnmatch(file.name, p) for p in allow_patterns or ["*"]):
                shutil.copy2(file, snapshot / file.name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    work = tmp_path / "work"
    work.mkdir()
    run = run_cli("port", "org/hub-llama", "--revision", "v1", "--out", "ported", cwd=work)
    assert run.exit_code == 0, run.describe()
    assert calls and calls[0][:2] == ("org/hub-llama", "v1")
    assert any(revision == HUB_SHA for _, revision, _ in calls[1:])  # weights pinned to the sha
    out = work / "ported"
    report = json.loads((out / "report.json").read_text())
    assert report["repo"] == "org/hub-llama" and report["revision"] == HUB_SHA
    for path in (out / "hub_llama").glob("*.py"):
        first = path.read_text().splitlines()[0]
        assert first.startswith(f"# Generated by hf2kh from org/hub-llama@{HUB_SHA}."), path


# ----------------------------------------------------------------------------------------------
# Broken checkpoints and refused options, through the CLI entry point in-process
# ----------------------------------------------------------------------------------------------


def _corrupt_copy(source: Path, target: Path, edit) -> Path:
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
    run = run_cli("port", bad, "--out", out, "--name", "extra")
    assert run.exit_code == 2, run.describe()
    assert len(run.error_lines) == 1 and "model.extra_scale" in run.error_lines[0]
    assert "Traceback" not in run.stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_missing_tensor_leaves_a_keras_variable_unfilled(hf_fixture, tmp_path):
    bad = _corrupt_copy(
        hf_fixture("llama"),
        tmp_path / "missing",
        lambda t: t.pop("model.layers.1.mlp.up_proj.weight"),
    )
    run = run_cli("port", bad, "--out", tmp_path / "out", "--name", "missing")
    assert run.exit_code == 2, run.describe()
    (line,) = run.error_lines
    assert "transformer_layer_1/feedforward_intermediate_dense/kernel" in line
    assert "model.layers.1.mlp.up_proj.weight" in line


def test_existing_output_is_not_overwritten_without_force(hf_fixture, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    run = run_cli("port", hf_fixture("llama"), "--out", out)
    assert run.exit_code == 2, run.describe()
    (line,) = run.error_lines
    assert "--force" in line
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_name_shadowing_keras_hub_is_refused(hf_fixture, tmp_path):
    run = run_cli("port", hf_fixture("gemma"), "--out", tmp_path / "o", "--name", "gemma")
    assert run.exit_code == 2, run.describe()
    (line,) = run.error_lines
    assert "shadow" in line and "keras_hub.models.GemmaBackbone" in line


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
