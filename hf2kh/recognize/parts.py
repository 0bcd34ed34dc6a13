"""Norm specs and weight references shared by the block recognizers."""

from __future__ import annotations

from hf2kh.recognize import probes
from hf2kh.recognize.graph_view import GraphView
from hf2kh.recognize.spec import NormSpec, WeightRef


def epsilons(G: GraphView, path: str) -> list[float]:
    attrs = G.g.module(path).attributes
    found = [float(v) for k, v in attrs.items() if "eps" in k and isinstance(v, float)]
    return found or [1e-5, 1e-6, 1e-12]


def norm_spec(G: GraphView, path: str, width: int) -> NormSpec:
    kind, eps, offset = probes.probe_norm(G.submodule(path), width, epsilons(G, path))
    return NormSpec(kind, eps, offset, bias="bias" in G.own_params(path))


def template_name(path: str, block0: str | None) -> str:
    """`model.layers.0.mlp.up_proj` -> `model.layers.{i}.mlp.up_proj` for a module of block 0;
    other paths (outside the blocks, `block0` None) stay as they are."""
    if block0 is None:
        return path
    container = block0.rpartition(".")[0]
    return f"{container}.{{i}}{path[len(block0) :]}"


def norm_weights(G: GraphView, path: str, role: str, block0: str | None):
    base = template_name(path, block0)
    refs = {f"{role}.gamma": WeightRef(f"{base}.weight", "vector")}
    if "bias" in G.own_params(path):
        refs[f"{role}.beta"] = WeightRef(f"{base}.bias", "vector")
    return refs


def proj_weights(G: GraphView, role: str, path: str, block0: str, width: int):
    layout, bias = probes.probe_projection(G.submodule(path), width)
    base = template_name(path, block0)
    refs = {f"{role}.kernel": WeightRef(f"{base}.weight", layout)}
    if bias:
        refs[f"{role}.bias"] = WeightRef(f"{base}.bias", "vector")
    return refs, layout, bias
