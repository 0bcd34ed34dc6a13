"""Recognize a decoder-only language model from its layer graph, by evidence.

Roles (token embedding, blocks, attention, MLP, norms, head) come from the recorded dataflow:
which module reads `input_ids`, which child of a block runs a softmax, which projection feeds
the query/key/value operands of the attention matmuls, which value an `add` combines. Kinds
(RMSNorm vs LayerNorm, the activation, Linear vs Conv1D layouts, rope scaling) come from numeric
probes. Counts and constants come from parameter shapes and the modules' own settings.
`model_type` and class names are only reported, never decided on.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.dataflow import block_steps, first_call
from hf2kh.inspect.graph import LayerGraph
from hf2kh.recognize import parts, probes
from hf2kh.recognize.attention import attention_spec
from hf2kh.recognize.graph_view import GraphView
from hf2kh.recognize.mlp import mlp_spec
from hf2kh.recognize.spec import (
    EmbeddingSpec,
    ModelSpec,
    RopeSpec,
    WeightRef,
)


def recognize_decoder(
    graph: LayerGraph, model: torch.nn.Module, config, *, name: str, source: str, revision
) -> ModelSpec:
    G = GraphView(graph, model)
    evidence = [f"reported by the checkpoint (not used to decide): model_type={graph.model_type!r}"]

    # -- embeddings ------------------------------------------------------------------------
    input_value = next(v.id for v in graph.values if v.source == "input:input_ids")
    module_calls = [c for c in graph.calls if c.kind == "module"]
    embed = next(
        (
            c.target
            for c in module_calls
            if c.inputs and G.derives(c.inputs[0], input_value) and G.is_projection(c.target)
        ),
        None,
    )
    if embed is None:
        raise UnsupportedModelError("no module reads input_ids through an embedding table")
    vocab_size, hidden_dim = G.own_params(embed)["weight"]
    evidence.append(f"token embedding: {embed} reads input_ids, table {vocab_size}x{hidden_dim}")

    if not graph.block_groups:
        raise UnsupportedModelError("no repeated transformer blocks found")
    group = max(graph.block_groups, key=lambda g: len(g.indices))
    if not group.identical:
        diffs = "; ".join(d for v in group.variants for d in v.differences)
        raise UnsupportedModelError(f"blocks of {group.container} are not all alike ({diffs})")
    blocks = [f"{group.container}.{i}" for i in group.indices]
    block0 = blocks[0]
    block_call = first_call(graph, block0)
    last_block_call = first_call(graph, blocks[-1])
    evidence.append(f"{len(blocks)} identical blocks {group.container}.N ({group.class_name})")

    stem_modules = [
        c.target
        for c in module_calls
        if c.index < block_call.index and not c.target.startswith(f"{group.container}.")
    ]
    positions = [
        p
        for p in stem_modules
        if p != embed
        and G.is_projection(p)
        and G.own_params(p)["weight"][-1] == hidden_dim
        and not G.derives(first_call(graph, p).inputs[0], input_value)
    ]
    rotary = [
        p
        for p in stem_modules
        if not G.subtree_params(p)
        and not G.own_params(p)
        and set(first_call(graph, p).outputs) & set(block_call.inputs[1:])
    ]

    # -- block layout --------------------------------------------------------------------------
    children = [s for s in block_steps(graph, block0) if s.is_module]
    child_paths = [f"{block0}.{s.name}" for s in children]
    attn = next(
        (p for p in child_paths if any(c.target == "softmax" for c in G.calls_within(p))), None
    )
    if attn is None:
        raise UnsupportedModelError(f"no child of {block0} computes a softmax attention")
    norms = [p for p in child_paths if G.is_norm(p)]
    # Children without parameters (dropout, identity) compute nothing at inference.
    mlps = [p for p in child_paths if p not in norms and p != attn and G.subtree_params(p)]
    mlps = list(dict.fromkeys(mlps))
    if len(mlps) != 1:
        raise UnsupportedModelError(f"expected one MLP in {block0}, found {mlps}")
    mlp = mlps[0]
    block_in = block_call.inputs[0]
    attn_in, attn_out, mlp_in = G.inp(attn), G.out(attn), G.inp(mlp)
    parallel = not G.derives(mlp_in, attn_out)
    attn_norm = next((n for n in norms if G.out(n) == attn_in), None)
    mlp_norm = next((n for n in norms if G.out(n) == mlp_in), None)
    if attn_norm is None or mlp_norm is None or G.inp(attn_norm) != block_in:
        raise UnsupportedModelError(
            f"{block0} is not a pre-norm block (norms {norms} do not feed attention and MLP)"
        )
    extra_norms = [n for n in norms if n not in (attn_norm, mlp_norm)]
    if extra_norms:
        raise UnsupportedModelError(f"{block0} has extra norms {extra_norms} (sandwich norm)")
    if parallel and G.inp(mlp_norm) != block_in:
        raise UnsupportedModelError(f"{block0}: parallel MLP does not read the block input")
    if not parallel and not G.derives(G.inp(mlp_norm), attn_out):
        raise UnsupportedModelError(f"{block0}: MLP input does not follow the attention residual")
    layout = "parallel" if parallel else "sequential"
    evidence.append(
        "block: attention and MLP read the block input (parallel)"
        if parallel
        else "block: norm -> attention -> add -> norm -> MLP -> add"
    )

    norm = parts.norm_spec(G, attn_norm, hidden_dim)
    if parts.norm_spec(G, mlp_norm, hidden_dim) != norm:
        raise UnsupportedModelError(f"{attn_norm} and {mlp_norm} normalize differently")
    evidence.append(f"norm: {norm} (probed {type(G.submodule(attn_norm)).__name__})")

    attention, attn_weights = attention_spec(G, attn, hidden_dim, block0, evidence)
    mlp_found, mlp_weights = mlp_spec(G, mlp, hidden_dim, block0, evidence)

    # -- final norm and head -----------------------------------------------------------------
    after = [c for c in module_calls if c.index > last_block_call.index and c.scope != blocks[-1]]
    after = [c for c in after if not c.target.startswith(f"{blocks[-1]}.")]
    head = next(
        (
            c.target
            for c in after
            if graph.value(c.outputs[0]).shape[-1] == vocab_size and G.is_projection(c.target)
        ),
        None,
    )
    if head is None:
        raise UnsupportedModelError("no language-model head producing vocabulary logits")
    final_norm = next((c.target for c in after if G.is_norm(c.target)), None)
    if final_norm is not None and parts.norm_spec(G, final_norm, hidden_dim) != norm:
        raise UnsupportedModelError(f"final norm {final_norm} differs from the block norms")
    if "bias" in G.own_params(head):
        raise UnsupportedModelError(f"the LM head {head} has a bias, not supported yet")
    tied_names = {t.name: t.target for t in graph.tied}
    tied = tied_names.get(f"{head}.weight") == f"{embed}.weight"
    evidence.append(f"LM head {head}: {'tied to' if tied else 'separate from'} the token embedding")

    # -- positions and embedding scale ---------------------------------------------------------
    rope = None
    max_positions = None
    if positions:
        max_positions = G.own_params(positions[0])["weight"][0]
        evidence.append(f"learned positions: {positions[0]} ({max_positions} rows)")
    elif rotary:
        rope = _rope_spec(G, rotary[0], config, attention.head_dim, evidence)
    else:
        raise UnsupportedModelError("no position information found (no rope, no learned positions)")
    windows = [v for k, v in vars(config).items() if "window" in k and type(v) is int]
    length = min(max([32, *(2 * w + 1 for w in windows)]), 8193)
    stem = probes.run_stem(
        model, embed, positions[0] if positions else None, block0, (group.container, head), length
    )
    scale = _embedding_scale(stem)
    window = probes.mask_window(stem["mask"]) if "mask" in stem else None
    if window is not None:
        attention = dataclasses.replace(attention, sliding_window=window)
        evidence.append(f"attention mask: causal with a sliding window of {window} tokens")
    if scale is not None:
        evidence.append(f"token embeddings are scaled by {scale:.6g} before the first block")

    weights: dict[str, WeightRef] = {
        "block": WeightRef(f"{group.container}.{{i}}", "prefix"),
        "embed": WeightRef(f"{embed}.weight", "embedding"),
    }
    if positions:
        weights["pos_embed"] = WeightRef(f"{positions[0]}.weight", "embedding")
    if not tied:
        weights["lm_head"] = WeightRef(f"{head}.weight", "linear")
    if final_norm is not None:
        weights.update(parts.norm_weights(G, final_norm, "final_norm", None))
    for role_prefix, path in (("attn_norm", attn_norm), ("mlp_norm", mlp_norm)):
        if role_prefix == "mlp_norm" and path == attn_norm:
            continue
        weights.update(parts.norm_weights(G, path, role_prefix, block0))
    weights.update(attn_weights)
    weights.update(mlp_weights)
    shared_norm = parallel and mlp_norm == attn_norm

    spec = ModelSpec(
        name=name,
        class_prefix="".join(part.capitalize() for part in name.split("_")),
        source=source,
        revision=revision,
        task="causal_lm",
        hf_model_class=type(model).__name__,
        hf_block_class=group.class_name,
        hf_attention_class=type(G.submodule(attn)).__name__,
        hf_mlp_class=type(G.submodule(mlp)).__name__,
        hf_norm_class=type(G.submodule(attn_norm)).__name__,
        num_layers=len(blocks),
        embedding=EmbeddingSpec(
            vocab_size=vocab_size,
            hidden_dim=hidden_dim,
            scale=scale,
            position="learned" if positions else "rope",
            max_positions=max_positions,
            tie_word_embeddings=tied,
        ),
        rope=rope,
        block_layout="parallel_shared_norm" if shared_norm else layout,
        norm=norm,
        attention=attention,
        mlp=mlp_found,
        final_norm=final_norm is not None,
        weights=weights,
        bos_token_id=_token_id(config, "bos_token_id"),
        eos_token_id=_token_id(config, "eos_token_id"),
        pad_token_id=_token_id(config, "pad_token_id"),
        evidence=evidence,
    )
    return spec


def _token_id(config, key: str) -> int | None:
    value = getattr(config, key, None)
    if isinstance(value, list):
        value = value[0] if value else None
    return value


def _rope_spec(G: GraphView, rotary: str, config, head_dim: int, evidence: list[str]) -> RopeSpec:
    observed = probes.probe_rope(G.submodule(rotary), config, head_dim)
    rotary_dim = observed.shape[-1]
    params = getattr(config, "rope_parameters", None) or {}
    theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    candidates = {"none": None}
    factor = params.get("factor")
    if factor:
        candidates["linear"] = {"scaling": "linear", "factor": float(factor)}
        if "low_freq_factor" in params:
            candidates["llama3"] = {
                "scaling": "llama3",
                "factor": float(factor),
                "low_freq_factor": float(params["low_freq_factor"]),
                "high_freq_factor": float(params["high_freq_factor"]),
                "original_max_position_embeddings": int(params["original_max_position_embeddings"]),
            }
    chosen = probes.pick(
        f"rotary embedding {type(G.submodule(rotary)).__name__}",
        observed,
        {
            k: (lambda s=s: probes.rope_cos(theta, rotary_dim, observed.shape[0], s))
            for k, s in candidates.items()
        },
    )
    scaling = candidates[chosen] or {}
    evidence.append(
        f"rope: theta {theta:g}, rotary dim {rotary_dim} of {head_dim}, scaling {chosen}"
    )
    return RopeSpec(
        theta=theta,
        rotary_dim=rotary_dim,
        scaling=chosen,
        factor=scaling.get("factor", 1.0),
        low_freq_factor=scaling.get("low_freq_factor", 1.0),
        high_freq_factor=scaling.get("high_freq_factor", 4.0),
        original_max_position_embeddings=scaling.get("original_max_position_embeddings", 8192),
    )


def _embedding_scale(captured: dict[str, torch.Tensor]) -> float | None:
    """How the first block's input relates to the looked-up embedding rows (after positions)."""
    emb, block_in, pos = captured["embed"], captured["block"], captured.get("position")
    if pos is not None:
        block_in = block_in - pos
    ratio = float((block_in * emb).sum() / (emb * emb).sum())
    if not torch.allclose(block_in, emb * ratio, rtol=1e-5, atol=1e-5):
        raise UnsupportedModelError("the first block's input is not a scaled token embedding")
    if math.isclose(ratio, 1.0, rel_tol=1e-6):
        return None
    return ratio
