"""A score scale the attention computes at run time from constants (DeBERTa's
`key / sqrt(tensor(head_dim) * scale_factor)`): its value is not in the recorded graph (the
forward ran on the meta device), so it is measured on numbers.

Recognized from the dataflow: a `mul`/`div` on the query or key path into the score product
whose other operand is a scalar made only of constant ops (`tensor`, `mul`, `sqrt`, ...).
Measured: the attention runs on the CPU (`attention_probe.run`); its softmax input must be its
own query and key projections' product times one number, the scale.
"""

from __future__ import annotations

import torch

from hf2kh.components.softcap import DIVS, MULS
from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.dataflow import PASSTHROUGH
from hf2kh.recognize import attention_probe
from hf2kh.recognize.graph_view import GraphView

# What a scalar made of constants may be computed with.
SCALAR_OPS = {"tensor", "mul", "sqrt", "div", "to", "float", "type_as"}


def find(G: GraphView, own, scores) -> list:
    """The calls of run-time scales on the operands of the score product `scores` (each
    `mul`/`div` and the scalar ops computing its factor); [] when there are none."""
    made = {o: c for c in own for o in c.outputs}

    def scalar_chain(value: int) -> list | None:
        """The constant ops making the 0-d `value`, or None if it reads anything else."""
        if G.g.value(value).shape not in ((), []):
            return None
        chain, todo = [], [value]
        while todo:
            call = made.get(todo.pop())
            if call is None or call.target not in SCALAR_OPS:
                return None
            chain.append(call)
            todo += call.inputs
        return chain

    found = []
    operands = scores.inputs[-2:]
    for c in own:
        if c.index > scores.index or c.target not in MULS | DIVS or len(c.inputs) != 2:
            continue
        if not c.outputs or not any(G.derives(v, c.outputs[0]) for v in operands):
            continue
        chain = scalar_chain(c.inputs[1])
        if chain is not None:
            found += [c, *chain]
            found += [p for p in own if p.target in PASSTHROUGH and p.inputs[:1] == c.inputs[1:]]
    return found


def measure(G: GraphView, attn: str, query: str, key: str, heads: int, head_dim: int) -> float:
    """The scale: the attention's softmax input over its own q . k, one number for every
    score (on the CPU, with the block's recorded inputs)."""
    outputs: dict[str, torch.Tensor] = {}

    def keep(path):
        def fn(out):
            outputs.setdefault(path, out.detach().clone())
            return out

        return fn

    run = attention_probe.run(G, attn, replace={query: keep(query), key: keep(key)})

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], heads, head_dim).permute(0, 2, 1, 3)

    raw = split(outputs[query]) @ split(outputs[key]).transpose(-1, -2)
    logits = run.logits.reshape(raw.shape)
    scale = float((logits * raw).sum() / (raw * raw).sum())
    if not torch.allclose(logits, raw * scale, rtol=1e-4, atol=1e-4 * float(logits.abs().max())):
        raise UnsupportedModelError(
            f"{attn}: its scores are not its queries times its keys times one computed scale"
        )
    return scale
