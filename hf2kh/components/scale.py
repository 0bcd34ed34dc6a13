"""Constant scales: a value times or over a number (Granite's residual multiplier on each branch
and its logits divided by `logits_scaling`, Cohere's logit scale).

Recognized from the recorded dataflow: a `mul`/`div` of one tensor by one recorded constant; a
numeric probe runs the recorded op on a ramp and checks it is `x * factor`. In a block it is a
`Scale` step (`out = value * <name>`, the factor a constructor argument of the block); on the
logits it is the head's `logit_scale`, a constructor argument of the backbone.
"""

from __future__ import annotations

import torch

from hf2kh.components.base import Arg
from hf2kh.components.softcap import DIVS, MULS, constant
from hf2kh.inspect.graph import Call
from hf2kh.recognize import probes


def factor(where: str, call: Call) -> float | None:
    """The factor `call` multiplies its one tensor by (a division as its inverse), checked on
    numbers; None when `call` is not a constant scale."""
    value = constant(call)
    if value is None or value == 0.0:
        return None
    found = value if call.target in MULS else 1.0 / value
    x = torch.linspace(-50.0, 50.0, 101)
    op = torch.mul if call.target in MULS else torch.div
    reference = {"scale": lambda: x * found}
    probes.pick(f"{where}: `{call.target}` by {value:g}", op(x, value), reference)
    return found


def is_scale(call: Call) -> bool:
    return call.kind == "function" and call.target in MULS | DIVS and constant(call) is not None


def arg_name(value: str) -> str:
    """The block argument scaling the value named `value` (`attention_output_scale`)."""
    return f"{value}_output_scale" if value in ("attention", "feedforward") else f"{value}_scale"


def args(name: str, value: str, factor: float) -> list[Arg]:
    return [Arg(name, factor, f"float. Multiplies `{value}` in the block's `call()`.")]


def logit_args(factor: float) -> list[Arg]:
    return [Arg("logit_scale", factor, "float. Multiplies the vocabulary logits.")]
