"""The fixture checkpoints load with transformers' Auto classes, carry their non-default values,
run, and each non-default value really changes what the model computes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError

from tests.fixtures.factory import (
    FIXTURES,
    SAMPLE_TEXTS,
    FixtureSpec,
    auto_class,
    build_fixture,
    build_model,
    check_config,
    load_tokenizer,
    make_config,
)

NAMES = sorted(FIXTURES)

# A port that ignores a fixture's value must fail verification (relative error <= 1e-5): ablating
# the value has to move the output by clearly more than that.
LIVE_THRESHOLD = 5e-5

# Values not probed by ablation: bounds that do not change the computation at the tested length,
# label maps (they only size the head), and tying (test_head_tying checks it).
NOT_ABLATED = {
    "max_position_embeddings",
    "n_positions",
    "tie_word_embeddings",
    "id2label",
    "label2id",
    "forced_eos_token_id",  # a generation setting (HF's generate), not the forward's
}
# Removing these would make an invalid config; ablate to a valid neutral value instead.
NEUTRAL = {"attention_types": [[["global", "global"], 1]]}


def _load(name, hf_fixture):
    path = hf_fixture(name)
    spec = FIXTURES[name]
    model, info = auto_class(spec.task).from_pretrained(str(path), output_loading_info=True)
    return spec, path, model.eval(), info


def _batch(tokenizer, texts=SAMPLE_TEXTS):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer(list(texts), return_tensors="pt", padding=True)


def _layout(cls, config) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the model `config` builds (on the meta device: no memory)."""
    with torch.device("meta"):
        model = cls.from_config(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _output(model, **inputs) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


@pytest.mark.parametrize("name", NAMES)
def test_fixture_loads_and_runs(name, hf_fixture):
    spec, path, model, info = _load(name, hf_fixture)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(kind), f"{name}: {kind} {info[kind]}"
    tokenizer = load_tokenizer(path)
    check_config(spec, model.config, tokenizer)
    assert (path / "model.safetensors").is_file()
    assert not list(path.glob("*.bin")), "fixtures ship safetensors only"

    batch = _batch(tokenizer)
    assert batch["input_ids"].shape[1] > 16, "samples must be longer than windows/rope bounds"
    assert bool((batch["attention_mask"] == 0).any()), "the batch must contain padding"
    out = _output(model, **batch)
    assert torch.isfinite(out).all()
    n = len(SAMPLE_TEXTS)
    if spec.task == "sequence_classification":
        assert out.shape == (n, model.config.num_labels)
    elif spec.task in ("causal_lm", "masked_lm"):
        assert out.shape == (n, batch["input_ids"].shape[1], len(tokenizer))
    # random weights, but not degenerate: outputs vary across rows
    assert float(out.std()) > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_head_tying(name, hf_fixture):
    _, _, model, _ = _load(name, hf_fixture)
    head = model.get_output_embeddings()
    if head is None:
        pytest.skip("no LM head")
    shared = head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert shared == bool(model.config.tie_word_embeddings)
    if not shared:
        assert not torch.equal(head.weight, model.get_input_embeddings().weight)


ROPE_SUBKEYS = ("rope_type", "rope_theta", "partial_rotary_factor")


def _rope_ablations(value: dict):
    """(label suffix, ablated rope_parameters) for each set sub-key of ROPE_SUBKEYS; per layer
    type when the parameters are given per layer type (Gemma 3)."""
    if value and all(isinstance(v, dict) for v in value.values()):
        for layer_type, params in value.items():
            for sub, new in _rope_ablations(params):
                yield f"{layer_type}.{sub}", {**value, layer_type: new}
        return
    for sub in ROPE_SUBKEYS:
        if sub not in value:
            continue  # not set by the fixture: nothing to ablate (see _expected_labels)
        if sub == "rope_type":  # back to plain rope, same theta and rotary fraction
            keep = ("rope_theta", "partial_rotary_factor")
            yield sub, {k: v for k, v in value.items() if k in keep}
        else:
            yield sub, {k: v for k, v in value.items() if k != sub}


def _ablations(spec: FixtureSpec):
    """(label, ablated spec) per non-default value: the value removed (family default). Every
    value of `spec.config` not in NOT_ABLATED is yielded (rope_parameters as its sub-keys)."""
    for key, value in spec.config.items():
        if key in NOT_ABLATED:
            continue
        if key == "rope_parameters":
            for sub, new in _rope_ablations(value):
                config = {**spec.config, key: new}
                yield f"{key}.{sub}", dataclasses.replace(spec, config=config)
        elif key in NEUTRAL:
            config = {**spec.config, key: NEUTRAL[key]}
            yield key, dataclasses.replace(spec, config=config)
        else:
            config = {k: v for k, v in spec.config.items() if k != key}
            yield key, dataclasses.replace(spec, config=config)


def _expected_labels(spec: FixtureSpec) -> set[str]:
    """What `_ablations` must probe, stated independently: every key of the fixture's config
    except NOT_ABLATED, with the rope sub-keys that are set (per layer type where given so)."""
    labels = set()
    for key, value in spec.config.items():
        if key == "rope_parameters":
            nested = all(isinstance(v, dict) for v in value.values())
            groups = value.items() if nested else [(None, value)]
            for layer_type, params in groups:
                prefix = f"{key}.{layer_type}" if layer_type else key
                labels |= {f"{prefix}.{sub}" for sub in ROPE_SUBKEYS if sub in params}
        elif key not in NOT_ABLATED:
            labels.add(key)
    return labels


# Outcomes of an ablation other than "live" (the output moves by more than LIVE_THRESHOLD):
LAYOUT = "layout"  # the value changes parameter names or shapes (the checkpoint needs it)
DEFAULT = "default"  # the fixture sets the family's default explicitly (the config is unchanged)
INVALID = "invalid"  # the config is rejected without the value (validated against the others)
# fixture -> {probed value: outcome} for every probed value that is not "live"; every other
# value each fixture sets (see `_expected_labels`) must be live.
NOT_LIVE: dict[str, dict[str, str]] = {
    "albert": {  # num_hidden_layers is live: one shared block, the same weights for any depth
        "embedding_size": LAYOUT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": INVALID,
        "type_vocab_size": LAYOUT,  # 3 rows
    },
    "bart": {"d_model": LAYOUT, "decoder_ffn_dim": LAYOUT, "decoder_layers": LAYOUT},
    "bert": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": INVALID,
        "num_hidden_layers": LAYOUT,
        "type_vocab_size": DEFAULT,
    },
    "bert_base": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "type_vocab_size": LAYOUT,  # 3 rows: the checkpoint cannot load without it
    },
    "bert_cls": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": INVALID,
        "num_hidden_layers": LAYOUT,
        "type_vocab_size": DEFAULT,
    },
    "blenderbot_small": {"d_model": LAYOUT, "decoder_ffn_dim": LAYOUT, "decoder_layers": LAYOUT},
    "bloom": {"hidden_size": INVALID, "n_layer": DEFAULT},
    "cohere": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": INVALID,  # the default 64 heads leave 32 // 64 = 0 features each
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": LAYOUT,
        "rope_parameters.rope_type": DEFAULT,
    },
    "codegen": {  # the default rotary_dim 64 does not fit its 8-wide heads: the forward fails
        "n_embd": LAYOUT,
        "n_inner": LAYOUT,
        "n_layer": LAYOUT,
        "rotary_dim": INVALID,
    },
    "deberta_v2": {  # each relative-attention setting decides which tables exist
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "norm_rel_ebd": LAYOUT,
        "num_attention_heads": INVALID,
        "num_hidden_layers": LAYOUT,
        "position_biased_input": LAYOUT,
        "position_buckets": LAYOUT,
        "relative_attention": LAYOUT,
        "share_att_key": LAYOUT,
    },
    "deberta_v2_cls": {  # the relative settings decide the table's rows and projections
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "max_relative_positions": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "pos_att_type": LAYOUT,
        "relative_attention": LAYOUT,
        "type_vocab_size": LAYOUT,
    },
    "ctrl": {"dff": LAYOUT, "n_embd": LAYOUT, "n_layer": LAYOUT},
    "distilbert": {
        "activation": DEFAULT,
        "dim": LAYOUT,
        "hidden_dim": LAYOUT,
        "n_heads": INVALID,
        "n_layers": LAYOUT,
    },
    "electra": {
        "embedding_size": LAYOUT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": DEFAULT,
        "num_hidden_layers": LAYOUT,
    },
    "eurobert": {
        "head_dim": LAYOUT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "mlp_bias": LAYOUT,
        "num_attention_heads": INVALID,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": LAYOUT,
        "rope_parameters.rope_type": DEFAULT,
    },
    "falcon": {
        "alibi": DEFAULT,
        "bias": LAYOUT,
        "ffn_hidden_size": LAYOUT,
        "hidden_size": LAYOUT,
        "multi_query": DEFAULT,
        "new_decoder_architecture": DEFAULT,
        "num_attention_heads": INVALID,
        "num_hidden_layers": LAYOUT,
        "parallel_attn": DEFAULT,
        "rope_parameters.rope_type": DEFAULT,
    },
    "falcon_new": {
        "ffn_hidden_size": LAYOUT,
        "hidden_size": LAYOUT,
        "new_decoder_architecture": LAYOUT,
        "num_attention_heads": INVALID,
        "num_hidden_layers": LAYOUT,
        "num_kv_heads": LAYOUT,
        "rope_parameters.rope_type": DEFAULT,
    },
    "gemma": {
        "head_dim": LAYOUT,
        "hidden_act": DEFAULT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": LAYOUT,
        "rope_parameters.rope_type": DEFAULT,
    },
    "gemma2": {
        "head_dim": LAYOUT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "layer_types": DEFAULT,
        "num_attention_heads": LAYOUT,
        "num_hidden_layers": INVALID,
        "num_key_value_heads": LAYOUT,
        "rope_parameters.rope_type": DEFAULT,
    },
    "gemma3": {
        "head_dim": LAYOUT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": LAYOUT,
        "num_hidden_layers": INVALID,
        "num_key_value_heads": LAYOUT,
        "rope_parameters.full_attention.rope_type": DEFAULT,
        "rope_parameters.sliding_attention.rope_type": DEFAULT,
    },
    "gpt2": {
        "activation_function": DEFAULT,
        "n_embd": LAYOUT,
        "n_head": INVALID,
        "n_inner": LAYOUT,
        "n_layer": LAYOUT,
    },
    "gpt_neo": {"hidden_size": LAYOUT, "intermediate_size": LAYOUT, "num_layers": INVALID},
    "gpt_neox": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "rope_parameters.partial_rotary_factor": DEFAULT,
        "rope_parameters.rope_type": DEFAULT,
        "use_parallel_residual": DEFAULT,
    },
    "gptj": {  # the default rotary_dim 64 (and 16 heads) do not fit 16-wide (4-wide) heads
        "n_embd": LAYOUT,
        "n_head": INVALID,
        "n_inner": LAYOUT,
        "n_layer": LAYOUT,
        "rotary_dim": INVALID,
    },
    "glm": {
        "head_dim": LAYOUT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": DEFAULT,
        "rope_parameters.rope_type": DEFAULT,
    },
    "glm4_moe": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "moe_intermediate_size": LAYOUT,
        "n_group": INVALID,  # 4 groups to keep topk_group 2 of
        "n_routed_experts": LAYOUT,
        "n_shared_experts": LAYOUT,
        "num_attention_heads": INVALID,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": LAYOUT,
    },
    "granite": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": LAYOUT,
        "rope_parameters.rope_type": DEFAULT,
    },
    "llama": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": LAYOUT,
        "rope_parameters.rope_type": DEFAULT,
    },
    "llama3": {
        "head_dim": LAYOUT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": LAYOUT,
    },
    "llama_bias": {
        "attention_bias": LAYOUT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "mlp_bias": LAYOUT,
        "num_attention_heads": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": DEFAULT,
        "rope_parameters.rope_theta": DEFAULT,
    },
    "llama_tied": {
        "head_dim": LAYOUT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": INVALID,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": LAYOUT,
        "rope_parameters.rope_type": DEFAULT,
    },
    "llama_yarn": {
        "head_dim": LAYOUT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": LAYOUT,
    },
    "modernbert": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_hidden_layers": INVALID,  # layer_types lists 4 layers
        "rope_parameters.full_attention.rope_type": DEFAULT,
        "rope_parameters.sliding_attention.rope_type": DEFAULT,
    },
    "marian": {  # the default 16 heads do not divide d_model 24
        "d_model": INVALID,
        "decoder_attention_heads": INVALID,
        "decoder_ffn_dim": LAYOUT,
        "decoder_layers": LAYOUT,
    },
    "ministral3": {  # rope_type "default" with YaRN's keys left is rejected
        "head_dim": LAYOUT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": LAYOUT,
        "rope_parameters.rope_type": INVALID,
    },
    "modernbert_decoder": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": INVALID,  # the default 12 heads do not divide 32
        "num_hidden_layers": INVALID,  # layer_types lists 3 layers
        "rope_parameters.full_attention.rope_type": DEFAULT,
        "rope_parameters.sliding_attention.rope_type": DEFAULT,
    },
    "mistral": {
        "head_dim": LAYOUT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": LAYOUT,
        "rope_parameters.rope_type": DEFAULT,
    },
    "opt": {
        "ffn_dim": LAYOUT,
        "hidden_size": LAYOUT,
        "num_attention_heads": INVALID,
        "num_hidden_layers": LAYOUT,
    },
    "opt_350m_style": {
        "do_layer_norm_before": LAYOUT,
        "ffn_dim": LAYOUT,
        "hidden_size": LAYOUT,
        "num_attention_heads": INVALID,
        "num_hidden_layers": LAYOUT,
        "word_embed_proj_dim": LAYOUT,
    },
    "phi": {
        "hidden_act": DEFAULT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": DEFAULT,
        "rope_parameters.partial_rotary_factor": DEFAULT,
        "rope_parameters.rope_type": DEFAULT,
    },
    "qwen2_moe": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "mlp_only_layers": LAYOUT,
        "moe_intermediate_size": LAYOUT,
        "num_attention_heads": LAYOUT,
        "num_experts": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": LAYOUT,
        "rope_parameters.rope_type": DEFAULT,
        "shared_expert_intermediate_size": LAYOUT,
    },
    "qwen2": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": LAYOUT,
        "rope_parameters.rope_type": DEFAULT,
    },
    "qwen3": {
        "head_dim": LAYOUT,
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "num_key_value_heads": LAYOUT,
        "rope_parameters.rope_type": DEFAULT,
    },
    "roberta_prelayernorm": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": INVALID,
        "num_hidden_layers": LAYOUT,
        "type_vocab_size": LAYOUT,  # 1 row, not the default 2
    },
    "roberta_cls": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": INVALID,
        "num_hidden_layers": LAYOUT,
        "type_vocab_size": LAYOUT,  # 1 row, not the default 2
    },
    "roberta": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_attention_heads": INVALID,
        "num_hidden_layers": LAYOUT,
        "type_vocab_size": LAYOUT,
    },
    "xlm_roberta": {
        "hidden_size": LAYOUT,
        "intermediate_size": LAYOUT,
        "num_hidden_layers": LAYOUT,
        "type_vocab_size": LAYOUT,
    },
}


def _probe(spec: FixtureSpec, tokenizer, model, inputs) -> dict[str, str]:
    """label -> outcome ("live", "dead (relative change ...)", or one of NOT_LIVE's kinds)."""
    reference = _output(model, **inputs)
    rms = float(reference.pow(2).mean().sqrt())
    state = model.state_dict()
    layout = {k: tuple(v.shape) for k, v in state.items()}
    as_built = make_config(spec, tokenizer).to_dict()
    outcomes: dict[str, str] = {}
    for label, ablated in _ablations(spec):
        assert label not in outcomes, f"{label} probed twice"
        try:
            config = make_config(ablated, tokenizer)
            if config.to_dict() == as_built:
                outcomes[label] = "default"
                continue
            if _layout(auto_class(spec.task), config) != layout:
                outcomes[label] = "layout"
                continue
            other = build_model(ablated, config)
            other.load_state_dict(state, strict=True)
            ablated_output = _output(other, **inputs)
        except (ValueError, TypeError, ZeroDivisionError, StrictDataclassError, RuntimeError):
            # validated against the other values, or the forward fails without it (GPT-J's
            # default rotary_dim 64 on 16-wide heads): not ignored
            outcomes[label] = "invalid"
            continue
        change = float((ablated_output - reference).abs().max()) / rms
        outcomes[label] = "live" if change > LIVE_THRESHOLD else f"dead ({change:.2e})"
    return outcomes


@pytest.mark.parametrize("name", NAMES)
def test_non_default_values_are_live(name, hf_fixture):
    """Each non-default value either changes the parameter layout (the checkpoint cannot load
    without it) or changes the output by more than LIVE_THRESHOLD on the sample text. The values
    probed and each one's outcome are recorded and compared with what is expected."""
    spec, path, model, _ = _load(name, hf_fixture)
    tokenizer = load_tokenizer(path)
    inputs = tokenizer(SAMPLE_TEXTS[0], return_tensors="pt")
    assert inputs["input_ids"].shape[1] > 16
    outcomes = _probe(spec, tokenizer, model, inputs)
    assert set(outcomes) == _expected_labels(spec)
    not_live = NOT_LIVE.get(name, {})
    expected = {label: not_live.get(label, "live") for label in _expected_labels(spec)}
    assert outcomes == expected


def test_not_live_table_names_real_values():
    assert set(NOT_LIVE) <= set(FIXTURES)
    for name, outcomes in NOT_LIVE.items():
        assert set(outcomes) <= _expected_labels(FIXTURES[name]), name
        assert set(outcomes.values()) <= {LAYOUT, DEFAULT, INVALID}, name


def test_unknown_config_key_is_caught():
    spec = FIXTURES["llama"]
    bogus = dataclasses.replace(spec, config={**spec.config, "rope_thetaa": 1.0})
    config = make_config(bogus, _FakeTokenizer())  # transformers accepts and keeps the typo
    assert config.rope_thetaa == 1.0
    with pytest.raises(AssertionError, match="rope_thetaa"):
        check_config(bogus, config)


class _FakeTokenizer:
    bos_token_id, eos_token_id, pad_token_id = 1, 2, None

    def __len__(self):
        return 512


def test_build_is_deterministic(tmp_path):
    a = build_fixture("gpt2", tmp_path / "a", seed=0)
    b = build_fixture("gpt2", tmp_path / "b", seed=0)
    c = build_fixture("gpt2", tmp_path / "c", seed=1)
    for fname in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / fname).read_bytes() == (b / fname).read_bytes(), fname
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def _load_example_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "make_tiny_llama.py"
    spec = importlib.util.spec_from_file_location("make_tiny_llama", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_tiny_llama_is_current(tmp_path):
    """examples/tiny-llama is what examples/make_tiny_llama.py builds, loads, and stays small."""
    script = _load_example_script()
    shipped = script.OUT_DIR
    assert shipped.is_dir(), "run `python examples/make_tiny_llama.py`"
    assert sum(f.stat().st_size for f in shipped.iterdir()) < 1_000_000
    tokenizer = load_tokenizer(shipped)
    model = auto_class("causal_lm").from_pretrained(str(shipped)).eval()
    check_config(script.TINY_LLAMA, model.config, tokenizer)
    out = _output(model, **_batch(tokenizer))
    assert torch.isfinite(out).all()

    rebuilt = script.main(tmp_path / "tiny-llama")
    for fname in ("config.json", "model.safetensors"):
        assert (rebuilt / fname).read_bytes() == (shipped / fname).read_bytes(), (
            f"examples/tiny-llama/{fname} is stale: run `python examples/make_tiny_llama.py`"
        )
