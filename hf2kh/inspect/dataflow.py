"""Queries over a recorded layer graph: a block's steps and the dependencies between values."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.graph import Call, LayerGraph

# Functional ops that only move, cast or view data: not a computation step of a block.
PASSTHROUGH = {
    "to",
    "view",
    "reshape",
    "contiguous",
    "transpose",
    "permute",
    "expand",
    "unsqueeze",
    "squeeze",
    "float",
    "type_as",
    "clone",
    "detach",
    "__getitem__",
    "flatten",
    "chunk",
    "split",
    "dropout",
}


@dataclass(frozen=True)
class Step:
    """One thing a block does at its own level: call a child module or a torch function."""

    call: Call
    name: str  # child module name relative to the block ("self_attn") or a function ("add")

    @property
    def is_module(self) -> bool:
        return self.call.kind == "module"


def first_call(graph: LayerGraph, module_path: str) -> Call:
    calls = graph.module(module_path).calls
    if not calls:
        raise UnsupportedModelError(
            f"{module_path} was not called in the recorded forward, so what it computes is not "
            "known"
        )
    return graph.calls[calls[0]]


def calls_within(graph: LayerGraph, path: str) -> list[Call]:
    """Every call made while module `path` ran (its first recorded call), nested ones included."""
    head = first_call(graph, path)
    prefix = f"{path}."
    found = []
    for call in graph.calls[head.index + 1 :]:
        if not (call.scope == path or call.scope.startswith(prefix)):
            break
        found.append(call)
    return found


def block_steps(
    graph: LayerGraph, block_path: str, include_passthrough: bool = False
) -> list[Step]:
    """The calls a block makes at its own scope, in order (its first recorded call)."""
    prefix = f"{block_path}."
    steps = []
    for call in calls_within(graph, block_path):
        if call.scope != block_path:
            continue
        if call.kind == "module":
            steps.append(Step(call, call.target[len(prefix) :]))
        elif include_passthrough or call.target not in PASSTHROUGH:
            steps.append(Step(call, call.target))
    return steps


def producers(graph: LayerGraph) -> dict[int, int]:
    """Value id -> index of the call that produced it (functions and modules)."""
    made: dict[int, int] = {}
    for v in graph.values:
        if v.source.startswith("call:"):
            made[v.id] = int(v.source[5:])
    return made


def ancestors(graph: LayerGraph, value_id: int) -> set[int]:
    """Indices of every call whose output `value_id` (transitively) derives from."""
    made = producers(graph)

    @cache
    def walk(vid: int) -> frozenset[int]:
        seen: set[int] = set()
        stack = [vid]
        while stack:
            v = stack.pop()
            call_index = made.get(v)
            if call_index is None or call_index in seen:
                continue
            seen.add(call_index)
            stack.extend(graph.calls[call_index].inputs)
        return frozenset(seen)

    return set(walk(value_id))


def derives_from(graph: LayerGraph, value_id: int, source_value: int) -> bool:
    """True when `value_id` is `source_value` or is computed from it."""
    if value_id == source_value:
        return True
    made = producers(graph)
    if source_value not in made:
        # an input/param/external value: search the values reachable backwards
        stack, seen = [value_id], set()
        while stack:
            v = stack.pop()
            if v == source_value:
                return True
            if v in seen or v not in made:
                continue
            seen.add(v)
            stack.extend(graph.calls[made[v]].inputs)
        return False
    return made[source_value] in ancestors(graph, value_id)
