"""Which of the stem's extra embedding tables holds positions and which token types (segments).

Besides the token embedding, a stem may look up tables of the hidden width with indices that do
not come from the token ids: BERT adds learned positions and token types. They are told apart on
numbers, in the CPU stem run (`probes.run_stem`, called without token types): the position table
is read at consecutive rows (from some offset), or, when its index is computed from the token
ids (a `ne` with the pad id and a `cumsum` in the dataflow: RoBERTa), at
`pad + cumsum(ids != pad)` rows; the token-type table at one row for every token (type 0, the
default when none are given).
"""

from __future__ import annotations

import torch

from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.dataflow import first_call


def _used_rows(captured: dict, path: str) -> torch.Tensor:
    out = captured[f"table:{path}"]
    return out.reshape(-1, out.shape[-2], out.shape[-1])[0]


def position_offset(table: torch.Tensor, used: torch.Tensor) -> int | None:
    """The row of position 0 when `used` (positions, width) are consecutive rows of `table`."""
    for offset in range(table.shape[0] - used.shape[0] + 1):
        if torch.equal(table[offset : offset + used.shape[0]], used):
            return offset
    return None


def _one_row(table: torch.Tensor, used: torch.Tensor) -> bool:
    return any(bool((used == row).all()) for row in table)


def lookup_index(G, path: str) -> int | None:
    """The value the table at `path` is indexed with: the other input of the first call that
    reads the table's weight (`embedding(index, weight)`, `weight[index]`); None when that call
    takes no tensor index (a slice of constant bounds). BART's positional module receives
    `input_ids` for their shape only and looks up `arange(length) + 2`; Whisper's indexes its
    weight with position ids. Without such a call, the module's first input."""
    weight = next((v.id for v in G.g.values if v.source == f"param:{path}.weight"), None)
    for call in G.calls_within(path):
        if call.kind == "function" and weight is not None and weight in call.inputs:
            others = [v for v in call.inputs if v != weight]
            return others[0] if others else None
    return first_call(G.g, path).inputs[0]


def padding_id(G, path: str, input_ids: int) -> int | None:
    """The pad id when the table at `path` is read at positions counted from the token ids
    (RoBERTa's `padding_idx + cumsum(input_ids != padding_idx)`): the recorded dataflow from
    `input_ids` to the table's index holds a `ne` with that constant and a `cumsum`."""
    index = lookup_index(G, path)
    if index is None:
        return None
    on_path = [
        c
        for c in G.g.calls
        if c.kind == "function"
        and c.outputs
        and G.derives(index, c.outputs[0])
        and G.derives(c.outputs[0], input_ids)
    ]
    pads = {
        int(c.constants[0])
        for c in on_path
        if c.target in ("ne", "__ne__") and input_ids in c.inputs and c.constants
    }
    if len(pads) != 1 or not any(c.target == "cumsum" for c in on_path):
        return None
    return pads.pop()


def counted_positions(ids: torch.Tensor, pad: int) -> torch.Tensor:
    """`pad + cumsum(ids != pad)` on real tokens, `pad` on padding (HF's
    `create_position_ids_from_input_ids`)."""
    real = (ids != pad).long()
    return pad + torch.cumsum(real, dim=1) * real


def classify(
    captured: dict, tables: list[str], pads: dict[str, int | None]
) -> tuple[str | None, str | None, int | None]:
    """(the position table, the token-type table, the pad id when positions are counted from
    the token ids) among `tables`; `pads`: each table's `padding_id`."""
    positions, types, counted = [], [], None
    for path in tables:
        table, used = captured[f"rows:{path}"], _used_rows(captured, path)
        pad = pads.get(path)
        counted_rows = counted_positions(captured["ids"], pad)[0] if pad is not None else None
        if (
            counted_rows is not None
            and int(counted_rows.max()) < table.shape[0]
            and torch.equal(table[counted_rows], used)
        ):
            positions.append(path)
            counted = pad
        elif position_offset(table, used) is not None:
            positions.append(path)
        elif _one_row(table, used):
            types.append(path)
        else:
            raise UnsupportedModelError(
                f"{path}: an embedding table read neither at consecutive rows (positions) nor "
                "at one row for every token (token types)"
            )
    if len(positions) > 1 or len(types) > 1:
        raise UnsupportedModelError(
            f"more than one table of positions {positions} or token types {types}"
        )
    return (positions or [None])[0], (types or [None])[0], counted


# The bases tried for fixed sinusoidal positions (the Transformer's).
SINUSOID_BASES = (10000.0,)


def sinusoid(length: int, dim: int, base: float) -> torch.Tensor:
    """(length, dim): sin(p * r_k) for k < dim / 2, then cos(p * r_k), r_k = base ** (-2k / dim)."""
    rates = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * rates[None, :]
    return torch.cat([angles.sin(), angles.cos()], -1).float()


def sinusoid_base(captured: dict) -> float | None:
    """The base of fixed sinusoids the model adds to its (scaled) token embeddings, when the
    first block's input is `s * embeddings + sinusoid(base)` on numbers (CTRL computes them into
    a buffer: no table among the weights); None when it is not."""
    block_in, emb = captured["block"], captured["embed"]
    if any(k in captured for k in ("projected", "normed")) or block_in.shape[-1] % 2:
        return None
    for base in SINUSOID_BASES:
        rest = block_in - sinusoid(block_in.shape[-2], block_in.shape[-1], base)
        ratio = float((rest * emb).sum() / (emb * emb).sum())
        if torch.allclose(rest, emb * ratio, rtol=1e-5, atol=1e-5):
            return base
    return None
