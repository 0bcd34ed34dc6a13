"""Find repeated blocks (`layers.0..N`) and prove them identical, or say how they differ.

Two blocks are the same when they have the same submodules, parameter shapes, scalar settings
(except their own index), the same recorded calls, and read the same shared inputs (masks,
position embeddings). Blocks that differ (e.g. alternating local/global attention) are reported
as separate variants with the differences spelled out.

A model without numbered blocks may call one block module once per layer (ALBERT shares one
block among all its layers): that module, called N times in a chain (each call reads what the
previous one returned), is a shared group of N layers.
"""

from __future__ import annotations

import re
from typing import Any

from hf2kh.inspect.dataflow import PASSTHROUGH, calls_within, derives_from
from hf2kh.inspect.graph import BlockGroup, BlockVariant, LayerGraph


def _containers(graph: LayerGraph) -> dict[str, list[int]]:
    """Module paths whose children are numbered `path.0`, `path.1`, ... of one class."""
    found: dict[str, list[int]] = {}
    for node in graph.modules:
        numbered = [c for c in node.children if re.fullmatch(r"\d+", c.rpartition(".")[2])]
        if len(numbered) >= 2 and len({graph.module(c).class_name for c in numbered}) == 1:
            found[node.path] = sorted(int(c.rpartition(".")[2]) for c in numbered)
    return found


def _rel(path: str, prefix: str) -> str:
    """`path` relative to the block `prefix` ("model.layers.3."); the block itself is ""."""
    if path == prefix[:-1]:
        return ""
    return path[len(prefix) :] if path.startswith(prefix) else path


def block_signature(graph: LayerGraph, path: str, index: int) -> dict[str, Any]:
    prefix = f"{path}."
    structure = []
    attributes = {}
    for node in graph.modules:
        if node.path == path or node.path.startswith(prefix):
            rel = _rel(node.path, prefix)
            structure.append((rel, node.class_name))
            for key, value in node.attributes.items():
                if type(value) is int and value == index and ("idx" in key or "layer" in key):
                    continue  # the block's own index (layer_idx) differs by construction
                attributes[f"{rel or '<block>'}.{key}"] = value
    params = [
        (_rel(p.name, prefix), p.shape) for p in graph.parameters if p.name.startswith(prefix)
    ]
    calls = []
    shared_inputs: list[int] = []
    block_calls = graph.module(path).calls
    if block_calls:
        first = graph.calls[block_calls[0]]
        shared_inputs = first.inputs[1:]
        for call in calls_within(graph, path):
            out_shapes = [graph.value(v).shape for v in call.outputs]
            calls.append(
                (call.kind, _rel(call.target, prefix), _rel(call.scope, prefix), out_shapes)
            )
    return {
        "structure": structure,
        "params": params,
        "attributes": attributes,
        "calls": calls,
        "shared_inputs": shared_inputs,
    }


def _describe(graph: LayerGraph, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    diffs = []
    if a["structure"] != b["structure"]:
        diffs.append("different submodules")
    if a["params"] != b["params"]:
        diffs.append("different parameter shapes")
    for key in sorted(set(a["attributes"]) | set(b["attributes"])):
        va, vb = a["attributes"].get(key), b["attributes"].get(key)
        if va != vb:
            diffs.append(f"{key}: {va!r} vs {vb!r}")
    if a["calls"] != b["calls"]:
        diffs.append(f"different recorded calls ({len(a['calls'])} vs {len(b['calls'])})")
    if a["shared_inputs"] != b["shared_inputs"]:
        for va, vb in zip(a["shared_inputs"], b["shared_inputs"], strict=False):
            if va != vb:
                diffs.append(
                    "reads a different shared input: "
                    f"{graph.value(va).source} vs {graph.value(vb).source}"
                )
    return diffs


def group_blocks(graph: LayerGraph) -> list[BlockGroup]:
    groups = []
    for container, indices in _containers(graph).items():
        signatures = {i: block_signature(graph, f"{container}.{i}", i) for i in indices}
        variants: list[tuple[dict[str, Any], list[int]]] = []
        for i in indices:
            for sig, members in variants:
                if sig == signatures[i]:
                    members.append(i)
                    break
            else:
                variants.append((signatures[i], [i]))
        reference = variants[0][0]
        groups.append(
            BlockGroup(
                container=container,
                indices=indices,
                class_name=graph.module(f"{container}.{indices[0]}").class_name,
                variants=[
                    BlockVariant(members, _describe(graph, reference, sig))
                    for sig, members in variants
                ],
            )
        )
    if not groups:
        shared = shared_block(graph)
        groups = [shared] if shared else []
    return groups


def shared_block(graph: LayerGraph) -> BlockGroup | None:
    """The module called once per layer when the model has no numbered blocks: the outermost
    module with parameters called more than once, each call reading the previous call's output,
    looked through wrappers that only call it (ALBERT's layer group around its one layer)."""
    parents = {c: node.path for node in graph.modules for c in node.children}
    repeated = {
        node.path: node
        for node in graph.modules
        if node.path and len(node.calls) > 1 and node.param_names + _child_params(graph, node.path)
    }

    def outermost(path: str) -> bool:
        parent = parents.get(path)
        while parent:
            if parent in repeated:
                return False
            parent = parents.get(parent)
        return True

    candidates = [p for p in repeated if outermost(p) and _chained(graph, repeated[p].calls)]
    if not candidates:
        return None
    path = max(candidates, key=lambda p: len(repeated[p].calls))
    path = _through_wrappers(graph, path)
    node = graph.module(path)
    return BlockGroup(
        container=path,
        indices=list(range(len(node.calls))),
        class_name=node.class_name,
        variants=[BlockVariant(list(range(len(node.calls))), [])],
        shared=True,
    )


def _child_params(graph: LayerGraph, path: str) -> list[str]:
    prefix = f"{path}."
    return [p.name for p in graph.parameters if p.name.startswith(prefix)]


def _chained(graph: LayerGraph, calls: list[int]) -> bool:
    """Each call's first input derives from the previous call's first output."""
    chain = [graph.calls[k] for k in calls]
    return all(
        b.inputs and a.outputs and derives_from(graph, b.inputs[0], a.outputs[0])
        for a, b in zip(chain, chain[1:], strict=False)
    )


def _through_wrappers(graph: LayerGraph, path: str) -> str:
    """Descend from `path` while it only calls one child module (as often as it is called) and
    does nothing else but move data."""
    own = [c for c in calls_within(graph, path) if c.scope == path]
    modules = [c for c in own if c.kind == "module"]
    if (
        len({c.target for c in modules}) == 1
        and len(modules) == 1
        and all(c.target in PASSTHROUGH for c in own if c.kind == "function")
    ):
        child = modules[0].target
        if len(graph.module(child).calls) == len(graph.module(path).calls):
            return _through_wrappers(graph, child)
    return path
