"""What every component module provides, and the small types they share.

A component module (norm, attention, mlp) owns three things for its kind: `recognize` (from the
layer graph, by shapes, dataflow and numeric probes), its emitter (`build_code` / `call_code` and
the constructor arguments it reads, `args`), and its weight rows (`weight_rows`). Keras layer and
variable names are defined there once; the generated code and the weight table both use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.dataflow import PASSTHROUGH


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


def check_output_is(G, module: str, projection: str) -> None:
    """The module's output must be its output projection's, only moved (no residual added
    inside, as BLOOM's attention does): anything else is computed by no component."""
    value, made = G.out(module), G.out(projection)
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
