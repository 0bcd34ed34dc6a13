"""What every component module provides, and the small types they share.

A component module (norm, attention, mlp) owns three things for its kind: `recognize` (from the
layer graph, by shapes, dataflow and numeric probes), its emitter (`build_code` / `call_code` and
the constructor arguments it reads, `args`), and its weight rows (`weight_rows`). Keras layer and
variable names are defined there once; the generated code and the weight table both use them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.dataflow import PASSTHROUGH, first_call


@dataclass(frozen=True)
class Arg:
    """A constructor argument of the generated block and backbone (saved in `get_config()`)."""

    name: str
    value: Any
    doc: str


def merge_args(groups: list[list[Arg]]) -> list[Arg]:
    """Arguments of several components, each once; one name with two values is a bug to report."""
    merged: dict[str, Arg] = {}
    for group in groups:
        for arg in group:
            known = merged.setdefault(arg.name, arg)
            if known.value != arg.value:
                raise UnsupportedModelError(
                    f"components disagree on {arg.name} ({known.value!r} vs {arg.value!r})"
                )
    return list(merged.values())


def explain_ops(where: str, calls, allowed: set[str]) -> None:
    """Stop the port when `calls` hold an op that no recognized component explains."""
    for call in calls:
        if call.kind == "function" and call.target not in allowed:
            raise UnsupportedModelError(
                f"op `{call.target}` in {call.scope or where} is not explained by any recognized "
                "component; porting without it would compute something else"
            )


# The ops that add two tensors (a residual add, possibly in place).
ADDS = {"add", "__add__", "add_", "__iadd__", "__radd__"}


def residual_inside(G, module: str, call) -> tuple[int, int | None, list]:
    """A module whose output is `own + residual`, `residual` one of the values the block passed
    it (BLOOM's attention and MLP end in `dropout_add(own, residual)`): (its own output, the
    residual value, the add and the data moves after it). A module that adds no residual gives
    (its output, None, [])."""
    producers = {o: c for c in G.calls_within(module) for o in c.outputs}
    value, tail = call.outputs[0], []
    while (made := producers.get(value)) is not None and made.kind == "function":
        if made.target in PASSTHROUGH and made.inputs:
            tail.append(made)
            value = made.inputs[0]
            continue
        if made.target in ADDS and len(made.inputs) == 2:
            inside = [v for v in made.inputs if v in producers]
            outside = [v for v in made.inputs if v not in producers and v in call.inputs]
            if len(inside) == 1 and len(outside) == 1:
                return inside[0], outside[0], [*tail, made]
        break
    return call.outputs[0], None, []


def post_norm_inside(G, module: str, call) -> tuple[str, int] | None:
    """A module ending in `norm(own + residual)` (BERT's attention, whose `output` child adds the
    residual and normalizes): (the norm's path, the value it normalizes). None when the module's
    output (only moved) is not a norm's."""
    producers: dict[int, object] = {}
    for c in G.calls_within(module):
        for o in c.outputs:
            # the innermost module giving the value (the norm, not the container holding it,
            # nor the op inside the norm that computed it)
            if o not in producers or c.kind == "module":
                producers[o] = c
    value = call.outputs[0]
    while (made := producers.get(value)) is not None and made.kind == "function":
        if made.target not in PASSTHROUGH or not made.inputs:
            return None
        value = made.inputs[0]
    if made is None or not G.is_norm(made.target):
        return None
    return made.target, made.inputs[0]


def pre_norm_inside(G, module: str, call) -> tuple[str, int] | None:
    """A module that first normalizes its input and computes everything but a residual from that
    (a pre-norm encoder's attention, `output(self(norm(x)), x)`: RoBERTa-PreLayerNorm,
    XLM-RoBERTa-XL, Megatron-BERT): (the norm's path, its output). None otherwise."""
    calls = G.calls_within(module)
    producers = {o: c for c in calls for o in c.outputs}

    def moved_from(value: int, source: int) -> bool:
        while value != source:
            made = producers.get(value)
            if made is None or made.kind != "function" or made.target not in PASSTHROUGH:
                return False
            value = made.inputs[0]
        return True

    norms = [
        c
        for c in calls
        if c.kind == "module" and G.is_norm(c.target) and moved_from(c.inputs[0], call.inputs[0])
    ]
    if len(norms) != 1:
        return None
    normed = norms[0].outputs[0]
    projections = [c for c in calls if c.kind == "module" and G.is_projection(c.target)]
    if not projections or not all(G.derives(c.inputs[0], normed) for c in projections):
        return None
    return norms[0].target, normed


def before_post_norm(G, module: str, call):
    """`call` (of `module`) as if it returned what its inner post-norm normalizes."""
    inside = post_norm_inside(G, module, call)
    return call if inside is None else dataclasses.replace(call, outputs=[inside[1]])


def check_output_is(G, module: str, projection: str, residual_ok: bool = False) -> None:
    """The module's output must be its output projection's, only moved; with `residual_ok`,
    plus a residual the block passed it (`residual_inside`: the block's steps then hold that add),
    possibly normalized after it (`post_norm_inside`: and that norm).
    Anything else is computed by no component."""
    value, made = G.out(module), G.out(projection)
    if residual_ok:
        call = before_post_norm(G, module, first_call(G.g, module))
        value, _, _ = residual_inside(G, module, call)
    producers = {o: c for c in G.calls_within(module) for o in c.outputs}
    while value != made:
        call = producers.get(value)
        if call is None or call.kind != "function" or call.target not in PASSTHROUGH:
            what = f"`{call.target}`" if call is not None else "a value from outside"
            raise UnsupportedModelError(
                f"{module}: its output is not its output projection {projection}'s "
                f"({what} after it); porting without that would compute something else"
            )
        value = call.inputs[0]
