"""The masked-LM head's transform: `norm(act(dense(h)))` between the final hidden states and the
vocabulary projection (BERT's `cls.predictions.transform`, ELECTRA's generator head).

Recognized from the dataflow after the last block: the projection that reads the final hidden
states and feeds the head, the activation reading its output (probed), the norm reading that.
Emitted as KerasHub's `MaskedLMHead` (its intermediate dense, activation and LayerNorm, then the
tied embedding and the head's bias), with its weight rows here.
"""

from __future__ import annotations

from hf2kh.components import mlp as mlp_component
from hf2kh.components import norm as norm_component
from hf2kh.components.base import Arg
from hf2kh.errors import UnsupportedModelError
from hf2kh.generate.weight_map import WeightRow
from hf2kh.inspect.dataflow import PASSTHROUGH
from hf2kh.inspect.graph import Call
from hf2kh.ir import Activation, HeadTransform, NormKind
from hf2kh.recognize.graph_view import GraphView

# Keras names inside the task's `MaskedLMHead` layer.
LAYER = "masked_lm_head"
DENSE = f"{LAYER}/intermediate_dense"
NORM = f"{LAYER}/intermediate_layer_norm"
BIAS = f"{LAYER}/output_bias"

# keras.activations names of what the head's dense applies.
KERAS_ACTIVATIONS = {
    Activation.GELU: "gelu",
    Activation.RELU: "relu",
    Activation.SILU: "silu",
}


def recognize(
    G: GraphView, after: list[Call], head: str, hidden: int, evidence: list[str]
) -> tuple[HeadTransform | None, list[Call]]:
    """The transform between the final hidden states (`hidden`, a value) and `head`, and the
    calls it explains; (None, []) when the head reads the hidden states directly."""
    head_in = G.inp(head)
    modules = [c for c in after if c.kind == "module"]
    dense = [
        c.target
        for c in modules
        if c.target != head
        and G.is_projection(c.target)
        and G.derives(head_in, G.out(c.target))
        and G.derives(G.inp(c.target), hidden)
    ]
    if not dense:
        return None, []
    if len(dense) != 1:
        raise UnsupportedModelError(f"more than one dense before the head: {dense}")
    dense = dense[0]
    made = G.out(dense)
    act_call = next(
        (
            c
            for c in after
            if made in c.inputs
            and c.target not in PASSTHROUGH
            and not (c.kind == "module" and c.target == dense)
            and c.scope != dense
        ),
        None,
    )
    if act_call is None:  # a plain projection (OPT-350m's project_out), not a head transform
        return None, []
    activation = mlp_component.recognize_activation(G, act_call, dense)
    act_out = act_call.outputs[0]
    norms = [
        c.target
        for c in modules
        if G.is_norm(c.target)
        and G.derives(G.inp(c.target), act_out)
        and G.derives(head_in, G.out(c.target))
    ]
    if len(norms) != 1:
        raise UnsupportedModelError(
            f"{dense}: expected one norm between the head's dense and {head}, found {norms}"
        )
    width = G.own_params(dense)["weight"][0]
    norm = norm_component.recognize(G, norms[0], width)
    if norm.kind is not NormKind.LAYER or not norm.scale:
        raise UnsupportedModelError(f"{norms[0]}: the head's norm is not a LayerNorm with a weight")
    if activation not in KERAS_ACTIVATIONS and activation not in mlp_component.EXPRESSIONS:
        raise UnsupportedModelError(
            f"{dense}: the head's activation {activation.value} is not supported yet"
        )
    explained = [
        c for c in after if c is act_call or _within(c.scope, dense) or _within(c.scope, norms[0])
    ]
    if act_call.kind == "module":
        explained += [c for c in after if _within(c.scope, act_call.target)]
    evidence.append(
        f"head transform: {dense} ({width} wide), {activation.value}, {norms[0]} "
        f"({norm_component.describe(norm)})"
    )
    bias = "bias" in G.own_params(dense)
    transform = HeadTransform(dense, width, activation, norm, norms[0], dense_bias=bias)
    return transform, explained


def _within(scope: str, path: str) -> bool:
    return scope == path or scope.startswith(f"{path}.")


def activation_function(transform: HeadTransform) -> tuple[str, str] | None:
    """(name, expression of `x`) of the function the task module defines for an activation
    keras has no name for (the tanh GELU, HF's `gelu_new`); None for a keras activation."""
    if transform.activation in KERAS_ACTIVATIONS:
        return None
    return transform.activation.value, mlp_component.EXPRESSIONS[transform.activation]


def args(transform: HeadTransform) -> list[Arg]:
    """The task's constructor arguments for its `MaskedLMHead`."""
    return [
        Arg(
            "head_activation",
            KERAS_ACTIVATIONS.get(transform.activation, transform.activation.value),
            "str. Activation of the masked-LM head's dense transform.",
        ),
        Arg(
            "head_layer_norm_epsilon",
            transform.norm.epsilon,
            "float. Epsilon of the masked-LM head's layer norm.",
        ),
    ]


# Keras names of the transform where the backbone's `token_logits()` applies it (a causal LM's
# head: ModernBERT's decoder).
BACKBONE_DENSE = "lm_head_dense"
BACKBONE_NORM = "lm_head_layernorm"


def backbone_rows(transform: HeadTransform, shapes) -> list[WeightRow]:
    """Rows for the transform's dense and norm held by the backbone (the vocabulary bias is the
    backbone's `lm_head_bias`)."""
    return _transform_rows(transform, shapes, BACKBONE_DENSE, BACKBONE_NORM)


def _transform_rows(transform: HeadTransform, shapes, dense: str, norm: str) -> list[WeightRow]:
    name = f"{transform.hf_dense}.weight"
    shape = tuple(shapes[name])
    rows = [WeightRow(name, shape, f"{dense}/kernel", shape[::-1], ({"op": "transpose"},))]
    if transform.dense_bias:
        rows.append(_same(f"{transform.hf_dense}.bias", shapes, f"{dense}/bias"))
    return rows + norm_component.weight_rows(transform.norm, transform.hf_norm, norm, shapes)


def weight_rows(transform: HeadTransform, bias: str | None, shapes) -> list[WeightRow]:
    """Rows for the `MaskedLMHead`: its dense, its LayerNorm and the vocabulary bias (`bias`, the
    HF parameter holding it)."""
    rows = _transform_rows(transform, shapes, DENSE, NORM)
    if bias is None:
        raise UnsupportedModelError("a masked-LM head without a bias is not supported yet")
    rows.append(_same(bias, shapes, BIAS))
    return rows


def _same(name: str, shapes, keras: str) -> WeightRow:
    shape = tuple(shapes[name])
    return WeightRow(name, shape, keras, shape, ())
