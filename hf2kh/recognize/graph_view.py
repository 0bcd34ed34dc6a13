"""A read-only view of one layer graph and its meta model, with the queries recognition needs."""

from __future__ import annotations

import torch

from hf2kh.inspect.dataflow import calls_within, derives_from, first_call
from hf2kh.inspect.graph import Call, LayerGraph


class GraphView:
    """Small helpers over one graph and its meta-device model."""

    def __init__(self, graph: LayerGraph, model: torch.nn.Module):
        self.g = graph
        self.model = model
        self.shapes = {p.name: p.shape for p in graph.parameters}
        self.shapes.update({t.name: self.shapes[t.target] for t in graph.tied})
        # block path -> the (args, kwargs) it received in the CPU stem run (`probes.run_stem`),
        # for probes that run a block or its attention on numbers
        self.block_inputs: dict[str, tuple] = {}

    def own_params(self, path: str) -> dict[str, tuple[int, ...]]:
        node = self.g.module(path)
        return {n.rpartition(".")[2]: self.shapes[n] for n in node.param_names}

    def subtree_params(self, path: str) -> dict[str, tuple[int, ...]]:
        prefix = f"{path}."
        return {n: s for n, s in self.shapes.items() if n.startswith(prefix)}

    def calls_within(self, path: str) -> list[Call]:
        return calls_within(self.g, path)

    def is_norm(self, path: str) -> bool:
        """Only vector parameters (scale, shift); or none, for a module that runs a layer norm
        (OLMo's non-affine LayerNorm). What it computes is then probed."""
        params = self.subtree_params(path)
        if not params:
            called = bool(self.g.module(path).calls)  # (Falcon's unused attention_dropout)
            return called and any(c.target == "layer_norm" for c in self.calls_within(path))
        return all(len(s) == 1 for s in params.values())

    def is_projection(self, path: str) -> bool:
        own = self.own_params(path)
        return "weight" in own and len(own["weight"]) == 2

    def out(self, path: str) -> int:
        return first_call(self.g, path).outputs[0]

    def inp(self, path: str) -> int:
        return first_call(self.g, path).inputs[0]

    def derives(self, value: int, source: int) -> bool:
        return derives_from(self.g, value, source)

    def submodule(self, path: str) -> torch.nn.Module:
        return self.model.get_submodule(path)
