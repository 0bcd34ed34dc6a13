"""Which of the stem's extra embedding tables holds positions and which token types (segments).

Besides the token embedding, a stem may look up tables of the hidden width with indices that do
not come from the token ids: BERT adds learned positions and token types. They are told apart on
numbers, in the CPU stem run (`probes.run_stem`, called without token types): the position table
is read at consecutive rows (from some offset), the token-type table at one row for every token
(type 0, the default when none are given).
"""

from __future__ import annotations

import torch

from hf2kh.errors import UnsupportedModelError


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


def classify(captured: dict, tables: list[str]) -> tuple[str | None, str | None]:
    """(the position table, the token-type table) among `tables`, each None when absent."""
    positions, types = [], []
    for path in tables:
        table, used = captured[f"rows:{path}"], _used_rows(captured, path)
        if position_offset(table, used) is not None:
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
    return (positions or [None])[0], (types or [None])[0]
