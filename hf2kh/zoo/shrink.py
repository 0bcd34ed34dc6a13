"""A tiny config for any model type, from its defaults, by one generic rule set over size keys.

No table per model type: the shrinker walks the default config's values (nested dicts such as
DBRX's `attn_config` included), recognizes size keys by name pattern (`SIZE_RULES`: hidden size,
layer count, heads, key/value heads, MLP width, head dim, vocabulary, positions, experts,
windows...) and shrinks them consistently (hidden 64, 4 heads of 16, 2 key/value heads wherever
the model has that setting, multi-query's 1 kept, MLP 128, vocabulary = the tokenizer's).
Per-layer settings follow the layer count:

- lists as long as the layer count (`layer_types`, GPT-Neo's `attention_layers`, `mlp_layer_types`,
  `no_rope_layers`...) are cut to a prefix, and the layer count is the shortest prefix that still
  holds every value the list had (at least 2): a model with local and global layers keeps both;
- run-length lists (GPT-Neo's `attention_types`, `[[["global", "local"], 12]]`) keep one run;
- lists of layer indices (`moe_layers`, `full_attn_idxs`) keep the indices below the new count;
- periods and offsets (`attn_layer_period`, `full_attention_interval`, `*_offset`) raise the layer
  count until each kind of layer occurs (capped at `MAX_LAYERS`);
- counts of special leading layers (`first_k_dense_replace`, `max_window_layers`) become 1.

Token ids (`bos_token_id`...) are set to the tokenizer's. Only keys whose values change are
passed to the config class, so everything a config derives in `__init__` is derived again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

HIDDEN = 64
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 128
EXPERT_INTERMEDIATE = 32
SMALL_DIM = 32  # a second hidden-like size that differed from the hidden size (e.g. ALBERT's)
LORA_RANK = 16
ROTARY_DIM = HEAD_DIM // 2
MAX_POSITIONS = 256
WINDOW = 8  # shorter than the verification's sequences, so windows matter
EXPERTS = 4
EXPERTS_PER_TOKEN = 2
MIN_LAYERS = 2
MAX_LAYERS = 12

# (role, pattern on the key name); the first match decides. A value is only changed when it is
# an int larger than its shrunk size (or, for layer counts, when it differs).
SIZE_RULES: list[tuple[str, str]] = [
    ("keep", r"_token_ids?$|^type_vocab_size$|^num_labels$|^seed$|^(image|patch)_size$"),
    ("vocab", r"^(vocab_size|n_vocab|padded_vocab_size|unpadded_vocab_size)$"),
    ("other_vocab", r"vocab_size(_per_layer_input)?$"),  # entity, shape, per-layer vocabularies
    ("original_positions", r"^original_max_position_embeddings$"),
    (
        "positions",
        r"^(max_position_embeddings|n_positions|n_ctx|max_seq_len|max_seq_length|seq_length"
        r"|max_sequence_length|context_length|max_target_positions)$",
    ),
    ("layers", r"^(num_hidden_layers|n_layers?|num_layers|num_decoder_layers|decoder_layers)$"),
    (
        "leading_layers",
        r"^(first_k_dense_replace|num_dense_layers|max_window_layers|moe_layer_start_index"
        r"|num_kv_shared_layers)$",
    ),
    ("kv_heads", r"(key_value_heads|kv_heads|^n_head_kv|multi_query_group_num|query_groups)$"),
    ("heads", r"(attention_heads|_heads|^n_heads?|^num_heads)$"),
    ("rope_head_dim", r"(rope_head_dim|rotary_dim|rotary_emb_dim|^rope_dim)$"),
    ("qk_head_dim", r"^qk_head_dim$"),
    (
        "head_dim",
        r"(head_dim|^kv_channels|^attention_head_size|head_size|^d_head|^dim_head|_headdim"
        r"|attention_head_dim)$",
    ),
    ("rank", r"lora_rank$"),
    ("expert_intermediate", r"(moe|expert|shared).*(intermediate_size|ffn_hidden_size|ffn_dim)"),
    (
        "intermediate",
        r"(intermediate_size|ffn_dim|^n_inner|^d_ff|ffn_hidden_size|^dim_ff|^dff"
        r"|inner_hidden_size|feed_forward_size|^d_inner)$",
    ),
    (
        "hidden",
        r"^(hidden_size|d_model|n_embd|n_embed|dim|model_dim|embed_dim|hidden_dim|emb_dim"
        r"|word_embed_proj_dim|embedding_size|embedding_dim|true_hidden_size|lru_width"
        r"|attention_hidden_size|input_embedding_size|output_embedding_size"
        r"|intra_bottleneck_size|router_hidden_size|hidden_size_per_layer_input|d_latents)$",
    ),
    ("experts", r"(num_local_experts|^num_experts|n_routed_experts|moe_num_experts)$"),
    ("experts_per_token", r"(experts_per_tok|^moe_top_?k|^top_k|num_selected_experts)$"),
    ("shared_experts", r"shared_experts$"),
    ("groups", r"^(n_group|topk_group)$"),
    (
        "window",
        r"(sliding_window|window_size|local_window|attention_window|^local_attention"
        r"|attention_chunk_size|^window)$",
    ),
]
_RULES = [(role, re.compile(pattern)) for role, pattern in SIZE_RULES]
_PERIOD = re.compile(r"(_period|_interval|_every|_freq)$")
_OFFSET = re.compile(r"_offset$")
_HIDDEN_KEYS = ("hidden_size", "d_model", "n_embd", "n_embed", "dim", "model_dim", "embed_dim")
_HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads", "num_heads")
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "decoder_layers")


@dataclass(frozen=True)
class Tokens:
    """What the shrunk config needs to know of the tokenizer."""

    vocab_size: int
    ids: dict[str, int | None]  # role ("bos", "eos", "pad", "unk", "sep", "cls", "mask") -> id


@dataclass
class Shrunk:
    """The overrides for the config class, and why each was chosen (for reports and tests)."""

    overrides: dict[str, Any]
    num_layers: int
    notes: list[str] = field(default_factory=list)


def role_of(key: str) -> str | None:
    for role, pattern in _RULES:
        if pattern.search(key):
            return role
    return None


def shrink_overrides(defaults: dict[str, Any], tokens: Tokens) -> Shrunk:
    """Overrides that make the config `defaults` (a `to_dict()`) tiny."""
    layers_key = next((k for k in _LAYER_KEYS if isinstance(defaults.get(k), int)), None)
    old_layers = defaults[layers_key] if layers_key else 0
    notes: list[str] = []
    num_layers = _layers_needed(defaults, old_layers, notes) if old_layers else 0
    context = _Context(
        old_hidden=next((defaults[k] for k in _HIDDEN_KEYS if isinstance(defaults.get(k), int)), 0),
        old_layers=old_layers,
        num_layers=num_layers,
        tokens=tokens,
    )
    overrides = _shrink_dict(defaults, context)
    return Shrunk(overrides, num_layers, notes)


@dataclass(frozen=True)
class _Context:
    old_hidden: int
    old_layers: int
    num_layers: int
    tokens: Tokens


def _first_int(d: dict, keys) -> int:
    return next((d[k] for k in keys if isinstance(d.get(k), int)), 0)


def _latent_kv(d: dict) -> bool:
    """Keys and values come from a low-rank latent (DeepSeek-V2's multi-head latent attention)."""
    return _is_int(d.get("kv_lora_rank"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shrink_dict(d: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key.startswith("_") or key in ("architectures", "model_type", "transformers_version"):
            continue
        new = _shrink_value(key, value, d, ctx)
        if new is not _SAME:
            out[key] = new
    return out


_SAME = object()


def _shrink_value(key: str, value: Any, parent: dict, ctx: _Context) -> Any:
    if isinstance(value, dict):
        if key in ("id2label", "label2id") or not all(isinstance(k, str) for k in value):
            return _SAME
        if value and all(k.isdigit() for k in value):  # settings per layer index
            kept = {k: v for k, v in value.items() if int(k) < ctx.num_layers}
            value = {
                k: {**v, **_shrink_dict(v, ctx)} if isinstance(v, dict) else v
                for k, v in kept.items()
            }
            return value
        inner = _shrink_dict(value, ctx)
        return {**value, **inner} if inner else _SAME
    if key.endswith("_token_id"):
        return _token_id(key, value, ctx.tokens)
    if isinstance(value, list):
        return _shrink_list(key, value, ctx)
    role = role_of(key)
    if role == "layers":
        return ctx.num_layers if _is_int(value) and value != ctx.num_layers else _SAME
    if role == "leading_layers":
        return min(value, 1) if _is_int(value) and value > 1 else _SAME
    if role == "vocab":
        return ctx.tokens.vocab_size if _is_int(value) or value is None else _SAME
    if role == "other_vocab":
        return ctx.tokens.vocab_size if _is_int(value) and value > ctx.tokens.vocab_size else _SAME
    if role == "kv_heads":
        # grouped whenever the model has the setting (more demanding than kv == heads); one
        # shared key/value head (multi-query) stays one. A latent key/value (multi-head latent
        # attention, `kv_lora_rank`) gives every query head its own key and value: kept equal.
        if _latent_kv(parent) and value == _first_int(parent, _HEAD_KEYS):
            return HEADS if _is_int(value) and value > HEADS else _SAME
        return KV_HEADS if _is_int(value) and value > 1 else _SAME
    if role == "experts_per_token" and value is None:
        # left unset by a default config that has experts (DeepSeek-V2): its forward fails
        has_experts = any(role_of(k) == "experts" and _is_int(v) for k, v in parent.items())
        return EXPERTS_PER_TOKEN if has_experts else _SAME
    if role == "head_dim" and _is_int(value):
        # a head size that equals the rotary part's (DeepSeek's `head_dim` = `qk_rope_head_dim`,
        # the rotary tables' width) shrinks with it, so the two stay equal
        if any(role_of(k) == "rope_head_dim" and v == value for k, v in parent.items()):
            return min(value, ROTARY_DIM) if value > ROTARY_DIM else _SAME
    if key == "partial_rotary_factor" and isinstance(value, float) and 0 < value < 1:
        # rotary dims are whole pairs: an odd `int(head_dim * factor)` at the shrunk head size
        # (MiMo's 0.334 of 16 = 5) is rounded to the nearest even count
        pairs = max(1, round(value * HEAD_DIM / 2))
        return _SAME if value * HEAD_DIM == 2 * pairs else 2 * pairs / HEAD_DIM
    if role == "qk_head_dim":
        nope, rope = parent.get("qk_nope_head_dim"), parent.get("qk_rope_head_dim")
        if _is_int(nope) and _is_int(rope) and value == nope + rope:
            return min(nope, HEAD_DIM) + min(rope, ROTARY_DIM)
        return min(value, HEAD_DIM) if _is_int(value) else _SAME
    if role == "hidden" and _is_int(value) and value > HIDDEN:
        differs = ctx.old_hidden and value != ctx.old_hidden and key not in _HIDDEN_KEYS
        return SMALL_DIM if differs else HIDDEN
    limits = {
        "original_positions": MAX_POSITIONS // 2,
        "positions": MAX_POSITIONS,
        "heads": HEADS,
        "rope_head_dim": ROTARY_DIM,
        "head_dim": HEAD_DIM,
        "rank": LORA_RANK,
        "expert_intermediate": EXPERT_INTERMEDIATE,
        "intermediate": INTERMEDIATE,
        "experts": EXPERTS,
        "experts_per_token": EXPERTS_PER_TOKEN,
        "shared_experts": 1,
        "groups": 1,
        "window": WINDOW,
    }
    if role in limits and _is_int(value) and value > limits[role]:
        return limits[role]
    return _SAME


def _token_id(key: str, value: Any, tokens: Tokens) -> Any:
    role = key.removesuffix("_token_id").split("_")[-1]
    if value is None:
        return _SAME
    own = tokens.ids.get(role)
    if own is None:
        own = tokens.ids.get("eos") if role in ("decoder", "bos") else None
    if isinstance(value, list):
        return [own] if own is not None else _SAME
    if own is not None:
        return own if own != value else _SAME
    return value if _is_int(value) and value < tokens.vocab_size else tokens.vocab_size - 1


def _shrink_list(key: str, value: list, ctx: _Context) -> Any:
    n, old = ctx.num_layers, ctx.old_layers
    if not value or not old:
        return _SAME
    if len(value) == old:  # one entry per layer
        return value[:n]
    if _run_length(value, old):
        pattern = value[0][0]
        return [[list(pattern), max(1, n // len(pattern))]]
    if all(_is_int(v) for v in value) and all(0 <= v < old for v in value) and len(value) < old:
        if role_of(key) is None and "layer" in key or key.endswith(("idxs", "_ids", "_layers")):
            kept = [v for v in value if v < n]
            return kept if kept != value else _SAME
    if all(_is_int(v) and v > 0 for v in value) and ctx.old_hidden:
        if sum(value) == ctx.old_hidden and len(value) > 1:  # parts of the hidden size
            return [max(1, v * HIDDEN // ctx.old_hidden) for v in value]
    role = role_of(key)
    if role in ("window", "intermediate", "heads", "kv_heads", "head_dim") and all(
        _is_int(v) for v in value
    ):
        return [
            min(v, {"window": WINDOW, "intermediate": INTERMEDIATE}.get(role, HEADS)) for v in value
        ]
    return _SAME


def _run_length(value: list, old_layers: int) -> bool:
    """A list like [[["global", "local"], 12]] that expands to one entry per layer."""
    try:
        return (
            all(isinstance(p, list) and len(p) == 2 and _is_int(p[1]) for p in value)
            and sum(len(p[0]) * p[1] for p in value) == old_layers
        )
    except TypeError:
        return False


def _layers_needed(d: dict[str, Any], old: int, notes: list[str]) -> int:
    """The fewest layers that still have every kind of layer the default config has."""
    need = MIN_LAYERS
    for key, value in d.items():
        if isinstance(value, list) and len(value) == old and old > 0:
            seen: list[str] = []
            prefix = 0
            for i, item in enumerate(value):
                if repr(item) not in seen:
                    seen.append(repr(item))
                    prefix = i + 1
            if prefix > need:
                notes.append(f"{key}: {prefix} layers hold every value")
            need = max(need, prefix)
        elif isinstance(value, list) and _run_length(value, old):
            need = max(need, len(value[0][0]))
        elif isinstance(value, list) and value and all(_is_int(v) for v in value):
            if "layer" in key and all(0 <= v < old for v in value):
                first_in = min(value) + 1
                first_out = next((i + 1 for i in range(old) if i not in value), 0)
                need = max(need, first_in, first_out)
        elif _is_int(value) and value > 1 and value <= old and _PERIOD.search(key):
            need = max(need, value)
        elif _is_int(value) and 0 < value < old and _OFFSET.search(key):
            need = max(need, value + 1)
    need = min(need, MAX_LAYERS, old)
    return max(need, min(MIN_LAYERS, old))
