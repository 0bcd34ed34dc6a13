"""Recognize an MLP: which projection is gate, up and down, and its activation (probed)."""

from __future__ import annotations

import torch

from hf2kh.errors import UnsupportedModelError
from hf2kh.recognize import parts, probes
from hf2kh.recognize.graph_view import GraphView
from hf2kh.recognize.spec import MlpSpec


def mlp_spec(G: GraphView, mlp: str, hidden_dim: int, block0: str, evidence: list[str]):
    node = G.g.module(mlp)
    projections = [c for c in node.children if G.is_projection(c)]
    mlp_out = G.out(mlp)
    down = [
        p
        for p in projections
        if G.derives(mlp_out, G.out(p))
        and all(G.derives(G.inp(p), G.out(o)) for o in projections if o != p)
    ]
    if len(down) != 1:
        raise UnsupportedModelError(f"{mlp}: cannot tell the output projection")
    down = down[0]
    ins = [p for p in projections if p != down]
    calls = G.calls_within(mlp)
    act_call = next(
        (
            c
            for c in calls
            if c.scope == mlp
            and c.kind in ("module", "function")
            and any(G.out(p) in c.inputs for p in ins)
            and c.target not in ins
            and c.target not in ("mul", "__mul__")
        ),
        None,
    )
    if act_call is None:
        raise UnsupportedModelError(f"{mlp}: no activation found")
    try:
        if act_call.kind == "module":
            act_module = probes.materialize(G.submodule(act_call.target))
            activation = probes.probe_activation(act_module)
        else:
            fn = getattr(torch.nn.functional, act_call.target, None) or getattr(
                torch, act_call.target
            )
            activation = probes.probe_activation(fn)
    except UnsupportedModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - the op is not a one-argument activation
        raise UnsupportedModelError(
            f"{mlp}: the op {act_call.target!r} after its input projection is not an activation "
            f"hf2kh knows ({type(exc).__name__} when probed as one); this MLP layout is not "
            "supported yet"
        ) from exc
    gate = next((p for p in ins if G.out(p) in act_call.inputs), None)
    if gate is None:
        raise UnsupportedModelError(f"{mlp}: the activation does not read a projection")
    weights = {}
    biases = []
    if len(ins) == 2:
        up = next(p for p in ins if p != gate)
        for role, p in (("gate", gate), ("up", up)):
            refs, layout, bias = parts.proj_weights(G, role, p, block0, hidden_dim)
            weights.update(refs)
            biases.append(bias)
        gated = True
    elif len(ins) == 1:
        refs, layout, bias = parts.proj_weights(G, "up", gate, block0, hidden_dim)
        weights.update(refs)
        biases.append(bias)
        gated = False
    else:
        raise UnsupportedModelError(f"{mlp}: {len(projections)} projections not understood")
    shape = G.own_params(down)["weight"]
    intermediate = shape[1] if shape[0] == hidden_dim and shape[1] != hidden_dim else shape[0]
    refs, layout, bias = parts.proj_weights(G, "down", down, block0, intermediate)
    weights.update(refs)
    biases.append(bias)
    if len(set(biases)) != 1:
        raise UnsupportedModelError(f"{mlp}: some projections have a bias and some do not")
    evidence.append(
        f"MLP: {'gated ' if gated else ''}{activation}, intermediate {intermediate}"
        + (", with biases" if biases[0] else "")
    )
    return MlpSpec(gated, activation, intermediate, biases[0]), weights
