"""hf2kh.inspect and `hf2kh inspect`: the layer graph of every fixture, a real checkpoint and a
7B-class config, checked against transformers and against the dataflow a block really has.

Each fixture is inspected once per session (`inspected`), through the CLI in-process; one run goes
through the installed console script in a subprocess. Dataflow checks use value ids from the
graph read back from the JSON the CLI wrote, not module or class names.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from hf2kh.cli import app, main
from hf2kh.inspect.dataflow import Step, block_steps, calls_within, derives_from, first_call
from hf2kh.inspect.graph import SCHEMA_VERSION, LayerGraph
from hf2kh.inspect.render import human_count, render_tree
from tests.fixtures.factory import FIXTURES, auto_class
from tests.fixtures.real import real_checkpoint_dir

LLAMA_STYLE = ("llama", "mistral", "qwen2", "qwen3", "gemma")
PARALLEL = ("gpt_neox", "phi", "falcon")
SHARED_NORM = ("phi", "falcon")
# Wide enough that rich never wraps a tree line in the captured CLI output.
CLI_ENV = {"COLUMNS": "240"}


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


@dataclass
class Inspected:
    checkpoint: Path
    json_path: Path
    data: dict  # the JSON the CLI wrote
    graph: LayerGraph  # LayerGraph.from_dict(data)
    output: str  # what the CLI printed (the tree view)


def run_cli(*args: str) -> str:
    """`hf2kh ARGS` in-process; returns stdout, fails the test on a non-zero exit."""
    result = CliRunner().invoke(app, list(args), env=CLI_ENV)
    if result.exit_code != 0:
        detail = result.output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            import traceback

            detail += "".join(traceback.format_exception(result.exception))
        pytest.fail(f"hf2kh {' '.join(args)} exited {result.exit_code}:\n{detail}")
    return result.output


def hf2kh_command() -> list[str]:
    """The installed `hf2kh` console script (next to this interpreter, else on PATH)."""
    script = Path(sys.executable).with_name("hf2kh")
    if script.is_file():
        return [str(script)]
    found = shutil.which("hf2kh")
    if found is None:
        pytest.fail("the hf2kh console script is not installed; run `pip install -e .`")
    return [found]


def child_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **CLI_ENV}


@pytest.fixture(scope="session")
def inspected(hf_fixture, tmp_path_factory):
    """`get(name) -> Inspected`: `hf2kh inspect <fixture> --json FILE`, run once per session."""
    done: dict[str, Inspected] = {}
    out_dir = tmp_path_factory.mktemp("inspect_json")

    def get(name: str) -> Inspected:
        if name not in done:
            checkpoint = hf_fixture(name)
            json_path = out_dir / f"{name}.json"
            output = run_cli("inspect", str(checkpoint), "--json", str(json_path))
            data = json.loads(json_path.read_text())
            done[name] = Inspected(checkpoint, json_path, data, LayerGraph.from_dict(data), output)
        return done[name]

    return get


def expected_ties(model: torch.nn.Module) -> set[tuple[str, str]]:
    """(extra name, canonical name) of every parameter registered under more than one name."""
    canonical: dict[int, str] = {}
    ties = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in canonical:
            ties.add((name, canonical[id(p)]))
        canonical.setdefault(id(p), name)
    return ties


def module_path(model: torch.nn.Module, module: torch.nn.Module) -> str:
    return next(path for path, m in model.named_modules() if m is module)


def check_against_model(data: dict, model: torch.nn.Module) -> None:
    """The JSON's parameters, modules and ties are exactly the loaded model's."""
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert [(p["name"], tuple(p["shape"])) for p in data["parameters"]] == [
        (name, tuple(p.shape)) for name, p in model.named_parameters()
    ]
    assert {p["dtype"] for p in data["parameters"]} == {"float32"}
    assert [m["path"] for m in data["modules"]] == [path for path, _ in model.named_modules()]
    by_path = {m["path"]: m for m in data["modules"]}
    for path, module in model.named_modules():
        assert by_path[path]["class_name"] == type(module).__name__, path
        assert by_path[path]["num_params"] == sum(p.numel() for p in module.parameters()), path
    assert {(t["name"], t["target"]) for t in data["tied"]} == expected_ties(model)
    assert LayerGraph.from_dict(data).to_dict() == data


def subtree_shapes(graph: LayerGraph, path: str) -> list[tuple[int, ...]]:
    return [p.shape for p in graph.parameters if p.name.startswith(f"{path}.")]


def is_norm(graph: LayerGraph, path: str) -> bool:
    """Evidence, not names: only 1-D parameters (scale, maybe bias)."""
    shapes = subtree_shapes(graph, path)
    return bool(shapes) and all(len(s) == 1 for s in shapes)


def is_attention(graph: LayerGraph, path: str) -> bool:
    return any(c.target == "softmax" for c in calls_within(graph, path))


def is_mlp(graph: LayerGraph, path: str) -> bool:
    shapes = subtree_shapes(graph, path)
    return any(len(s) == 2 for s in shapes) and not is_attention(graph, path)


def block_paths(graph: LayerGraph) -> list[str]:
    (group,) = graph.block_groups
    return [f"{group.container}.{i}" for i in group.indices]


def module_steps(graph: LayerGraph, block: str) -> dict[str, Step]:
    """The block's attention and MLP steps and its norm steps, found by evidence."""
    steps = [s for s in block_steps(graph, block) if s.is_module]
    paths = {s.name: f"{block}.{s.name}" for s in steps}
    (attn,) = [s for s in steps if is_attention(graph, paths[s.name])]
    (mlp,) = [s for s in steps if is_mlp(graph, paths[s.name])]
    norms = [s for s in steps if is_norm(graph, paths[s.name])]
    return {"attn": attn, "mlp": mlp, **{f"norm{i}": s for i, s in enumerate(norms)}}


# ----------------------------------------------------------------------------------------------
# 1. Every fixture: the JSON is the transformers model
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FIXTURES))
def test_json_matches_transformers_model(name, inspected):
    result = inspected(name)
    spec = FIXTURES[name]
    model = auto_class(spec.task).from_pretrained(str(result.checkpoint))
    check_against_model(result.data, model)
    data = result.data
    assert data["model_type"] == spec.family
    assert data["model_class"] == type(model).__name__
    assert data["sample_input"]["input_ids"] == data["sample_input"]["attention_mask"]
    assert data["block_groups"], "no repeated blocks found"
    assert f"layer graph written to {result.json_path}" in result.output.replace("\n", "")

    # The head is reported tied exactly when the loaded model shares the embedding tensor.
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    # A tie has no direction: the name transformers lists first is the canonical one, and
    # XLM-RoBERTa registers its LM head before the encoder.
    tied = {frozenset((t["name"], t["target"])) for t in data["tied"]}
    if head is None:
        assert spec.task in ("sequence_classification", "base")  # no LM head to tie
        return
    head_tie = frozenset(
        (f"{module_path(model, head)}.weight", f"{module_path(model, embed)}.weight")
    )
    assert (head_tie in tied) == (head.weight is embed.weight)
    declared = spec.config.get("tie_word_embeddings")
    if declared is not None:
        assert (head_tie in tied) == declared, f"config says tie_word_embeddings={declared}"


def test_some_fixtures_tie_and_some_do_not(inspected):
    """The tie check above is not vacuous: both cases occur among the causal LMs."""
    heads = {"llama_tied": "lm_head.weight", "llama": "lm_head.weight", "gpt2": "lm_head.weight"}
    tied = {n: {t["name"] for t in inspected(n).data["tied"]} for n in heads}
    assert heads["llama_tied"] in tied["llama_tied"]
    assert heads["gpt2"] in tied["gpt2"]
    assert heads["llama"] not in tied["llama"]
    assert "lm_head.weight" in {p["name"] for p in inspected("llama").data["parameters"]}


def test_console_script_subprocess(inspected, tmp_path):
    """One real run of the installed `hf2kh` script writes the same JSON as the in-process CLI."""
    name = "llama_tied"
    reference = inspected(name)
    out = tmp_path / "graph.json"
    start = time.perf_counter()
    proc = subprocess.run(
        [*hf2kh_command(), "inspect", str(reference.checkpoint), "--json", str(out)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=300,
    )
    print(f"hf2kh inspect {name} (subprocess): {time.perf_counter() - start:.1f}s")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert json.loads(out.read_text()) == reference.data
    assert "LlamaForCausalLM" in proc.stdout


# ----------------------------------------------------------------------------------------------
# 2. Sequential pre-norm blocks: norm -> attention -> add -> norm -> MLP -> add
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LLAMA_STYLE)
def test_llama_style_block_dataflow(name, inspected):
    graph = inspected(name).graph
    blocks = block_paths(graph)
    assert len(blocks) == FIXTURES[name].config["num_hidden_layers"]
    previous_out = None
    for block in blocks:
        head = first_call(graph, block)
        block_in, block_out = head.inputs[0], head.outputs[0]
        steps = block_steps(graph, block)
        assert [s.call.kind for s in steps] == [
            "module",
            "module",
            "function",
            "module",
            "module",
            "function",
        ], [s.name for s in steps]
        norm1, attn, add1, norm2, mlp, add2 = steps
        assert is_norm(graph, f"{block}.{norm1.name}")
        assert is_attention(graph, f"{block}.{attn.name}")
        assert is_norm(graph, f"{block}.{norm2.name}")
        assert is_mlp(graph, f"{block}.{mlp.name}")
        assert add1.name == add2.name == "add"
        assert norm1.name != norm2.name

        attn_out, mlp_out = attn.call.outputs[0], mlp.call.outputs[0]
        add1_out, add2_out = add1.call.outputs[0], add2.call.outputs[0]
        for value in (attn_out, mlp_out, add1_out, add2_out):
            assert graph.value(value).shape == graph.value(block_in).shape
        # norm reads the block input, attention reads the norm
        assert norm1.call.inputs[0] == block_in
        assert attn.call.inputs[0] == norm1.call.outputs[0]
        # first residual: block input + attention output
        assert sorted(add1.call.inputs) == sorted([block_in, attn_out])
        # second norm reads the first residual, the MLP reads that norm
        assert norm2.call.inputs[0] == add1_out
        assert mlp.call.inputs[0] == norm2.call.outputs[0]
        # second residual: first residual + MLP output, and it is the block's output
        assert sorted(add2.call.inputs) == sorted([add1_out, mlp_out])
        assert add2_out == block_out
        # the same, as transitive dependencies
        assert derives_from(graph, attn_out, block_in)
        assert derives_from(graph, mlp.call.inputs[0], attn_out)
        assert derives_from(graph, block_out, mlp_out)
        assert not derives_from(graph, attn_out, add1_out)
        assert not derives_from(graph, attn.call.inputs[0], attn_out)
        # blocks are chained: this block reads the previous block's output
        if previous_out is not None:
            assert block_in == previous_out
        previous_out = block_out


# ----------------------------------------------------------------------------------------------
# 3. Parallel blocks: attention and MLP both read the block input, not each other
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PARALLEL)
def test_parallel_block_dataflow(name, inspected):
    graph = inspected(name).graph
    for block in block_paths(graph):
        head = first_call(graph, block)
        block_in, block_out = head.inputs[0], head.outputs[0]
        roles = module_steps(graph, block)
        attn, mlp = roles["attn"].call, roles["mlp"].call
        attn_in, attn_out = attn.inputs[0], attn.outputs[0]
        mlp_in, mlp_out = mlp.inputs[0], mlp.outputs[0]

        assert attn.index < mlp.index
        assert not derives_from(graph, mlp_in, attn_out)
        assert derives_from(graph, mlp_in, block_in)
        assert derives_from(graph, attn_in, block_in)
        # both branches and the residual reach the block output
        assert derives_from(graph, block_out, attn_out)
        assert derives_from(graph, block_out, mlp_out)
        last = block_steps(graph, block)[-1]
        assert last.name == "add" and block_in in last.call.inputs
        assert last.call.outputs[0] == block_out

        norms = [roles[k].call for k in roles if k.startswith("norm")]
        if name in SHARED_NORM:
            # one norm, and attention and MLP read the very same value
            assert len(norms) == 1
            assert attn_in == mlp_in == norms[0].outputs[0]
            assert norms[0].inputs[0] == block_in
        else:
            # two norms, each reading the block input, feeding attention and MLP separately
            assert len(norms) == 2
            assert attn_in != mlp_in
            assert [n.inputs[0] for n in norms] == [block_in, block_in]
            assert {n.outputs[0] for n in norms} == {attn_in, mlp_in}


def test_sequential_blocks_are_not_parallel(inspected):
    """The parallel check above distinguishes: in llama the MLP input derives from attention."""
    graph = inspected("llama").graph
    roles = module_steps(graph, block_paths(graph)[0])
    assert derives_from(graph, roles["mlp"].call.inputs[0], roles["attn"].call.outputs[0])


# ----------------------------------------------------------------------------------------------
# 4. Repeated blocks: identical ones collapse, local/global ones are variants
# ----------------------------------------------------------------------------------------------


def test_gpt_neo_local_global_variants(inspected):
    graph = inspected("gpt_neo").graph
    (group,) = graph.block_groups
    assert group.container == "transformer.h"
    assert group.indices == [0, 1]
    assert not group.identical
    assert [v.indices for v in group.variants] == [[0], [1]]
    assert group.variants[0].differences == []
    differences = group.variants[1].differences
    assert any("attention_type" in d and "global" in d and "local" in d for d in differences)


@pytest.mark.parametrize("name", ["llama", "llama_bias"])
def test_llama_blocks_collapse(name, inspected):
    graph = inspected(name).graph
    (group,) = graph.block_groups
    layers = FIXTURES[name].config["num_hidden_layers"]
    assert group.container == "model.layers"
    assert group.class_name == "LlamaDecoderLayer"
    assert group.identical
    assert [v.indices for v in group.variants] == [list(range(layers))]
    assert group.variants[0].differences == []


# ----------------------------------------------------------------------------------------------
# 5. A 7B-class config alone: no weights, little memory
# ----------------------------------------------------------------------------------------------

LLAMA_7B = dict(
    model_type="llama",
    architectures=["LlamaForCausalLM"],
    hidden_size=4096,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=14336,
    vocab_size=128256,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    tie_word_embeddings=False,
)


# Runs `hf2kh ARGS` through the console script's entry point in a fresh interpreter, then writes
# that interpreter's own peak RSS (VmHWM of /proc/self/status, KiB) to the file named by the first
# argument: the measurement is of this one process, whatever ran before it. (Not ru_maxrss: Linux
# carries the forking parent's high-water mark into the child's RUSAGE_SELF at exec, so a child
# of a large pytest process would report the parent's peak.)
PEAK_RSS_WRAPPER = """
import sys
report, sys.argv = sys.argv[1], ["hf2kh", *sys.argv[2:]]
from hf2kh.cli import main
try:
    main()
finally:
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(report, "w") as f:
        f.write(peak)
"""


def run_measuring_peak_rss(args: list[str], report: Path, timeout: float):
    """(completed process, its own peak RSS in MiB)."""
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_WRAPPER, str(report), *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout,
    )
    return proc, int(report.read_text()) / 1024


def test_7b_config_only_subprocess(tmp_path):
    checkpoint = tmp_path / "llama-7b-config-only"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(LLAMA_7B))
    out = tmp_path / "graph.json"
    start = time.perf_counter()
    proc, peak_mb = run_measuring_peak_rss(
        ["inspect", str(checkpoint), "--json", str(out)], tmp_path / "peak_rss", timeout=600
    )
    elapsed = time.perf_counter() - start
    print(f"hf2kh inspect 7B config: {elapsed:.1f}s, peak RSS {peak_mb:.0f} MB")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert 100 < peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["config.json"]

    graph = LayerGraph.from_dict(json.loads(out.read_text()))
    h, kv, ffn, vocab = 4096, 8 * 128, 14336, 128256
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * ffn + 2 * h
    expected = 2 * vocab * h + 32 * per_layer + h
    assert sum(math.prod(p.shape) for p in graph.parameters) == expected == 8_030_261_248
    params = {p.name: p.shape for p in graph.parameters}
    assert params["lm_head.weight"] == (vocab, h)
    assert params["model.layers.31.self_attn.k_proj.weight"] == (kv, h)
    assert params["model.layers.31.mlp.gate_proj.weight"] == (ffn, h)
    (group,) = graph.block_groups
    assert [v.indices for v in group.variants] == [list(range(32))]
    logits = graph.calls[graph.module("lm_head").calls[0]].outputs[0]
    assert graph.value(logits).shape == (2, 8, vocab)
    assert "8.0B params" in proc.stdout
    assert "[0..31] x32" in proc.stdout


# ----------------------------------------------------------------------------------------------
# 6. The tree view
# ----------------------------------------------------------------------------------------------


def test_tree_view_from_cli(hf_fixture, inspected):
    output = run_cli("inspect", str(hf_fixture("llama")))
    assert "layer graph written" not in output
    graph = inspected("llama").graph
    total = sum(math.prod(p.shape) for p in graph.parameters)
    assert f"({human_count(total)} params" in output
    assert re.search(r"\[0\.\.1\] x2 0 LlamaDecoderLayer", output)
    # the collapsed group shows one block's children, once
    assert output.count("LlamaDecoderLayer") == 1
    assert output.count("post_attention_layernorm") == 1
    block_params = graph.module("model.layers.0").num_params
    assert f"({human_count(block_params)} params)" in output
    assert "embed_tokens Embedding weight[" in output


def test_tree_view_variants_and_ties(inspected):
    def text(graph: LayerGraph) -> str:
        console = Console(record=True, width=240, file=io.StringIO())
        console.print(render_tree(graph))
        return console.export_text()

    neo = text(inspected("gpt_neo").graph)
    assert re.search(r"\[0(\.\.0)?\] x1 0 GPTNeoBlock", neo)
    assert re.search(r"\[1(\.\.1)?\] x1 1 GPTNeoBlock", neo)
    assert re.search(r"differs: .*attention_type: 'global' vs 'local'", neo)
    tied = text(inspected("llama_tied").graph)
    assert "tied parameters" in tied
    assert "lm_head.weight = model.embed_tokens.weight" in tied


def test_one_block_called_for_every_layer_is_a_shared_group(inspected):
    """ALBERT has no numbered blocks: its one layer module, called once per layer (each call
    reading the previous one's output), is a shared group; JSON keeps it, the tree says so."""
    graph = inspected("albert").graph
    (group,) = graph.block_groups
    block = "albert.encoder.albert_layer_groups.0.albert_layers.0"
    assert group.shared and group.container == block and group.indices == [0, 1, 2]
    assert [group.block(i) for i in group.indices] == [block] * 3
    assert len(graph.module(block).calls) == 3
    (again,) = LayerGraph.from_dict(json.loads(json.dumps(graph.to_dict()))).block_groups
    assert again.shared and again.container == block
    console = Console(record=True, width=240, file=io.StringIO())
    console.print(render_tree(graph))
    assert "x3 calls (one block shared by all layers) 0 AlbertLayer" in console.export_text()


# ----------------------------------------------------------------------------------------------
# 7. A real pretrained checkpoint (all-MiniLM-L6-v2, a BERT)
# ----------------------------------------------------------------------------------------------


def test_real_minilm_checkpoint(tmp_path):
    from transformers import AutoModel

    from hf2kh.source import open_checkpoint, tensor_index

    checkpoint = real_checkpoint_dir()
    json_path = tmp_path / "minilm.json"
    output = run_cli("inspect", str(checkpoint), "--json", str(json_path))
    data = json.loads(json_path.read_text())
    model = AutoModel.from_pretrained(str(checkpoint))
    check_against_model(data, model)
    assert data["model_type"] == "bert"
    assert data["model_class"] == "BertModel"
    assert data["tied"] == []
    params = {p["name"]: tuple(p["shape"]) for p in data["parameters"]}
    assert params["embeddings.word_embeddings.weight"] == (30522, 384)
    assert params["encoder.layer.5.intermediate.dense.weight"] == (1536, 384)
    (group,) = LayerGraph.from_dict(data).block_groups
    assert group.container == "encoder.layer"
    assert [v.indices for v in group.variants] == [list(range(6))]
    assert "[0..5] x6" in output
    # The real weights (safetensors, no pickle needed) are exactly the inspected parameters.
    ckpt = open_checkpoint(str(checkpoint))
    assert ckpt.weight_format == "safetensors"
    assert {p.name for p in ckpt.tokenizer_files} >= {"tokenizer.json", "vocab.txt"}
    index = tensor_index(ckpt)
    assert {name: info.shape for name, info in index.items() if name in params} == params
    assert set(index) - set(params) <= {"embeddings.position_ids"}


# ----------------------------------------------------------------------------------------------
# 8. Bad input: one line on stderr, non-zero exit, no traceback
# ----------------------------------------------------------------------------------------------


def _bad_checkpoint(kind: str, root: Path) -> Path:
    path = root / kind
    if kind == "missing":
        return path
    path.mkdir()
    config = {
        "no_config": None,
        "no_model_type": {"hidden_size": 32, "num_hidden_layers": 2},
        "unknown_model_type": {"model_type": "frobnicator", "hidden_size": 32},
        "remote_code": {
            "model_type": "llama",
            "architectures": ["MyLlamaForCausalLM"],
            "auto_map": {"AutoModelForCausalLM": "modeling_my.MyLlamaForCausalLM"},
        },
    }[kind]
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    if kind == "remote_code":
        # the code it would run: it must not be imported (it would raise if it were)
        (path / "modeling_my.py").write_text("raise SystemExit('remote code was run')\n")
    return path


BAD_INPUTS = {
    "missing": "does not exist",
    "no_config": "no config.json",
    "no_model_type": "no model_type",
    "unknown_model_type": "'frobnicator'",
    "remote_code": "--trust-remote-code",
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_one_line_error(kind, tmp_path, capfd, monkeypatch):
    """Through `hf2kh.cli.main`, the console script's entry point, in-process."""
    path = _bad_checkpoint(kind, tmp_path)
    monkeypatch.setattr(sys, "argv", ["hf2kh", "inspect", str(path), "--json", "out.json"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code not in (0, None)
    captured = capfd.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert BAD_INPUTS[kind] in lines[0]
    assert "Traceback" not in captured.out + captured.err
    assert captured.out == ""
    assert not (tmp_path / "out.json").exists()
