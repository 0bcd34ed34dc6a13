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
    Activation.RELU_SQUARED: "ops.square(ops.relu({x}))",
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
    # A fused gate/up projection is split in two halves (Phi-3's `gate_up_proj.chunk(2)`).
    halves = _halves(G, calls, ins[0]) if len(ins) == 1 else None
    sources = {G.out(p): p for p in ins}
    if halves is not None:
        sources = {value: ins[0] for value in halves}
    act_call = next(
        (
            c
            for c in calls
            if c.kind in ("module", "function")
            and any(v in c.inputs for v in sources)
            and c.target not in projections
            and c.target not in ("mul", "__mul__", "chunk", "split")
            and not _within_any(c.scope, projections)
        ),
        None,
    )
    if act_call is None:
        raise UnsupportedModelError(f"{where}: no MLP activation found")
    activation = recognize_activation(G, act_call, where)
    gate = next((p for v, p in sources.items() if v in act_call.inputs), None)
    if gate is None:
        raise UnsupportedModelError(f"{where}: the activation does not read a projection")
    gate_half = None
    if halves is not None:
        gate_half = next(i for i, v in enumerate(halves) if v in act_call.inputs)
        weights = {f"gate_up:{gate_half}": gate, "down": down}
    elif len(ins) == 2:
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
    gated = "gate" in weights or halves is not None
    own = [c for c in calls if c is not act_call and not _within_any(c.scope, projections)]
    own = [c for c in own if not (act_call.kind == "module" and _within(c.scope, act_call.target))]
    explain_ops(where, own, PASSTHROUGH | ({"mul"} if gated else set()))
    bias = biases.pop()
    evidence.append(
        f"MLP {where}: {'gated ' if gated else ''}{activation.value}, intermediate {intermediate}"
        + (", with biases" if bias else "")
    )
    return Mlp(gated, activation, intermediate, bias, WeightLayout(layouts.pop())), weights


def _halves(G: GraphView, calls: list[Call], projection: str) -> tuple[int, int] | None:
    """The two outputs of a `chunk`/`split` in two equal halves of `projection`'s output."""
    for call in calls:
        if (
            call.target in ("chunk", "split")
            and len(call.outputs) == 2
            and G.derives(call.inputs[0], G.out(projection))
        ):
            a, b = (G.g.value(v).shape[-1] for v in call.outputs)
            if a == b and a * 2 == G.g.value(G.out(projection)).shape[-1]:
                return call.outputs[0], call.outputs[1]
    return None


def _within(scope: str, path: str) -> bool:
    return scope == path or scope.startswith(f"{path}.")


def _within_any(scope: str, paths) -> bool:
    return any(_within(scope, p) for p in paths)


def recognize_activation(G: GraphView, call: Call, where: str) -> Activation:
    """The activation `call` (a module or a torch function) computes, by a probe."""
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
    linear = mlp.weight_layout is WeightLayout.LINEAR
    for role, path in weights.items():
        name = hf(path)
        shape = tuple(shapes[f"{name}.weight"])
        for part, split in _parts(role, shape, linear, mlp.intermediate_dim):
            out = shape if split is None else _halved(shape, split["axis"])
            rows.append(
                WeightRow(
                    f"{name}.weight",
                    shape,
                    f"{keras}/{LAYERS[part]}/kernel",
                    out[::-1] if linear else out,
                    (*([split] if split else []), *([{"op": "transpose"}] if linear else [])),
                )
            )
            if mlp.bias:
                bias = tuple(shapes[f"{name}.bias"])
                bias_split = [{**split, "axis": 0}] if split else []
                rows.append(
                    WeightRow(
                        f"{name}.bias",
                        bias,
                        f"{keras}/{LAYERS[part]}/bias",
                        bias if split is None else _halved(bias, 0),
                        tuple(bias_split),
                    )
                )
    return rows


def _parts(role: str, shape, linear: bool, intermediate: int):
    """(Keras role, split op or None) for each Keras layer one HF projection fills."""
    if not role.startswith("gate_up:"):
        return [(role, None)]
    gate_half = int(role.split(":")[1])
    axis = 0 if linear else len(shape) - 1  # Linear (out, in), Conv1D (in, out)
    split = {"op": "split", "axis": axis, "sizes": [intermediate, intermediate]}
    return [
        ("gate", {**split, "index": gate_half}),
        ("up", {**split, "index": 1 - gate_half}),
    ]


def _halved(shape, axis: int) -> tuple[int, ...]:
    out = list(shape)
    out[axis] //= 2
    return tuple(out)
