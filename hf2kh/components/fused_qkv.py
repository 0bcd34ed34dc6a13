"""Which rows of a fused q/k/v projection become which query, key and value head.

Used when the dataflow shows no split of the fused output into three parts, only a view into
heads and index/slice ops whose offsets the recording does not keep (BLOOM's
`view(..., heads, 3, head_dim)[..., i, :]`, Falcon's `view(..., heads + 2, head_dim)[..., :-2, :]`
and `view(..., groups, q_per_group + 2, head_dim)`). Recognized on numbers: the attention runs on
the arguments its block received (`attention_probe`) with the fused projection's output replaced
by its row numbers (1, 2, ... at every position), so the query, key and value operands of its
score and mix products hold, at the first position (where rope is the identity), the row each
of their features comes from. The head counts follow from the sizes (rows = (heads + 2 * kv heads)
* head_dim); the layout is the candidate whose row numbers those are, up to a constant factor (a
scale applied to q or k):

- BLOCKED: `[q | k | v]`;
- PER_HEAD: `[q_h | k_h | v_h]` for each head h (BLOOM, GPT-NeoX, Falcon without multi-query);
- GROUPED: `[q_g1 .. q_gQ | k_g | v_g]` for each key/value head g and its Q query heads (Falcon's
  new decoder architecture);
- SHARDED: S shards, each the q, k and v blocks of its heads in some order (CodeGen's
  model-parallel `[q_s | v_s | k_s]` for each of 4 shards s), tried for every shard count
  dividing the heads and every order, after the others.

A key or value operand with one head per query head (Falcon repeats k/v up to the query heads
before the product) must repeat key/value head `h // Q` for query head h, as the generated
attention does. Weight rows take each part with `reshape` + `split` (`part_ops`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from hf2kh.errors import UnsupportedModelError
from hf2kh.ir import QkvLayout
from hf2kh.recognize import attention_probe
from hf2kh.recognize.graph_view import GraphView


@dataclass(frozen=True)
class Fused:
    layout: QkvLayout
    widths: list[int]  # of q, k, v
    shards: int = 1  # SHARDED only
    order: str = "qkv"  # SHARDED only


def recognize(G: GraphView, attn: str, fused: str, scores) -> Fused:
    """The row layout and q/k/v widths of the fused projection `fused` of attention `attn`,
    whose recorded score product is the call `scores`."""
    rows = G.g.value(G.out(fused)).shape[-1]

    def numbered(out: torch.Tensor) -> torch.Tensor:
        return torch.arange(1, rows + 1, dtype=out.dtype).expand(out.shape).clone()

    run = attention_probe.run(G, attn, replace={fused: numbered})
    head_dim = run.query.shape[-1]
    query = _first_position(run.query, run.batch, -2)
    recorded = (G.g.value(scores.inputs[-1]).shape, G.g.value(scores.inputs[-2]).shape[-2])
    key = _first_position(run.key, run.batch, _key_position_axis(run, recorded))
    value = _first_position(run.value, run.batch, -2)
    heads = query.shape[0]
    kv_heads, odd = divmod(rows // head_dim - heads, 2)
    if odd or kv_heads < 1 or heads % kv_heads or rows % head_dim:
        raise UnsupportedModelError(
            f"{attn}: {rows} fused q/k/v rows are not {heads} query heads and as many key as "
            f"value heads of {head_dim}"
        )
    candidates = [(QkvLayout.BLOCKED, 1, "qkv")]
    if kv_heads == heads:
        candidates.append((QkvLayout.PER_HEAD, heads, "qkv"))
        candidates += [
            (QkvLayout.SHARDED, shards, "".join(order))
            for shards in range(1, heads + 1)
            if heads % shards == 0
            for order in itertools.permutations("qkv")
            if (shards, "".join(order)) not in ((1, "qkv"), (heads, "qkv"))
        ]
    elif kv_heads > 1:
        candidates.append((QkvLayout.GROUPED, kv_heads, "qkv"))
    widths = [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim]
    for layout, shards, order in candidates:
        q_rows, k_rows, v_rows = _rows(layout, heads, kv_heads, head_dim, shards, order)
        if (
            _fits(query, q_rows)
            and _fits(key, _repeated(k_rows, key.shape[0], heads))
            and _fits(value, _repeated(v_rows, value.shape[0], heads))
        ):
            if layout is QkvLayout.SHARDED:
                return Fused(layout, widths, shards, order)
            return Fused(layout, widths)
    tried = sorted({c[0].value for c in candidates})
    raise UnsupportedModelError(
        f"{attn}: the rows of the fused projection {fused} reach the query, key and value heads "
        f"in an order hf2kh does not know (tried {', '.join(tried)})"
    )


def _first_position(t: torch.Tensor, batch: int, axis: int) -> torch.Tensor:
    """(heads, head_dim) of an operand at the first position of the first sequence."""
    t = t.select(axis, 0)
    return t.reshape(batch, -1, t.shape[-1])[0].float()


def _key_position_axis(run, recorded: tuple[tuple[int, ...], int]) -> int:
    """The key operand's position axis: -2, or -1 when it is already transposed for the product,
    told by its shape in the probe or else in the recording (their lengths differ, so one of them
    differs from head_dim)."""
    head_dim = run.query.shape[-1]
    for shape, length in ((tuple(run.key.shape), run.length), recorded):
        if length == head_dim:
            continue
        if shape[-1] == length and shape[-2] == head_dim:
            return -1
        if shape[-2] == length and shape[-1] == head_dim:
            return -2
    raise UnsupportedModelError("cannot tell the key operand's position axis")


def _rows(
    layout: QkvLayout, heads: int, kv_heads: int, head_dim: int, shards: int = 1, order="qkv"
):
    """Fused row numbers (from 1) of each (head, feature) of q, k and v under `layout`."""
    d = torch.arange(head_dim)
    h = torch.arange(heads)[:, None]
    g = torch.arange(kv_heads)[:, None]
    if layout is QkvLayout.SHARDED:  # kv_heads == heads
        local = heads // shards
        shard, inside = h // local, h % local
        return tuple(
            (shard * 3 + order.index(part)) * local * head_dim + inside * head_dim + d + 1
            for part in "qkv"
        )
    if layout is QkvLayout.BLOCKED:
        q = h * head_dim + d
        k = (heads + g) * head_dim + d
        v = (heads + kv_heads + g) * head_dim + d
    else:  # PER_HEAD is GROUPED with one query head per group
        per = heads // kv_heads
        q = ((h // per) * (per + 2) + h % per) * head_dim + d
        k = (g * (per + 2) + per) * head_dim + d
        v = (g * (per + 2) + per + 1) * head_dim + d
    return q + 1, k + 1, v + 1


def _repeated(rows: torch.Tensor, observed_heads: int, heads: int) -> torch.Tensor:
    """Key/value rows as the operand holds them: one per key/value head, or repeated up to one
    per query head (query head h reads key/value head h // (heads / kv heads))."""
    if observed_heads == rows.shape[0] or observed_heads != heads:
        return rows
    return rows.repeat_interleave(heads // rows.shape[0], dim=0)


def _fits(observed: torch.Tensor, rows: torch.Tensor) -> bool:
    """`observed` is `rows` times one constant (a scale applied on the way)."""
    rows = rows.float()
    if observed.shape != rows.shape:
        return False
    factor = float((observed * rows).sum() / (rows * rows).sum())
    if factor == 0.0:
        return False
    error = float((observed - factor * rows).abs().max())
    return error <= 1e-5 * abs(factor) * float(rows.max())


# -- weight rows -----------------------------------------------------------------------------------


def part_ops(
    layout: QkvLayout,
    index: int,
    shape: tuple[int, ...],
    heads: int,
    kv_heads: int,
    head_dim: int,
    rows_axis: int,
) -> tuple[dict, ...]:
    """Ops taking part `index` (q, k, v) of a GROUPED fused tensor whose rows lie on
    `rows_axis` (0 for a Linear weight (out, in) and for biases, -1 for a Conv1D weight)."""
    if layout is QkvLayout.SHARDED:
        raise ValueError("part_ops: a sharded layout's parts come from sharded_part_ops")
    if layout is not QkvLayout.GROUPED:
        raise ValueError(f"part_ops handles the grouped layout, not {layout}")
    per = heads // kv_heads
    axis = rows_axis % len(shape)
    grouped = [*shape[:axis], kv_heads, per + 2, head_dim, *shape[axis + 1 :]]
    sizes = [per, 1, 1]
    taken = [*shape[:axis], [heads, kv_heads, kv_heads][index] * head_dim, *shape[axis + 1 :]]
    return (
        {"op": "reshape", "shape": grouped},
        {"op": "split", "axis": axis + 1, "sizes": sizes, "index": index},
        {"op": "reshape", "shape": taken},
    )


def sharded_part_ops(
    index: int, shape: tuple[int, ...], shards: int, order: str, rows_axis: int
) -> tuple[dict, ...]:
    """Ops taking part `index` (q, k, v) of a SHARDED fused tensor (rows on `rows_axis`): each
    shard's rows are its three blocks in `order`."""
    axis = rows_axis % len(shape)
    rows = shape[axis]
    sharded = [*shape[:axis], shards, 3, rows // (3 * shards), *shape[axis + 1 :]]
    taken = [*shape[:axis], rows // 3, *shape[axis + 1 :]]
    return (
        {"op": "reshape", "shape": sharded},
        {"op": "take", "axis": axis + 1, "index": order.index("qkv"[index])},
        {"op": "reshape", "shape": taken},
    )
