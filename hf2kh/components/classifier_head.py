"""The sequence-classification head: the first token's final hidden state, through a pooler
(dense and tanh, BERT's `bert.pooler`; dense and gelu, DeBERTa's `ContextPooler`) when the model
has one, then the classifier projection to
`num_classes` logits (dropout in between is inactive at inference).

Recognized from the dataflow after the last block: a projection to neither the hidden width nor
the vocabulary, reading the hidden states of position 0 (a `__getitem__` on them), through a
dense whose activation is probed (tanh, gelu, relu or silu). Emitted as the task's
`pooled_dense` and `logits` dense layers (`<name>_text_classifier.py`); the checkpoint's
`id2label` names are kept with the task as its `labels` argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hf2kh.components.base import Arg
from hf2kh.errors import UnsupportedModelError
from hf2kh.generate.weight_map import WeightRow
from hf2kh.inspect.dataflow import PASSTHROUGH
from hf2kh.inspect.graph import Call
from hf2kh.recognize import probes
from hf2kh.recognize.graph_view import GraphView

POOLER = "pooled_dense"
LOGITS = "logits"


# Activations a pooler may apply, by their Keras name: the reference each is probed against.
POOLER_ACTIVATIONS = {
    "tanh": torch.tanh,
    "gelu": torch.nn.functional.gelu,
    "relu": torch.relu,
    "silu": torch.nn.functional.silu,
}


@dataclass(frozen=True)
class Found:
    head: str
    pooler: str | None
    num_classes: int
    explained: list[Call]
    activation: str = "tanh"  # the pooler's, a Keras activation name


def recognize(
    G: GraphView, after: list[Call], hidden: int, hidden_dim: int, vocab_size: int, evidence
) -> Found | None:
    """The classifier after the last block (`hidden`: its output value), or None."""
    modules = [c.target for c in after if c.kind == "module"]
    heads = [
        p
        for p in modules
        if G.is_projection(p)
        and G.own_params(p)["weight"][0] not in (hidden_dim, vocab_size)
        and G.own_params(p)["weight"][1] == hidden_dim
        and G.derives(G.inp(p), hidden)
    ]
    if len(heads) != 1:
        return None
    head = heads[0]
    first = _first_token(G, after, hidden)
    if len(first) != 1 or not G.derives(G.inp(head), first[0].outputs[0]):
        raise UnsupportedModelError(
            f"{head}: the classifier does not read the first token's hidden state"
        )
    poolers = [
        p
        for p in modules
        if p != head
        and G.is_projection(p)
        and G.derives(G.inp(head), G.out(p))
        and G.derives(G.inp(p), first[0].outputs[0])
    ]
    if len(poolers) > 1:
        raise UnsupportedModelError(f"more than one dense before the classifier: {poolers}")
    pooler = poolers[0] if poolers else None
    explained = [first[0]]
    activation = "tanh"
    if pooler is not None:
        activation, calls = _pooler_activation(G, after, pooler)
        explained += calls
    if "bias" not in G.own_params(head):
        raise UnsupportedModelError(f"{head}: a classifier without a bias is not supported")
    num_classes = G.own_params(head)["weight"][0]
    explained += [
        c for c in after if any(_within(c.scope, p) for p in (head, pooler) if p is not None)
    ]
    evidence.append(
        f"classifier {head}: {num_classes} classes from the first token"
        + (f", pooled by {pooler} and {activation} (probed)" if pooler else "")
    )
    return Found(head, pooler, num_classes, explained, activation)


def recognize_bare_pooler(G: GraphView, after: list[Call], hidden: int, evidence) -> tuple:
    """A bare encoder's pooler (BERT's `pooler`: the first token's hidden state through a dense and
    tanh) after the last block: `(path, explained calls)`, or `(None, [])` when there is none.
    The pooler is not ported (the backbone outputs the hidden states); it is only accounted for."""
    first = _first_token(G, after, hidden)
    if len(first) != 1:
        return None, []
    poolers = [
        c.target
        for c in after
        if c.kind == "module"
        and G.is_projection(c.target)
        and G.derives(G.inp(c.target), first[0].outputs[0])
    ]
    if len(poolers) != 1:
        return None, []
    pooler = poolers[0]
    activation, calls = _pooler_activation(G, after, pooler)
    explained = [first[0], *calls]
    explained += [c for c in after if _within(c.scope, pooler)]
    evidence.append(
        f"pooler {pooler}: the first token through a dense and {activation} (probed); not "
        "ported, the "
        "backbone outputs the last hidden states"
    )
    return pooler, explained


def _first_token(G: GraphView, after: list[Call], hidden: int) -> list[Call]:
    """The calls taking hidden[:, 0]: (batch, length, width) -> (batch, width)."""
    shape = G.g.value(hidden).shape
    return [
        c
        for c in after
        if c.target == "__getitem__"
        and c.inputs[:1] == [hidden]
        and c.outputs
        and list(G.g.value(c.outputs[0]).shape) == [shape[0], shape[-1]]
    ]


def _pooler_activation(G: GraphView, after: list[Call], pooler: str) -> tuple[str, list[Call]]:
    """(its Keras name, its calls) of the pooler's activation (probed), which must follow its
    biased dense."""
    act = next(
        (c for c in after if G.out(pooler) in c.inputs and c.target not in PASSTHROUGH), None
    )
    name = next((n for n, fn in POOLER_ACTIVATIONS.items() if act and _computes(G, act, fn)), None)
    if name is None:
        raise UnsupportedModelError(
            f"{pooler}: the pooler's activation is none of {', '.join(POOLER_ACTIVATIONS)}"
        )
    if "bias" not in G.own_params(pooler):
        raise UnsupportedModelError(f"{pooler}: a pooler without a bias is not supported")
    return name, [c for c in after if c is act or _within(c.scope, act.target)]


def _within(scope: str, path: str) -> bool:
    return scope == path or scope.startswith(f"{path}.")


def _computes(G: GraphView, call: Call, reference) -> bool:
    """Whether the one-argument activation `call` computes `reference`, on a ramp."""
    x = torch.linspace(-4, 4, 161)
    try:
        if call.kind == "module":
            fn = probes.materialize(G.submodule(call.target))
        else:
            fn = getattr(torch, call.target, None) or getattr(torch.nn.functional, call.target)
        with torch.no_grad():
            return bool(torch.allclose(fn(x), reference(x), atol=1e-6))
    except Exception:  # noqa: BLE001 - not a one-argument activation
        return False


def args(num_classes: int, labels: tuple[str, ...]) -> list[Arg]:
    return [
        Arg("num_classes", num_classes, "int. Number of classes the classifier predicts."),
        Arg(
            "labels",
            labels,
            "tuple of str. The class names, by class id (the checkpoint's `id2label`).",
        ),
    ]


def weight_rows(head: str, pooler: str | None, shapes) -> list[WeightRow]:
    rows = []
    for hf, keras in ((pooler, POOLER), (head, LOGITS)):
        if hf is None:
            continue
        shape = tuple(shapes[f"{hf}.weight"])
        rows.append(
            WeightRow(f"{hf}.weight", shape, f"{keras}/kernel", shape[::-1], ({"op": "transpose"},))
        )
        bias = tuple(shapes[f"{hf}.bias"])
        rows.append(WeightRow(f"{hf}.bias", bias, f"{keras}/bias", bias, ()))
    return rows
