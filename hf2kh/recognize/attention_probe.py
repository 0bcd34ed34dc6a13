"""Run one attention module on numbers: what it really feeds its score product and its softmax.

A CPU copy of the attention's block (random weights, `layers.materialize_block`) runs on the
arguments the block received in the stem run (`probes.run_stem`: masks, rotary tables, ALiBi
tensors, ...). Chosen child modules can have their outputs replaced by known values (a fused
q/k/v projection giving its row numbers), and the query operand of the score product can be
zeroed (the scores are then only what is added to them: mask and position bias). Captured:
the score product's query and key operands and its keyword arguments (`baddbmm`'s `alpha` and
`beta`), the mix product's value operand, and the softmax's input.

The score product is the attention's first matmul (`matmul`, `bmm`, `baddbmm`, `@`, not one
inside a child projection), the mix product its last one, as in the recorded dataflow the
recognizer reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode

from hf2kh.errors import UnsupportedModelError
from hf2kh.recognize import layers
from hf2kh.recognize.graph_view import GraphView

PRODUCTS = {"matmul", "__matmul__", "bmm", "baddbmm", "einsum"}


@dataclass
class AttentionRun:
    batch: int
    length: int
    query: torch.Tensor | None = None
    key: torch.Tensor | None = None
    value: torch.Tensor | None = None
    product: str = ""  # the score product's op
    product_kwargs: dict = field(default_factory=dict)  # its scalar keyword arguments
    logits: torch.Tensor | None = None  # the softmax input


def block_of(G: GraphView, path: str) -> str:
    """The block (a key of `G.block_inputs`) holding the module at `path`."""
    found = [b for b in G.block_inputs if path.startswith(f"{b}.")]
    if not found:
        raise UnsupportedModelError(f"{path}: no recorded block inputs to probe it with")
    return max(found, key=len)


def run(
    G: GraphView,
    attn: str,
    replace: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    zero_query: bool = False,
    kwargs_fn: Callable[[dict], dict] | None = None,
) -> AttentionRun:
    """Run the block holding the attention module `attn` (a full path); `replace` maps full
    paths of modules inside it to a function of their output giving the output to use;
    `kwargs_fn` changes the keyword arguments the block received (its position ids)."""
    block_path = block_of(G, attn)
    args, kwargs = G.block_inputs[block_path]
    if kwargs_fn is not None:
        kwargs = kwargs_fn(kwargs)
    block = layers.materialize_block(G.model, block_path)
    attention = block.get_submodule(attn[len(block_path) + 1 :])
    hidden = args[0] if args else kwargs["hidden_states"]
    found = AttentionRun(batch=hidden.shape[0], length=hidden.shape[1])
    state = {"active": False, "depth": 0, "products": []}
    handles = []

    def enter(*_):
        state["active"] = True

    def leave(*_):
        state["active"] = False

    handles.append(attention.register_forward_pre_hook(enter))
    handles.append(attention.register_forward_hook(leave))
    for name, child in attention.named_children():
        if not G.is_projection(f"{attn}.{name}"):
            continue  # only projections hide matmuls of their own (Falcon's `FalconLinear`)

        def down(*_):
            state["depth"] += 1

        def up(*_):
            state["depth"] -= 1

        handles.append(child.register_forward_pre_hook(down))
        handles.append(child.register_forward_hook(up))
    for path, fn in (replace or {}).items():
        module = block.get_submodule(path[len(block_path) + 1 :])
        handles.append(module.register_forward_hook(lambda m, a, out, fn=fn: fn(out)))

    class Capture(TorchFunctionMode):
        def __torch_function__(self, func, types, f_args=(), f_kwargs=None):
            f_kwargs = f_kwargs or {}
            name = getattr(func, "__name__", "")
            if state["active"] and state["depth"] == 0 and name in PRODUCTS:
                # operands in call order, positional or keyword (`x.baddbmm(batch1=q, ...)`)
                tensors = [a for a in (*f_args, *f_kwargs.values()) if isinstance(a, torch.Tensor)]
                if not state["products"]:
                    found.query, found.key = tensors[-2], tensors[-1]
                    found.product = name
                    found.product_kwargs = {
                        k: v for k, v in f_kwargs.items() if isinstance(v, (int, float))
                    }
                    if zero_query:
                        q = tensors[-2]
                        f_args = tuple(torch.zeros_like(a) if a is q else a for a in f_args)
                        f_kwargs = {
                            k: torch.zeros_like(a) if a is q else a for k, a in f_kwargs.items()
                        }
                else:
                    found.value = tensors[-1]
                state["products"].append(name)
            elif state["active"] and name == "softmax" and found.logits is None:
                found.logits = f_args[0].detach().clone()
            return func(*f_args, **f_kwargs)

    try:
        with torch.no_grad(), Capture():
            if args:
                block(*args, **kwargs)
            else:
                block(**kwargs)
    finally:
        for handle in handles:
            handle.remove()
    if found.query is None or found.value is None or found.logits is None:
        raise UnsupportedModelError(
            f"{attn}: running it on the CPU showed no score product, softmax and mix product"
        )
    return found
