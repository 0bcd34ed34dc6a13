"""Softcapping: `cap * tanh(x / cap)`, on attention scores (Gemma 2) or on the final logits.

Recognized from the recorded dataflow: a `tanh` on the path being read, divided by a constant
just before it and multiplied by the same constant just after; a numeric probe then runs those
three recorded ops on a ramp and checks they compute `cap * tanh(x / cap)`. Emitted as one
`keras.ops` expression with the cap as a constructor argument.
"""

from __future__ import annotations

import torch

from hf2kh.components.base import Arg
from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.graph import Call
from hf2kh.recognize import probes

# A tensor times or over a number, in place or not (Falcon's `scores /= math.sqrt(head_dim)`).
MULS = {"mul", "__mul__", "__rmul__", "mul_", "__imul__"}
DIVS = {"div", "__truediv__", "div_", "__itruediv__"}


def constant(call: Call) -> float | None:
    """The one numeric constant of a single-tensor `mul`/`div`, else None."""
    if call.target not in MULS | DIVS or len(call.inputs) != 1:
        return None
    if len(call.constants) != 1:
        return None
    return float(call.constants[0])


def find(where: str, chain: list[Call]) -> tuple[float | None, list[Call]]:
    """(cap, the calls it explains) of a softcap in `chain`, the calls along one value path in
    order; (None, []) when the chain has no `tanh`."""
    at = [k for k, c in enumerate(chain) if c.target == "tanh"]
    if not at:
        return None, []
    k = at[0]
    if len(at) > 1 or k == 0 or k + 1 >= len(chain):
        raise UnsupportedModelError(
            f"{where}: a `tanh` that is not a softcap (cap * tanh(x / cap))"
        )
    before, tanh, after = chain[k - 1], chain[k], chain[k + 1]
    inner, outer = constant(before), constant(after)
    if inner is None or outer is None or after.target not in MULS:
        raise UnsupportedModelError(
            f"{where}: a `tanh` that is not a softcap (cap * tanh(x / cap))"
        )
    inner = 1.0 / inner if before.target in MULS else inner
    x = torch.linspace(-200.0, 200.0, 401)
    observed = _run(after, _run(tanh, _run(before, x)))
    probes.pick(
        f"{where}: the ops around `tanh`",
        observed,
        {"softcap": lambda: outer * torch.tanh(x / inner)},
    )
    if abs(inner - outer) > 1e-6 * abs(outer):
        raise UnsupportedModelError(
            f"{where}: `tanh` divided by {inner:g} and multiplied by {outer:g} is not a softcap"
        )
    return outer, [before, tanh, after]


def _run(call: Call, x: torch.Tensor) -> torch.Tensor:
    name = "mul" if call.target in MULS else "div" if call.target in DIVS else call.target
    fn = getattr(torch, name.strip("_"))
    return fn(x, float(call.constants[0])) if call.constants else fn(x)


def args(cap: float, name: str, what: str) -> list[Arg]:
    return [Arg(name, cap, f"float. {what} become `cap * tanh(x / cap)` with this cap.")]


def expression(x: str, cap: str) -> str:
    return f"ops.tanh({x} / {cap}) * {cap}"
