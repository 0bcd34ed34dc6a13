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
