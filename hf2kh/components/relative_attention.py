"""Disentangled relative-position attention (DeBERTa-v2/v3): the scores add content-to-position
and position-to-content terms gathered from products with a relative-position table.

Recognized from the recorded dataflow, then confirmed on numbers:

- each `gather` on the score path picks out of a product of the queries (content-to-position)
  or the keys (position-to-content) with a projection of the table the block receives (its rows
  through the content key / query projection, or through a separate position projection);
- the relative position of query `i` and key `j` the block receives is read as numbers from the
  stem run: `i - j`, or its log buckets (`log_buckets`) for the one pair of settings among the
  config's integers that reproduces it;
- the attention then runs on the CPU (`attention_probe.run`) and its softmax input must equal a
  reference computed from its own projections' outputs with those settings and every term
  divided by `sqrt(head_dim * (1 + terms))`. What does not match stops the port naming the op.

Emitted as its own attention layer (`<name>_attention.py` from `disentangled_attention.py.jinja`)
and a relative-table layer (`<name>_relative_embedding.py`) the backbone hands every block.
"""

from __future__ import annotations

import math

import torch

from hf2kh.components.base import Arg
from hf2kh.errors import UnsupportedModelError
from hf2kh.generate.weight_map import WeightRow
from hf2kh.inspect.dataflow import PASSTHROUGH, first_call
from hf2kh.ir import Attention, RelativePositions
from hf2kh.recognize import attention_probe
from hf2kh.recognize.graph_view import GraphView

# What the terms' code calls besides the attention's own ops (checked by the numeric probe).
OPS = {"gather", "clamp", "sqrt", "div", "repeat", "neg", "add_", "tensor", "mul", "sub"}
# ... and the padding mask applied with `masked_fill` on the inverted boolean mask.
MASK_OPS = {"masked_fill", "bool", "__invert__"}

# Keras layer names of the separate position projections, by role.
LAYERS = {"position_key": "position_key", "position_query": "position_query"}


def log_buckets(relative: torch.Tensor, buckets: int, max_distance: int) -> torch.Tensor:
    """DeBERTa's log buckets of relative positions: `d` itself while `|d| < buckets // 2`, beyond
    that `sign(d) * (mid + ceil(log(|d| / mid) / log((max_distance - 1) / mid) * (mid - 1)))`."""
    mid = buckets // 2
    sign = torch.sign(relative)
    inside = (relative < mid) & (relative > -mid)
    distance = torch.where(inside, torch.full_like(relative, mid - 1), relative.abs())
    scaled = torch.log(distance / mid) / torch.log(torch.tensor((max_distance - 1) / mid))
    log_position = torch.ceil(scaled * (mid - 1)) + mid
    return torch.where(distance <= mid, relative.to(log_position.dtype), log_position * sign)


def _offsets(length: int) -> torch.Tensor:
    ids = torch.arange(length)
    return ids[:, None] - ids[None, :]


def _tensors(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in _tensors(v)]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in _tensors(v)]
    return []


def recognize(
    G: GraphView, attn: str, own, query: str, key: str, head_dim: int, heads: int, evidence
) -> tuple[RelativePositions, dict[str, str], float]:
    """(the terms, the separate position projections by role, the score scale) of the attention
    module `attn` whose scores add gathered terms; `query`/`key`: its content projections."""
    softmax = next(c for c in own if c.target == "softmax")
    gathers = [
        c
        for c in own
        if c.target == "gather" and c.outputs and G.derives(softmax.inputs[0], c.outputs[0])
    ]
    table = _table_value(G, attn)
    if table is None:
        raise _refused(gathers[0], "no relative-position table is handed to the attention")
    producers = {o: c for c in G.calls_within(attn) for o in c.outputs}
    on_table = [
        c
        for c in G.calls_within(attn)
        if c.kind == "module" and G.is_projection(c.target) and G.derives(c.inputs[0], table)
    ]
    position_of: dict[str, str] = {}  # "key" / "query" -> the projection of the table rows
    rows = G.g.value(table).shape[0]
    for gather in gathers:
        product = producers.get(gather.inputs[0])
        while product is not None and product.target in PASSTHROUGH:
            product = producers.get(product.inputs[0])
        if product is None or product.target not in ("bmm", "matmul") or len(product.inputs) != 2:
            raise _refused(gather, "it gathers from something other than a product")
        content, position = product.inputs
        projected = [c.target for c in on_table if G.derives(position, c.outputs[0])]
        if len(projected) != 1 or G.g.value(product.outputs[0]).shape[-1] != rows:
            raise _refused(gather, "its product does not read one projection of the table rows")
        if G.derives(content, G.out(query)) and not G.derives(content, G.out(key)):
            role = "key"  # content-to-position: queries times the positions' keys
        elif G.derives(content, G.out(key)) and not G.derives(content, G.out(query)):
            role = "query"  # position-to-content: keys times the positions' queries
        else:
            raise _refused(gather, "its product reads neither the queries nor the keys alone")
        if role in position_of:
            raise _refused(gather, f"a second term with the positions' {role}s")
        position_of[role] = projected[0]
    if rows % 2:
        raise _refused(gathers[0], f"the relative table has an odd number of rows ({rows})")
    span = rows // 2
    buckets, max_distance = _buckets(G, attn, gathers[0])
    shared = all(p == {"key": key, "query": query}[r] for r, p in position_of.items())
    if not shared and any(p in (key, query) for p in position_of.values()):
        raise _refused(gathers[0], "one term shares the content projections and the other not")
    separate = {} if shared else {f"position_{r}": p for r, p in position_of.items()}
    bias = {r: "bias" in G.own_params(p) for r, p in separate.items()}
    spec = RelativePositions(
        span=span,
        buckets=buckets,
        max_distance=max_distance,
        content_to_position="key" in position_of,
        position_to_content="query" in position_of,
        shared_projections=shared,
        position_key_bias=bias.get("position_key", True),
        position_query_bias=bias.get("position_query", True),
    )
    scale = 1.0 / math.sqrt(head_dim * (1 + len(position_of)))
    _probe(G, attn, spec, query, key, position_of, heads, head_dim, scale, gathers[0])
    terms = " and ".join(
        name
        for name, present in (
            ("content-to-position", spec.content_to_position),
            ("position-to-content", spec.position_to_content),
        )
        if present
    )
    positions = (
        f"log buckets ({buckets} buckets up to {max_distance})" if buckets else "i - j unbucketed"
    )
    projections = (
        "the content key/query projections" if shared else ", ".join(sorted(separate.values()))
    )
    evidence.append(
        f"{attn}: disentangled relative-position attention: {terms} terms gathered from the "
        f"{rows}-row relative table through {projections}, relative positions as {positions}, "
        f"every term scaled by {scale:.6g} (dataflow; probed on numbers)"
    )
    return spec, separate, scale


def _refused(gather, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"op `gather` in {gather.scope}: {why} (relative-position attention this port does not "
        "compute); porting without it would compute something else"
    )


def _table_value(G: GraphView, attn: str) -> int | None:
    """The relative table the attention receives: its one 2-D float input."""
    found = [
        v
        for v in first_call(G.g, attn).inputs
        if len(G.g.value(v).shape) == 2 and G.g.value(v).dtype.startswith("float")
    ]
    return found[0] if len(found) == 1 else None


def _recorded_positions(G: GraphView, attn: str) -> torch.Tensor | None:
    """The relative positions the block received in the stem run: its integer (length,
    length) input holding negative values (`i - j`, possibly bucketed)."""
    args, kwargs = G.block_inputs[attention_probe.block_of(G, attn)]
    for t in _tensors((args, kwargs)):
        square = t.ndim >= 2 and t.shape[-1] == t.shape[-2]
        if square and not t.is_floating_point() and t.dtype != torch.bool and (t < 0).any():
            return t.reshape(-1, t.shape[-2], t.shape[-1])[0]
    return None


def _buckets(G: GraphView, attn: str, gather) -> tuple[int, int]:
    """(buckets, max distance) reproducing the recorded relative positions; (0, 0) for `i - j`."""
    recorded = _recorded_positions(G, attn)
    if recorded is None:
        raise _refused(gather, "the block receives no relative positions")
    offsets = _offsets(recorded.shape[-1])
    if torch.equal(recorded, offsets):
        return 0, 0
    numbers = sorted(
        {v for v in vars(G.model.config).values() if type(v) is int and v > 2}  # noqa: E721
    )
    for buckets in numbers:
        for max_distance in numbers:
            if buckets % 2 or max_distance <= buckets // 2:
                continue
            if torch.equal(log_buckets(offsets, buckets, max_distance).long(), recorded.long()):
                return buckets, max_distance
    raise _refused(gather, "its relative positions are neither i - j nor log buckets of it")


def _probe(G, attn, spec, query, key, position_of, heads, head_dim, scale, gather) -> None:
    """Run the attention on the CPU; its softmax input must be the reference scores."""
    outputs: dict[str, list[torch.Tensor]] = {}

    def keep(path):
        def fn(out):
            outputs.setdefault(path, []).append(out.detach().clone())
            return out

        return fn

    paths = {query, key, *position_of.values()}
    run = attention_probe.run(G, attn, replace={p: keep(p) for p in paths})
    batch, length = run.batch, run.length

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], heads, head_dim).permute(0, 2, 1, 3)

    def content(path):
        return next(t for t in outputs[path] if t.shape[:2] == (batch, length))

    def rows(path):
        return next(t for t in outputs[path] if t.shape[1] == 2 * spec.span and t.shape[0] == 1)

    q, k = split(content(query)), split(content(key))
    scores = q @ k.transpose(-1, -2) * scale
    offsets = _offsets(length)
    relative = log_buckets(offsets, spec.buckets, spec.max_distance) if spec.buckets else offsets
    relative = relative.long()
    index = torch.clamp(relative + spec.span, 0, 2 * spec.span - 1).expand(batch, heads, -1, -1)
    if spec.content_to_position:
        terms = q @ split(rows(position_of["key"])).transpose(-1, -2)
        scores = scores + torch.gather(terms, -1, index) * scale
    if spec.position_to_content:
        back = torch.clamp(-relative + spec.span, 0, 2 * spec.span - 1).expand(batch, heads, -1, -1)
        terms = k @ split(rows(position_of["query"])).transpose(-1, -2)
        scores = scores + torch.gather(terms, -1, back).transpose(-1, -2) * scale
    logits = run.logits.reshape(scores.shape)
    if not torch.allclose(logits, scores, rtol=1e-4, atol=1e-4 * float(scores.abs().max())):
        raise _refused(
            gather,
            "its scores match no reference of content-to-position and position-to-content terms",
        )


# -- emitted code ----------------------------------------------------------------------------------


def args(r: RelativePositions) -> list[Arg]:
    """The attention's constructor arguments (which terms it adds, and whether the table goes
    through separate projections, are its code: only what this model computes is emitted)."""
    found = [Arg("relative_span", r.span, "int. Half the rows of the relative-position table.")]
    if r.buckets:
        found += [
            Arg(
                "position_buckets",
                r.buckets,
                "int. Relative positions from `position_buckets // 2` on are log-bucketed.",
            ),
            Arg(
                "max_relative_positions",
                r.max_distance,
                "int. The distance at which the log buckets reach the last one.",
            ),
        ]
    return found


# -- weight rows ---------------------------------------------------------------------------------


def weight_rows(a: Attention, weights: dict[str, str], hf, keras, shapes, hidden: int):
    """Rows of the separate position projections (none when they share the content ones)."""
    rows = []
    r = a.relative
    for role, biased in (
        ("position_key", r.position_key_bias),
        ("position_query", r.position_query_bias),
    ):
        if role not in weights:
            continue
        name = hf(weights[role])
        shape = tuple(shapes[f"{name}.weight"])
        kernel = (hidden, a.num_query_heads, a.head_dim)
        rows.append(
            WeightRow(
                f"{name}.weight",
                shape,
                f"{keras}/{LAYERS[role]}/kernel",
                kernel,
                ({"op": "transpose"}, {"op": "reshape", "shape": list(kernel)}),
            )
        )
        if biased:
            bias = (a.num_query_heads, a.head_dim)
            rows.append(
                WeightRow(
                    f"{name}.bias",
                    tuple(shapes[f"{name}.bias"]),
                    f"{keras}/{LAYERS[role]}/bias",
                    bias,
                    ({"op": "reshape", "shape": list(bias)},),
                )
            )
    return rows


# -- the shared table ----------------------------------------------------------------------------


def table_source(G: GraphView, block_call) -> tuple[str, str | None]:
    """(the table module, the norm applied to it or None) of the relative table the blocks
    receive: read from the dataflow, the table's weight read directly or through one norm."""
    found = [
        v
        for v in block_call.inputs[1:]
        if len(G.g.value(v).shape) == 2 and G.g.value(v).dtype.startswith("float")
    ]
    if len(found) != 1:
        raise UnsupportedModelError(
            f"{block_call.target}: expected one relative-position table among its inputs"
        )
    value, norm = found[0], None
    source = G.g.value(value).source
    if source.startswith("call:"):
        # the module giving the value (a norm), not the op inside it that computed it
        made = next(
            (c for c in G.g.calls if c.kind == "module" and value in c.outputs),
            G.g.calls[int(source[5:])],
        )
        if made.kind != "module" or not G.is_norm(made.target):
            raise UnsupportedModelError(
                f"the relative-position table the blocks receive is computed by `{made.target}`, "
                "not looked up or normalized: not supported yet"
            )
        norm = made.target
        source = G.g.value(made.inputs[0]).source
    if not source.startswith("param:") or not source.endswith(".weight"):
        raise UnsupportedModelError(
            "the relative-position table the blocks receive is not a table of the checkpoint"
        )
    return source[len("param:") : -len(".weight")], norm
