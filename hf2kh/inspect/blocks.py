"""Find repeated blocks (`layers.0..N`) and prove them identical, or say how they differ.

Two blocks are the same when they have the same submodules, parameter shapes, scalar settings
(except their own index), the same recorded calls, and read the same shared inputs (masks,
position embeddings). Blocks that differ (e.g. alternating local/global attention) are reported
as separate variants with the differences spelled out.
"""

from __future__ import annotations

import re
from typing import Any

from hf2kh.inspect.dataflow import calls_within
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
    return groups
