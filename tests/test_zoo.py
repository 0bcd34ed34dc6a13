"""`hf2kh zoo`: the generic config shrinker, the sweep on a handful of types, and (behind the `zoo`
marker) the sweep over every type.

The handful run is the real thing: tokenizers trained, tiny checkpoints saved, one worker process
per type running the full port with verification. Which types verify changes as hf2kh grows, so
llama, phi3 (sliced fused q/k/v, fused gate/up MLP: no fixture has them) and helium (rope on
interleaved pairs, as `hf2kh zoo` makes it), smollm3 (rope on some layers only) and mixtral
(sparse mixture of experts) are pinned as verified; the others must get one of
the statuses with a one-line reason, and no bug of ours (a failure before recognition, or a
crash).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from hf2kh.cli import app
from hf2kh.zoo.build import tiny_config, tiny_model
from hf2kh.zoo.shrink import HEAD_DIM, HEADS, HIDDEN, INTERMEDIATE, Tokens, shrink_overrides
from hf2kh.zoo.table import status_text
from hf2kh.zoo.types import ZooType, candidate_types
from hf2kh.zoo.worker import STATUSES

TOKENS = Tokens(480, {"bos": 3, "eos": 3, "unk": 3, "pad": None})
BERT_TOKENS = Tokens(500, {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4, "bos": 2, "eos": 3})
MAX_PARAMS = 1_000_000

# type -> (architecture, tokens); the head the zoo picks for each is checked too
SHRINK_CASES = {
    "llama": ("LlamaForCausalLM", TOKENS),
    "gpt2": ("GPT2LMHeadModel", TOKENS),
    "gpt_neo": ("GPTNeoForCausalLM", TOKENS),
    "mixtral": ("MixtralForCausalLM", TOKENS),
    "bert": ("BertForMaskedLM", BERT_TOKENS),
}


def _tiny(model_type: str):
    architecture, tokens = SHRINK_CASES[model_type]
    task = "masked_lm" if "MaskedLM" in architecture else "causal_lm"
    zoo_type = ZooType(model_type, task, architecture)
    config, shrunk = tiny_config(zoo_type, tokens)
    return zoo_type, config, shrunk, tokens


def _hidden(config) -> int:
    return next(getattr(config, k) for k in ("hidden_size", "n_embd") if hasattr(config, k))


@pytest.mark.parametrize("model_type", sorted(SHRINK_CASES))
def test_shrunk_config_is_tiny_and_builds(model_type):
    zoo_type, config, shrunk, tokens = _tiny(model_type)
    assert _hidden(config) == HIDDEN
    assert config.num_hidden_layers == shrunk.num_layers == 2
    assert config.num_attention_heads == HEADS
    assert config.vocab_size == tokens.vocab_size
    for key in ("intermediate_size", "n_inner"):
        value = getattr(config, key, None)
        assert value is None or value <= INTERMEDIATE
    for key in ("max_position_embeddings", "n_positions"):
        if getattr(config, key, None) is not None:
            assert getattr(config, key) <= 256
    # token ids are the tokenizer's
    for role in ("bos", "eos", "pad"):
        value = getattr(config, f"{role}_token_id", None)
        assert value is None or value < tokens.vocab_size
    model = tiny_model(zoo_type, config)
    params = sum(p.numel() for p in model.parameters())
    assert params < MAX_PARAMS, params
    with torch.no_grad():
        logits = model(torch.arange(12).reshape(2, 6) + 5).logits
    assert logits.shape == (2, 6, tokens.vocab_size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "model_type, architecture",
    [("deepseek_v2", "DeepseekV2ForCausalLM"), ("minicpm3", "MiniCPM3ForCausalLM")],
)
def test_latent_attention_head_sizes_stay_consistent(model_type, architecture):
    """Multi-head latent attention: a key and value per query head from the latent, and the
    rotary tables as wide as the rotary part of q/k (`head_dim` = `qk_rope_head_dim` in the
    defaults): the shrunk model runs (before: `size of tensor a (4) must match b (8)`)."""
    zoo_type = ZooType(model_type, "causal_lm", architecture)
    config, _ = tiny_config(zoo_type, TOKENS)
    assert config.num_key_value_heads == config.num_attention_heads == HEADS
    assert config.head_dim == config.qk_rope_head_dim < HEAD_DIM
    assert config.qk_head_dim == config.qk_nope_head_dim + config.qk_rope_head_dim
    model = tiny_model(zoo_type, config)
    with torch.no_grad():
        logits = model(torch.arange(12).reshape(2, 6) + 5).logits
    assert logits.shape == (2, 6, TOKENS.vocab_size)
    assert torch.isfinite(logits).all()


def test_partial_rotary_factor_gives_whole_pairs():
    """MiMo's 0.334 of a 16-wide head would rotate 5 features: rounded to 3 pairs."""
    shrunk = shrink_overrides(
        {
            "head_dim": 192,
            "partial_rotary_factor": 0.334,
            "rope_parameters": {"a": {"partial_rotary_factor": 0.5}},
        },
        TOKENS,
    )
    assert shrunk.overrides["partial_rotary_factor"] == 6 / HEAD_DIM
    assert "rope_parameters" not in shrunk.overrides  # 0.5 of 16 is already whole pairs


def test_llama_gets_grouped_query_attention():
    _, config, _, _ = _tiny("llama")
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert config.hidden_size // config.num_attention_heads == HEAD_DIM


def test_gpt_neo_keeps_both_layer_kinds():
    """attention_layers (one entry per layer) and its run-length form shrink together."""
    _, config, _, _ = _tiny("gpt_neo")
    assert config.attention_layers == ["global", "local"]
    assert config.attention_types == [[["global", "local"], 1]]
    assert config.window_size <= 8  # shorter than the verified sequences


def test_mixtral_experts_shrink():
    _, config, _, _ = _tiny("mixtral")
    assert config.num_local_experts == 4
    assert config.num_experts_per_tok == 2
    assert config.num_key_value_heads == 2


def test_bert_is_swept_as_a_masked_lm():
    types = {t.model_type: t for t in candidate_types()[0]}
    assert types["bert"].task == "masked_lm"
    assert types["llama"].task == "causal_lm"
    _, config, _, tokens = _tiny("bert")
    assert config.pad_token_id == tokens.ids["pad"]
    assert config.type_vocab_size == 2  # not a vocabulary to shrink


def test_layer_count_covers_every_layer_kind():
    """A per-layer list whose second kind first appears at layer 5 needs 6 layers."""
    defaults = {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 4,
        "moe_layers": [1, 3, 5],
        "attn_layer_offset": 2,
    }
    shrunk = shrink_overrides(defaults, TOKENS)
    assert shrunk.num_layers == 6
    assert shrunk.overrides["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    assert shrunk.overrides["num_hidden_layers"] == 6
    assert shrunk.overrides["hidden_size"] == HIDDEN


def test_excluded_types_say_why():
    types, excluded = candidate_types()
    assert len(types) > 150
    names = {t.model_type for t in types}
    assert {"llama", "gpt2", "opt", "mixtral", "bert"} <= names
    assert excluded and all(e.reason and "\n" not in e.reason for e in excluded)
    assert not names & {e.model_type for e in excluded}


def test_unknown_type_is_one_line_error():
    result = CliRunner().invoke(app, ["zoo", "--only", "llama,not_a_model"])
    assert result.exit_code != 0
    text = (result.output or "") + str(result.exception or "")
    assert "not_a_model" in text


# ----------------------------------------------------------------------------------------------
# The sweep on a handful of types (default suite) and on all of them (-m zoo)
# ----------------------------------------------------------------------------------------------

HANDFUL = ("llama", "phi3", "helium", "smollm3", "mixtral")


def _check_results(data: dict, expected_types) -> None:
    assert data["version"] == 1
    results = data["results"]
    assert [r["model_type"] for r in results] == list(expected_types)
    for r in results:
        assert r["status"] in STATUSES, r
        assert r["seconds"] > 0
        if r["status"] == "verified":
            assert r["worst_error"] is not None and r["worst_error"] < 1e-4
            assert r["reason"] is None
        else:
            assert r["reason"] and "\n" not in r["reason"], r
            assert r["stage"], r
        if r["status"] in ("refused", "failed"):
            assert not r["ours"]
    assert data["counts"] == {
        s: n for s in STATUSES if (n := sum(r["status"] == s for r in results))
    }


def test_zoo_on_a_handful_of_types(tmp_path):
    json_path = tmp_path / "zoo.json"
    result = CliRunner().invoke(
        app,
        ["zoo", "--only", ",".join(HANDFUL), "--json", str(json_path), "--timeout", "240"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    data = json.loads(json_path.read_text())
    _check_results(data, HANDFUL)
    by_type = {r["model_type"]: r for r in data["results"]}
    llama = by_type["llama"]
    assert llama["status"] == "verified", llama
    assert 0 < llama["worst_error"] < 1e-4 and math.isfinite(llama["worst_error"])
    assert llama["params"] < MAX_PARAMS and llama["layers"] == 2
    # Phi-3 has no test fixture: sliced fused q/k/v and a fused gate/up MLP
    assert by_type["phi3"]["status"] == "verified", by_type["phi3"]
    # helium rotates q/k in interleaved pairs (`repeat_interleave` inside attention)
    assert by_type["helium"]["status"] == "verified", by_type["helium"]
    # SmolLM3 leaves rope out of every fourth layer (`no_rope_layers`): a per-layer use_rope
    assert by_type["smollm3"]["status"] == "verified", by_type["smollm3"]
    # mixture of experts: its meta-device forward used to fail in inspect; now the sparse MoE
    # component ports it, the experts read as the checkpoint stores them (one by one)
    assert by_type["mixtral"]["status"] == "verified", by_type["mixtral"]
    assert not any(r["ours"] for r in data["results"]), data["results"]
    # the table shows each type with its status line
    for r in data["results"]:
        assert r["model_type"] in result.output
    assert "verified" in result.output
    assert f"{len(HANDFUL)} model types:" in result.output


def test_status_text_forms():
    from hf2kh.zoo.worker import Outcome

    verified = Outcome("a", "causal_lm", "A", "verified")
    refused = Outcome("b", "causal_lm", "B", "refused", "recognize", "no MLP found")
    crash = Outcome("c", "causal_lm", "C", "error", "inspect", "crash: KeyError: 'x'", ours=True)
    assert status_text(verified) == "verified"
    assert status_text(refused) == "refused: no MLP found"
    assert status_text(crash) == "error: inspect (bug of ours): crash: KeyError: 'x'"


@pytest.mark.zoo
def test_zoo_every_type(request, tmp_path):
    """The full sweep (about 200 types; an hour or more on two cores). Run with `-m zoo`."""
    if "zoo" not in (request.config.getoption("-m") or ""):
        pytest.skip("the full zoo sweep runs only when selected with `-m zoo`")
    json_path = tmp_path / "zoo.json"
    result = CliRunner().invoke(app, ["zoo", "--json", str(json_path), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(json_path.read_text())
    types = [t.model_type for t in candidate_types()[0]]
    swept = [r["model_type"] for r in data["results"]] + [e["model_type"] for e in data["excluded"]]
    assert set(types) <= set(swept)
    _check_results(data, [r["model_type"] for r in data["results"]])
    assert data["seconds"] < 2 * 3600
