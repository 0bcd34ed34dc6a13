"""MLP: `down(act(up(x)))` or gated `down(act(gate(x)) * up(x))`, with or without biases.

One module (`mlp` with its projections) or sibling modules of the block (OPT's `fc1`, activation,
`fc2`) are the same component. Recognized from the dataflow (the output projection is the one the
others feed; the gate is the projection the activation reads) and a probe of the activation.
Emitted as dense layers of the block and its `_feedforward` method.
"""

from __future__ import annotations

import torch

from hf2kh.components.base import Arg, explain_ops
from hf2kh.errors import UnsupportedModelError
from hf2kh.generate.weight_map import WeightRow
from hf2kh.inspect.dataflow import PASSTHROUGH
from hf2kh.inspect.graph import Call
from hf2kh.ir import Activation, Mlp, WeightLayout
from hf2kh.recognize import probes
from hf2kh.recognize.graph_view import GraphView

# Keras layer names (attributes of the block), by role.
LAYERS = {
    "gate": "feedforward_gate_dense",
    "up": "feedforward_intermediate_dense",
    "down": "feedforward_output_dense",
}

EXPRESSIONS = {
    Activation.SILU: "ops.silu({x})",
    Activation.GELU: "ops.gelu({x}, approximate=False)",
    Activation.GELU_TANH: "ops.gelu({x}, approximate=True)",
    Activation.RELU: "ops.relu({x})",
}


def recognize(
    G: GraphView,
    where: str,
    projections: list[str],
    calls: list[Call],
    out_value: int,
    hidden_dim: int,
    evidence: list[str],
) -> tuple[Mlp, dict[str, str]]:
    """The MLP made of `projections` and the `calls` between them (those of the MLP module, or
    the block's own calls from the first projection to the last), whose result is `out_value`."""
    down = [
        p
        for p in projections
        if G.derives(out_value, G.out(p))
        and all(G.derives(G.inp(p), G.out(o)) for o in projections if o != p)
    ]
    if len(down) != 1:
        raise UnsupportedModelError(f"{where}: cannot tell the MLP output projection")
    down = down[0]
    ins = [p for p in projections if p != down]
    act_call = next(
        (
            c
            for c in calls
            if c.kind in ("module", "function")
            and any(G.out(p) in c.inputs for p in ins)
            and c.target not in projections
            and c.target not in ("mul", "__mul__")
            and not _within_any(c.scope, projections)
        ),
        None,
    )
    if act_call is None:
        raise UnsupportedModelError(f"{where}: no MLP activation found")
    activation = _activation(G, act_call, where)
    gate = next((p for p in ins if G.out(p) in act_call.inputs), None)
    if gate is None:
        raise UnsupportedModelError(f"{where}: the activation does not read a projection")
    if len(ins) == 2:
        weights = {"gate": gate, "up": next(p for p in ins if p != gate), "down": down}
    elif len(ins) == 1:
        weights = {"up": gate, "down": down}
    else:
        raise UnsupportedModelError(f"{where}: {len(projections)} projections not understood")
    shape = G.own_params(down)["weight"]
    intermediate = shape[1] if shape[0] == hidden_dim and shape[1] != hidden_dim else shape[0]
    layouts, biases = set(), set()
    for role, path in weights.items():
        width = intermediate if role == "down" else hidden_dim
        layout, bias = probes.probe_projection(G.submodule(path), width)
        layouts.add(layout)
        biases.add(bias)
    if len(biases) != 1:
        raise UnsupportedModelError(f"{where}: some projections have a bias and some do not")
    if len(layouts) != 1:
        raise UnsupportedModelError(f"{where}: projections mix Linear and Conv1D layouts")
    gated = "gate" in weights
    own = [c for c in calls if c is not act_call and not _within_any(c.scope, projections)]
    own = [c for c in own if not (act_call.kind == "module" and _within(c.scope, act_call.target))]
    explain_ops(where, own, PASSTHROUGH | ({"mul"} if gated else set()))
    bias = biases.pop()
    evidence.append(
        f"MLP {where}: {'gated ' if gated else ''}{activation.value}, intermediate {intermediate}"
        + (", with biases" if bias else "")
    )
    return Mlp(gated, activation, intermediate, bias, WeightLayout(layouts.pop())), weights


def _within(scope: str, path: str) -> bool:
    return scope == path or scope.startswith(f"{path}.")


def _within_any(scope: str, paths) -> bool:
    return any(_within(scope, p) for p in paths)


def _activation(G: GraphView, call: Call, where: str) -> Activation:
    try:
        if call.kind == "module":
            fn = probes.materialize(G.submodule(call.target))
        else:
            fn = getattr(torch.nn.functional, call.target, None) or getattr(torch, call.target)
        return Activation(probes.probe_activation(fn))
    except UnsupportedModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - the op is not a one-argument activation
        raise UnsupportedModelError(
            f"{where}: the op {call.target!r} after its input projection is not an activation "
            f"hf2kh knows ({type(exc).__name__} when probed as one); this MLP layout is not "
            "supported yet"
        ) from exc


def describe(mlp: Mlp) -> str:
    return f"{'gated ' if mlp.gated else ''}{mlp.activation.value} MLP"


def args(mlp: Mlp) -> list[Arg]:
    return [Arg("intermediate_dim", mlp.intermediate_dim, "int. Width of the MLP.")]


def expression(mlp: Mlp, x: str) -> str:
    return EXPRESSIONS[mlp.activation].format(x=x)


def weight_rows(mlp: Mlp, weights: dict[str, str], hf, keras: str, shapes) -> list[WeightRow]:
    rows = []
    for role, path in weights.items():
        name = hf(path)
        shape = tuple(shapes[f"{name}.weight"])
        linear = mlp.weight_layout is WeightLayout.LINEAR
        rows.append(
            WeightRow(
                f"{name}.weight",
                shape,
                f"{keras}/{LAYERS[role]}/kernel",
                shape[::-1] if linear else shape,
                ({"op": "transpose"},) if linear else (),
            )
        )
        if mlp.bias:
            bias = tuple(shapes[f"{name}.bias"])
            rows.append(WeightRow(f"{name}.bias", bias, f"{keras}/{LAYERS[role]}/bias", bias, ()))
    return rows
