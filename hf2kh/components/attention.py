"""Self-attention: q/k/v projections (separate or fused, blocked or per head), GQA/MQA, biases,
q/k norms, rope, the score scale.

Recognized from the recorded dataflow of eager attention: the score matmul's operands are the
query and the key, the mixing matmul's second operand is the value; a projection is q, k or v by
which operand it feeds, the output projection is the one reading the mix. Head counts come from
shapes, the scale from the constants on the score path (and a softcap there, `softcap`), q/k
norms from the norm children feeding q and k.
Emitted as the package's attention layer (`<name>_attention.py`) with a key/value cache.
"""

from __future__ import annotations

import dataclasses
import math

from hf2kh.components import alibi as alibi_component
from hf2kh.components import computed_scale, fused_qkv, query_temperature, relative_attention
from hf2kh.components import norm as norm_component
from hf2kh.components import rope as rope_component
from hf2kh.components import softcap as softcap_component
from hf2kh.components.base import (
    Arg,
    check_output_is,
    explain_ops,
    post_norm_inside,
    pre_norm_inside,
)
from hf2kh.errors import UnsupportedModelError
from hf2kh.generate.weight_map import WeightRow
from hf2kh.inspect.dataflow import PASSTHROUGH, first_call
from hf2kh.ir import Attention, QkvLayout, RopeLayout, WeightLayout
from hf2kh.recognize import probes
from hf2kh.recognize.graph_view import GraphView

# What eager attention and the rotary code inside it may call, besides its child modules.
OPS = PASSTHROUGH | {
    "matmul",
    "bmm",
    "baddbmm",
    "softmax",
    "add",
    "mul",
    "neg",
    "cat",
    "__getitem__",
    "size",
    "getitem",
    "tensor",
    "type",
    "where",
    "broadcast_to",  # k/v repeated up to the query heads (Falcon), as `expand`
    "unbind",  # a fused q/k/v viewed as (..., 3, heads, head_dim) and unbound (ModernBERT)
}

# The constructor argument holding the score softcap, when the model has one.
SOFTCAP_ARG = "attention_logit_softcap"

# Keras layer names inside the attention layer, by role.
LAYERS = {
    "query": "query",
    "key": "key",
    "value": "value",
    "output": "attention_output",
    "query_norm": "query_norm",
    "key_norm": "key_norm",
}


def is_attention(G: GraphView, path: str) -> bool:
    return any(c.target == "softmax" for c in G.calls_within(path))


def _projection(G: GraphView, path: str, width: int) -> tuple[WeightLayout, bool]:
    layout, bias = probes.probe_projection(G.submodule(path), width)
    return WeightLayout(layout), bias


def recognize(
    G: GraphView, attn: str, hidden_dim: int, rope, evidence: list[str], causal: bool = True
):
    """(Attention, weights: role -> HF module path) of the attention module `attn`; `causal` as
    the block's reach probe measured it."""
    calls = G.calls_within(attn)
    projections, norm_children, children = _parts(G, attn)
    matmuls = _products(G, attn, calls)
    if len(matmuls) < 2:
        raise UnsupportedModelError(f"{attn}: expected the two matmuls of eager attention")
    scores, mixes = matmuls[0], matmuls[-1]
    q_val, k_val = scores.inputs[-2], scores.inputs[-1]
    v_val = mixes.inputs[-1]

    def feeds(p: str, v: int) -> bool:
        return G.derives(v, G.out(p))

    q = [p for p in projections if feeds(p, q_val)]
    k = [p for p in projections if feeds(p, k_val)]
    v = [p for p in projections if feeds(p, v_val)]
    o = [p for p in projections if G.derives(G.inp(p), mixes.outputs[0])]
    if len(o) != 1:
        raise UnsupportedModelError(f"{attn}: cannot tell the output projection ({o})")
    weights: dict[str, str] = {}
    if len(q) == 1 and q == k == v:
        fused, qkv_weight_layout, bias = _fused(G, attn, calls, q[0], hidden_dim)
        qkv_layout, widths = fused.layout, fused.widths
        q_bias = k_bias = v_bias = bias
        weights["qkv"] = q[0]
        q_out, k_out = widths[0], widths[1]
        sharding = (
            f" of {fused.shards} shards [{' | '.join(fused.order)}]"
            if qkv_layout is QkvLayout.SHARDED
            else ""
        )
        evidence.append(
            f"attention: fused qkv projection {q[0]} ({qkv_weight_layout.value}, "
            f"{qkv_layout.value} layout{sharding}), q/k/v widths {widths}"
        )
    else:
        if not (len(q) == len(k) == len(v) == 1) or len({q[0], k[0], v[0]}) != 3:
            _refuse_latent_key_value(G, attn, k, v)
            raise UnsupportedModelError(f"{attn}: cannot tell q/k/v projections ({q}, {k}, {v})")
        fused, biases = None, []
        for role, p in (("query", q[0]), ("key", k[0]), ("value", v[0])):
            layout, bias = _projection(G, p, hidden_dim)
            if layout is not WeightLayout.LINEAR:
                raise UnsupportedModelError(f"{p}: only Linear q/k/v are supported when unfused")
            weights[role] = p
            biases.append(bias)
        q_bias, k_bias, v_bias = biases
        qkv_layout, qkv_weight_layout = QkvLayout.SEPARATE, WeightLayout.LINEAR
        q_out = G.own_params(q[0])["weight"][0]
        k_out = G.own_params(k[0])["weight"][0]
        evidence.append(
            f"attention: q/k/v from {q[0]}, {k[0]}, {v[0]} (feed the score/mix matmuls)"
        )
    # The query operand of the score matmul is (batch, heads, length, head_dim).
    head_dim = G.g.value(q_val).shape[-1]
    q_heads, k_heads = q_out // head_dim, k_out // head_dim
    check_output_is(G, attn, o[0], residual_ok=True)  # BLOOM adds the residual itself
    o_layout, o_bias = _projection(G, o[0], q_out)
    weights["output"] = o[0]
    # Ops inside child modules (projections, norms) are theirs; the rest is attention's own.
    own = [c for c in calls if not any(_within(c.scope, child) for child in children)]
    relative = None
    if "qkv" not in weights and _gathered_terms(G, own, projections):
        # DeBERTa's disentangled terms: read from the dataflow, confirmed on numbers
        relative, position_weights, scale = relative_attention.recognize(
            G, attn, own, q[0], k[0], head_dim, q_out // head_dim, evidence
        )
        weights.update(position_weights)
    else:
        _refuse_gathered_scores(G, own, projections)
    # a factor computed from the positions alone on the query (Llama 4's temperature tuning)
    positional = query_temperature.position_chain(G, own, q_val, projections)
    own_scored = [c for c in own if c not in positional]
    computed = [] if relative is not None else computed_scale.find(G, own_scored, scores)
    if computed and "qkv" in weights:
        raise UnsupportedModelError(f"{attn}: a computed score scale with a fused q/k/v")
    if relative is None:
        scored = [c for c in own_scored if c not in computed]
        scale, softcap, explained = _scores(G, attn, scored, scores)
        if computed:  # DeBERTa's sqrt(head_dim * scale_factor): measured on numbers
            scale = computed_scale.measure(G, attn, q[0], k[0], q_out // head_dim, head_dim)
            explained = [*explained, *computed]
            evidence.append(f"{attn}: the score scale is computed at run time: {scale:.6g}")
        # On numbers: a bias added to the scores (ALiBi), and `baddbmm`'s own factor on q . k
        alibi, product = alibi_component.recognize(G, attn, evidence)
        scale *= product.get("alpha", 1.0) if scores.target == "baddbmm" else 1.0
    else:  # every op on the score path is checked by the relative terms' numeric probe
        softcap, alibi, explained = None, None, []
    qk_norm, qk_norm_per_head = None, True
    # BERT's attention normalizes its output after adding the residual: that norm is a block step
    post_norm = post_norm_inside(G, attn, first_call(G.g, attn))
    # a pre-norm encoder's attention normalizes its input first: that norm is a block step too
    pre_norm = pre_norm_inside(G, attn, first_call(G.g, attn))
    inner = {n[0] for n in (post_norm, pre_norm) if n is not None}
    norm_children = [c for c in norm_children if c not in inner]
    if norm_children:
        q_norms = [c for c in norm_children if feeds(c, q_val)]
        k_norms = [c for c in norm_children if feeds(c, k_val)]
        if len(q_norms) != 1 or len(k_norms) != 1 or len(norm_children) != 2:
            raise UnsupportedModelError(f"{attn}: unrecognized norms {norm_children}")
        q_width, k_width = (G.g.value(G.inp(n)).shape[-1] for n in (q_norms[0], k_norms[0]))
        qk_norm_per_head = q_width == k_width == head_dim
        if not qk_norm_per_head and (q_width, k_width) != (q_out, k_out):
            raise UnsupportedModelError(
                f"{attn}: q/k norms over {q_width}/{k_width} features, neither per head of "
                f"{head_dim} nor all heads at once ({q_out}/{k_out}): not supported yet"
            )
        qk_norm = norm_component.recognize(G, q_norms[0], q_width)
        if norm_component.recognize(G, k_norms[0], k_width) != qk_norm:
            raise UnsupportedModelError(f"{attn}: q and k norms differ")
        weights["query_norm"], weights["key_norm"] = q_norms[0], k_norms[0]
        where = "per head" if qk_norm_per_head else "over all heads at once"
        evidence.append(f"q/k norm {where}: {norm_component.describe(qk_norm)}")
    allowed = OPS
    sources = [q[0]] if "qkv" in weights else [q[0], k[0]]
    temperature, query_scale = None, None
    if any(c.target in ("floor", "log", "log1p") for c in positional):
        temperature = query_temperature.recognize(
            G, attn, sources, head_dim, G.model.config, evidence
        )
        query_scale = query_temperature.at_probe_positions(G, attn, temperature)
        explained = [*explained, *(c for c in positional if c.target in query_temperature.OPS)]
    if rope is not None:
        rope = rope_component.probe_layout(G, attn, sources, rope, head_dim, query_scale)
        if rope is None:
            evidence.append(f"{attn}: queries and keys are not rotated (probed): no rope")
    elif alibi is None and relative is None:
        # no rotary tables handed to the block: rope built inside the attention (GPT-J)?
        rope = rope_component.recognize_inside(
            G, attn, sources, head_dim, G.model.config, query_scale
        )
        if rope is not None:
            allowed = allowed | rope_component.INSIDE_OPS
            evidence.append(
                f"{attn}: queries and keys rotated by position with no rotary tables handed "
                "to the block: rope applied from the attention's own tables (probed)"
            )
    if rope is not None and rope.layout is RopeLayout.INTERLEAVED:
        allowed = allowed | rope_component.INTERLEAVED_OPS
    if relative is not None:
        allowed = allowed | relative_attention.OPS | relative_attention.MASK_OPS
    elif computed:  # DeBERTa's attention without relative terms masks with `masked_fill`
        allowed = allowed | relative_attention.MASK_OPS
    explain_ops(attn, [c for c in own if c not in explained], allowed)
    spec = Attention(
        num_query_heads=q_heads,
        num_key_value_heads=k_heads,
        head_dim=head_dim,
        query_bias=q_bias,
        key_bias=k_bias,
        value_bias=v_bias,
        output_bias=o_bias,
        scale=float(scale),
        qkv_layout=qkv_layout,
        qkv_weight_layout=qkv_weight_layout,
        qkv_shards=fused.shards if qkv_layout is QkvLayout.SHARDED else 1,
        qkv_order=fused.order if qkv_layout is QkvLayout.SHARDED else "qkv",
        output_weight_layout=o_layout,
        rope=rope,
        qk_norm=qk_norm,
        qk_norm_per_head=qk_norm_per_head,
        softcap=softcap,
        alibi=alibi,
        causal=causal,
        query_temperature=temperature,
        relative=relative,
    )
    evidence.append(
        f"attention: {q_heads} query heads, {k_heads} kv heads, head_dim {head_dim}, "
        f"scale {float(scale):.6g} (constants on the score path)"
        + (f", scores softcapped at {softcap:g}" if softcap else "")
    )
    return spec, {role: path for role, path in weights.items()}


def _scores(G: GraphView, attn: str, own, scores) -> tuple[float, float | None, list]:
    """(scale, softcap, the calls they explain) from the attention's own calls: constant
    `mul`/`div` on the query or key path into the score matmul and on the path from it to the
    softmax (none: scale 1.0, as in GPT-Neo), and a softcap on the latter."""
    softmax = next(c for c in own if c.target == "softmax" and c.index > scores.index)
    made = scores.outputs[0]
    chain = [
        c
        for c in own
        if scores.index < c.index < softmax.index
        and c.outputs
        and G.derives(c.outputs[0], made)
        and G.derives(softmax.inputs[0], c.outputs[0])
    ]
    softcap, capped = softcap_component.find(attn, chain)
    tanh_at = next((c.index for c in capped), softmax.index)
    operands = scores.inputs[-2:]
    feeding = [
        c
        for c in own
        if c.index < scores.index
        and c.outputs
        and softcap_component.constant(c) is not None
        and any(G.derives(v, c.outputs[0]) for v in operands)
    ]
    scale, explained = 1.0, [*capped]
    for c in [*feeding, *chain]:
        if c in capped or c.kind != "function":
            continue
        factor = softcap_component.constant(c)
        if factor is not None and c.index < tanh_at:
            scale = scale * factor if c.target in softcap_component.MULS else scale / factor
            explained.append(c)
        elif factor is not None or c.target in softcap_component.MULS | softcap_component.DIVS:
            raise UnsupportedModelError(
                f"{attn}: `{c.target}` on the attention scores is not explained"
            )
    return scale, softcap, explained


def _refuse_latent_key_value(G: GraphView, attn: str, k: list[str], v: list[str]) -> None:
    """Stop the port with one line when the keys and values both come from one projection
    feeding another (a low-rank latent expanded per head: DeepSeek-V2's multi-head latent
    attention, `kv_a_proj_with_mqa` -> `kv_b_proj`); no component computes that yet."""
    chain = [(a, b) for a in k for b in k if a != b and G.derives(G.inp(b), G.out(a))]
    if set(k) == set(v) and len(k) == 2 and chain:
        latent, expanded = chain[0]
        raise UnsupportedModelError(
            f"{attn}: keys and values both come from the latent {latent} expanded by "
            f"{expanded} (multi-head latent attention): not supported yet"
        )


def _gathered_terms(G: GraphView, own, projections: list[str]) -> list:
    """The `gather`s picking terms of the scores reaching the softmax out of another product
    (relative-position attention: DeBERTa's content-to-position and position-to-content terms).
    A gather from what no projection computed (GPT-J's sin/cos rows at the position ids) is not
    such a term."""
    softmax = next(c for c in own if c.target == "softmax")
    return [
        c
        for c in own
        if c.target == "gather"
        and c.outputs
        and G.derives(softmax.inputs[0], c.outputs[0])
        and any(G.derives(c.inputs[0], G.out(p)) for p in projections)
    ]


def _refuse_gathered_scores(G: GraphView, own, projections: list[str]) -> None:
    """Stop the port, naming the op, when the scores add gathered terms (`_gathered_terms`) that
    no component computes (a fused q/k/v: the relative terms are only read from separate ones)."""
    for c in _gathered_terms(G, own, projections):
        raise UnsupportedModelError(
            f"op `gather` in {c.scope}: the attention scores add terms gathered by position "
            "index from other products (relative-position attention, as DeBERTa's "
            "disentangled attention): not supported yet"
        )


def _parts(G: GraphView, attn: str) -> tuple[list[str], list[str], list[str]]:
    """(projections, norms, other children) of the attention module. Parameterless containers
    holding them are looked into (BERT's `attention.self` with q/k/v and `attention.output` with
    the output projection and the post-norm): their own ops are the attention's."""
    projections, norms, others = [], [], []

    def visit(path: str) -> None:
        for child in G.g.module(path).children:
            if G.is_projection(child):
                projections.append(child)
            elif G.is_norm(child):
                norms.append(child)
            elif G.subtree_params(child) and not G.own_params(child):
                visit(child)
            else:
                others.append(child)

    visit(attn)
    return projections, norms, [*projections, *norms, *others]


def _products(G: GraphView, attn: str, calls):
    """The matrix products of the attention (scores, mix), not those inside its projections
    (Falcon's `FalconLinear` multiplies with `@`)."""
    projections = _parts(G, attn)[0]
    return [
        c
        for c in calls
        if c.target in ("matmul", "bmm", "baddbmm", "einsum")
        and not any(_within(c.scope, p) for p in projections)
    ]


def _within(scope: str, path: str) -> bool:
    return scope == path or scope.startswith(f"{path}.")


def _fused(G: GraphView, attn: str, calls, fused: str, hidden_dim: int):
    layout, bias = _projection(G, fused, hidden_dim)
    split = next(
        (
            c
            for c in calls
            if c.target in ("split", "chunk")
            and len(c.outputs) == 3
            and G.derives(c.inputs[0], G.out(fused))
        ),
        None,
    )
    matmuls = _products(G, attn, calls)
    operands = (matmuls[0].inputs[-2], matmuls[0].inputs[-1], matmuls[-1].inputs[-1])
    if split is None:
        split = _sliced(G, calls, fused, operands)
    in_order = split is not None and all(
        G.derives(operand, part) for part, operand in zip(split.outputs, operands, strict=True)
    )
    total = G.g.value(G.out(fused)).shape[-1]
    if not in_order or G.g.value(split.inputs[0]).shape[-1] != total:
        # a view into heads and index ops (BLOOM, Falcon), a split of a per-head or per-shard
        # view (GPT-NeoX, CodeGen): which rows are which, on numbers
        return fused_qkv.recognize(G, attn, fused, matmuls[0]), layout, bias
    # Split on the projection's own output: [q | k | v] blocks.
    widths = [G.g.value(x).shape[-1] for x in split.outputs]
    return fused_qkv.Fused(QkvLayout.BLOCKED, widths), layout, bias


def _sliced(G: GraphView, calls, fused: str, operands):
    """Phi-3's form of a blocked split: three consecutive slices `qkv[..., a:b]` of the fused
    output, read as one split (a `Call` whose outputs are the q, k, v parts, in that order)."""
    total = G.g.value(G.out(fused)).shape[-1]
    slices = [c for c in calls if c.target == "__getitem__" and c.inputs[:1] == [G.out(fused)]]
    parts = [next((c for c in slices if G.derives(o, c.outputs[0])), None) for o in operands]
    if None in parts or len({id(c) for c in parts}) != 3:
        return None
    if [c.index for c in parts] != sorted(c.index for c in parts):
        return None  # sliced out of order: the offsets are not recorded, so not knowable here
    if sum(G.g.value(c.outputs[0]).shape[-1] for c in parts) != total:
        return None
    return dataclasses.replace(parts[0], outputs=[c.outputs[0] for c in parts])


def custom_scale(a: Attention) -> bool:
    return not math.isclose(a.scale, a.head_dim**-0.5, rel_tol=1e-9)


def args(a: Attention) -> list[Arg]:
    found = [
        Arg("num_query_heads", a.num_query_heads, "int. Attention query heads."),
        Arg(
            "num_key_value_heads",
            a.num_key_value_heads,
            "int. Key/value heads (grouped-query attention when fewer).",
        ),
        Arg("head_dim", a.head_dim, "int. Width of one attention head."),
    ]
    if custom_scale(a):
        found.append(
            Arg(
                "attention_scale",
                a.scale,
                "float. Multiplies the attention scores (not head_dim**-0.5 here).",
            )
        )
    if a.softcap is not None:
        found += softcap_component.args(a.softcap, SOFTCAP_ARG, "Attention scores")
    if a.query_temperature is not None:
        found += query_temperature.args(a.query_temperature)
    if a.relative is not None:
        found += relative_attention.args(a.relative)
    if a.qk_norm is not None:
        found.append(
            Arg(
                "query_key_norm_epsilon",
                a.qk_norm.epsilon,
                "float. Epsilon of the per-head query/key norms.",
            )
        )
    return found


# -- emitted code ----------------------------------------------------------------------------------

# q/k/v projection -> (einsum equation, heads, bias axes) of its EinsumDense layer.
_PROJECTIONS = {
    "query": ("bqm,muh->bquh", "self.num_query_heads", "uh"),
    "key": ("bkm,mvh->bkvh", "self.num_key_value_heads", "vh"),
    "value": ("bkm,mvh->bkvh", "self.num_key_value_heads", "vh"),
}


def qkv_biased(a: Attention) -> bool:
    return a.query_bias or a.key_bias or a.value_bias


def projection_params(a: Attention) -> str:
    """Parameters of the layer's `_projection` helper: `bias_axes` only if some q/k/v has one."""
    return "name, equation, num_heads" + (", bias_axes" if qkv_biased(a) else "")


def projection_args(a: Attention, role: str) -> str:
    equation, heads, axes = _PROJECTIONS[role]
    args = f'"{role}", "{equation}", {heads}'
    if qkv_biased(a):
        biased = {"query": a.query_bias, "key": a.key_bias, "value": a.value_bias}[role]
        args += f', bias_axes="{axes}"' if biased else ", bias_axes=None"
    return args


# -- weight rows ---------------------------------------------------------------------------------


def _head_counts(a: Attention) -> dict[str, int]:
    return {
        "query": a.num_query_heads,
        "key": a.num_key_value_heads,
        "value": a.num_key_value_heads,
    }


def _to_heads(a: Attention, role: str, param: str, shape: tuple[int, ...], hidden: int):
    """Ops and Keras shape for a q/k/v part already in (in, out) / (out,) orientation."""
    heads = _head_counts(a)[role]
    keras_shape = (hidden, heads, a.head_dim) if param == "kernel" else (heads, a.head_dim)
    return ({"op": "reshape", "shape": list(keras_shape)},), keras_shape


def weight_rows(a: Attention, weights: dict[str, str], hf, keras, shapes, hidden: int):
    """Rows for one block's attention. `hf(path)` gives a block-relative HF module's full name,
    `keras` the attention layer's variable path prefix."""
    rows: list[WeightRow] = []
    if a.qkv_layout is QkvLayout.SEPARATE:
        for role in ("query", "key", "value"):
            rows += _projection_rows(a, role, hf(weights[role]), keras, shapes, hidden, None)
    else:
        for index, role in enumerate(("query", "key", "value")):
            rows += _projection_rows(a, role, hf(weights["qkv"]), keras, shapes, hidden, index)
    name = hf(weights["output"])
    shape = tuple(shapes[f"{name}.weight"])
    ops = ({"op": "transpose"},) if a.output_weight_layout is WeightLayout.LINEAR else ()
    out_shape = (a.num_query_heads, a.head_dim, hidden)
    rows.append(
        WeightRow(
            f"{name}.weight",
            shape,
            f"{keras}/{LAYERS['output']}/kernel",
            out_shape,
            (*ops, {"op": "reshape", "shape": list(out_shape)}),
        )
    )
    if a.output_bias:
        bias_shape = tuple(shapes[f"{name}.bias"])
        rows.append(
            WeightRow(
                f"{name}.bias", bias_shape, f"{keras}/{LAYERS['output']}/bias", bias_shape, ()
            )
        )
    if a.relative is not None:
        rows += relative_attention.weight_rows(a, weights, hf, keras, shapes, hidden)
    if a.qk_norm is not None:
        for role in ("query_norm", "key_norm"):
            rows += norm_component.weight_rows(
                a.qk_norm, hf(weights[role]), f"{keras}/{LAYERS[role]}", shapes
            )
    return rows


def _projection_rows(a: Attention, role, name, keras, shapes, hidden, part):
    rows = []
    biased = {"query": a.query_bias, "key": a.key_bias, "value": a.value_bias}[role]
    for param, hf_param in (("kernel", "weight"), ("bias", "bias")):
        if param == "bias" and not biased:
            continue
        full = f"{name}.{hf_param}"
        shape = tuple(shapes[full])
        split = _part_ops(a, part, shape, param) if part is not None else ()
        transpose = param == "kernel" and a.qkv_weight_layout is WeightLayout.LINEAR
        ops, keras_shape = _to_heads(a, role, param, shape, hidden)
        rows.append(
            WeightRow(
                full,
                shape,
                f"{keras}/{LAYERS[role]}/{param}",
                keras_shape,
                (*split, *(({"op": "transpose"},) if transpose else ()), *ops),
            )
        )
    return rows


def _part_ops(a: Attention, index: int, shape: tuple[int, ...], param: str) -> tuple[dict, ...]:
    """Ops taking part `index` (q, k, v) of a fused projection's tensor."""
    sizes = [a.num_query_heads * a.head_dim] + [a.num_key_value_heads * a.head_dim] * 2
    linear = a.qkv_weight_layout is WeightLayout.LINEAR
    axis = 0 if linear else -1  # Linear stores (out, in), Conv1D (in, out); biases are 1-D
    if a.qkv_layout is QkvLayout.PER_HEAD:
        if param == "kernel" and not linear:
            raise UnsupportedModelError("a per-head fused projection is only known as a Linear")
        rest = list(shape[1:])
        return (
            {"op": "reshape", "shape": [a.num_query_heads, 3, a.head_dim, *rest]},
            {"op": "take", "axis": 1, "index": index},
            {"op": "reshape", "shape": [sizes[index], *rest]},
        )
    if a.qkv_layout is QkvLayout.SHARDED:
        return fused_qkv.sharded_part_ops(index, shape, a.qkv_shards, a.qkv_order, axis)
    if a.qkv_layout is QkvLayout.GROUPED:
        heads = (a.num_query_heads, a.num_key_value_heads, a.head_dim)
        return fused_qkv.part_ops(a.qkv_layout, index, shape, *heads, axis)
    return ({"op": "split", "axis": axis, "sizes": sizes, "index": index},)
