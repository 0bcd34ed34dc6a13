"""Recognize a self-attention module from the recorded dataflow of eager attention.

The score matmul's operands are the query and the key, the mixing matmul's second operand is the
value: a projection is q, k or v by which operand it feeds; the output projection is the one that
reads the mix. Head counts come from the projections' shapes and the module's `head_dim`, the
scale from its `scaling` setting, q/k norms from the norm children feeding q and k.
"""

from __future__ import annotations

from hf2kh.errors import UnsupportedModelError
from hf2kh.recognize import parts
from hf2kh.recognize.graph_view import GraphView
from hf2kh.recognize.spec import AttentionSpec


def attention_spec(G: GraphView, attn: str, hidden_dim: int, block0: str, evidence: list[str]):
    calls = G.calls_within(attn)
    matmuls = [c for c in calls if c.target in ("matmul", "bmm", "baddbmm", "einsum")]
    if len(matmuls) < 2:
        raise UnsupportedModelError(f"{attn}: expected the two matmuls of eager attention")
    scores, mixes = matmuls[0], matmuls[-1]
    q_val, k_val = scores.inputs[-2], scores.inputs[-1]
    v_val = mixes.inputs[-1]
    node = G.g.module(attn)
    projections = [c for c in node.children if G.is_projection(c)]

    def feeds(p: str, v: int) -> bool:
        return G.derives(v, G.out(p))

    q = [p for p in projections if feeds(p, q_val)]
    k = [p for p in projections if feeds(p, k_val)]
    v = [p for p in projections if feeds(p, v_val)]
    o = [p for p in projections if G.derives(G.inp(p), mixes.outputs[0])]
    if len(o) != 1:
        raise UnsupportedModelError(f"{attn}: cannot tell the output projection ({o})")
    weights = {}
    attrs = node.attributes
    fused = len(q) == 1 and q == k == v
    fused_layout = "blocked"
    if fused:
        refs, layout, bias = parts.proj_weights(G, "qkv", q[0], block0, hidden_dim)
        weights.update(refs)
        split = next(
            (
                c
                for c in calls
                if c.target in ("split", "chunk")
                and len(c.outputs) == 3
                and G.derives(c.inputs[0], G.out(q[0]))
            ),
            None,
        )
        if split is None:
            raise UnsupportedModelError(
                f"{attn}: the fused projection {q[0]} is not split into q, k, v"
            )
        if not all(
            G.derives(operand, part)
            for part, operand in zip(split.outputs, (q_val, k_val, v_val), strict=True)
        ):
            raise UnsupportedModelError(f"{attn}: fused projection is not split in q, k, v order")
        widths = [G.g.value(x).shape[-1] for x in split.outputs]
        split_input = G.g.value(split.inputs[0]).shape
        total = G.g.value(G.out(q[0])).shape[-1]
        # Split on the projection's own output: [q | k | v] blocks. Split on a per-head view of
        # it (heads, 3 * head_dim): each head's rows are [q_h | k_h | v_h].
        fused_layout = "blocked" if split_input[-1] == total else "per_head"
        if fused_layout == "per_head":
            if len(set(widths)) != 1:
                raise UnsupportedModelError(f"{attn}: per-head fused q/k/v of unequal widths")
            heads = total // sum(widths)
            widths = [w * heads for w in widths]
        q_out, k_out = widths[0], widths[1]
        q_bias = k_bias = v_bias = bias
        evidence.append(
            f"attention: fused qkv projection {q[0]} ({layout}, {fused_layout} layout), "
            f"q/k/v widths {widths}"
        )
    else:
        if not (len(q) == len(k) == len(v) == 1) or len({q[0], k[0], v[0]}) != 3:
            raise UnsupportedModelError(f"{attn}: cannot tell q/k/v projections ({q}, {k}, {v})")
        biases = []
        for role, p in (("query", q[0]), ("key", k[0]), ("value", v[0])):
            refs, layout, bias = parts.proj_weights(G, role, p, block0, hidden_dim)
            if layout != "linear":
                raise UnsupportedModelError(f"{p}: only Linear q/k/v are supported when unfused")
            weights.update(refs)
            biases.append(bias)
        q_bias, k_bias, v_bias = biases
        q_out = G.own_params(q[0])["weight"][0]
        k_out = G.own_params(k[0])["weight"][0]
        evidence.append(
            f"attention: q/k/v from {q[0]}, {k[0]}, {v[0]} (feed the score/mix matmuls)"
        )
    # The query operand of the score matmul is (batch, heads, length, head_dim).
    head_dim = G.g.value(q_val).shape[-1]
    q_heads, k_heads = q_out // head_dim, k_out // head_dim
    o_refs, o_layout, o_bias = parts.proj_weights(G, "out", o[0], block0, q_out)
    weights.update(o_refs)
    scale = attrs.get("scaling")
    if scale is None:
        raise UnsupportedModelError(f"{attn}: no attention scaling setting found")
    qk_norm = None
    norm_children = [c for c in node.children if G.is_norm(c)]
    if norm_children:
        q_norms = [c for c in norm_children if feeds(c, q_val)]
        k_norms = [c for c in norm_children if feeds(c, k_val)]
        if len(q_norms) != 1 or len(k_norms) != 1 or len(norm_children) != 2:
            raise UnsupportedModelError(f"{attn}: unrecognized norms {norm_children}")
        qk_norm = parts.norm_spec(G, q_norms[0], head_dim)
        if parts.norm_spec(G, k_norms[0], head_dim) != qk_norm:
            raise UnsupportedModelError(f"{attn}: q and k norms differ")
        weights.update(parts.norm_weights(G, q_norms[0], "q_norm", block0))
        weights.update(parts.norm_weights(G, k_norms[0], "k_norm", block0))
        evidence.append(f"q/k norm per head: {qk_norm}")
    spec = AttentionSpec(
        num_query_heads=q_heads,
        num_key_value_heads=k_heads,
        head_dim=head_dim,
        query_bias=q_bias,
        key_bias=k_bias,
        value_bias=v_bias,
        output_bias=o_bias,
        scale=float(scale),
        qk_norm=qk_norm,
        fused_qkv=fused,
        fused_layout=fused_layout if fused else "blocked",
    )
    evidence.append(
        f"attention: {q_heads} query heads, {k_heads} kv heads, head_dim {head_dim}, "
        f"scale {float(scale):.6g}"
    )
    return spec, weights
