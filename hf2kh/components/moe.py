"""Sparse mixture of experts: a router, the top-k experts of each token, gated-MLP experts.

Recognized by shapes and a numeric probe, never names: a module whose parameters are one router
matrix (experts, hidden) and two stacked expert tensors, fused gate/up (experts, 2 * inner,
hidden) and down (experts, hidden, inner). A CPU copy of the module with random weights runs on
random tokens, and the one reference that computes the same output is kept: softmax over the
router's scores, the `top_k` largest (each k), renormalized or not, each activation, `[gate |
up]` or `[up | gate]`. The probe compares the module's whole output, so every op inside it is
accounted for. Emitted as the package's sparse MoE layer (`<name>_sparse_moe.py`), which runs
every expert on every token and weights them by the routing (`keras.ops` only); its weights are
the router and each expert's gate, up and down kernels, read from the experts as the checkpoint
stores them (one by one; transformers stacks them on load).
"""

from __future__ import annotations

import itertools

import torch

from hf2kh.components.base import Arg
from hf2kh.errors import UnsupportedModelError
from hf2kh.generate.weight_map import WeightRow
from hf2kh.ir import Activation, Moe
from hf2kh.recognize import probes
from hf2kh.recognize.graph_view import GraphView

# Keras names inside the sparse MoE layer: the router, and one `Dense` per expert and role.
ROUTER = "router"
EXPERT = "expert_{expert}_{role}"


def is_moe(G: GraphView, path: str, hidden_dim: int) -> bool:
    """A module holding stacked (3-D) expert weights that read the hidden states, as many as
    the rows of a router matrix reading them too (not, say, ConvBERT's convolution kernels)."""
    shapes = G.subtree_params(path).values()
    experts = {s[0] for s in shapes if len(s) == 3 and s[-1] == hidden_dim}
    return any(len(s) == 2 and s[0] in experts and s[1] == hidden_dim for s in shapes)


def recognize(G: GraphView, path: str, hidden_dim: int, evidence: list[str]):
    """(Moe, weights: role -> full HF parameter name) of the mixture-of-experts module `path`."""
    params = G.subtree_params(path)
    stacked = {n: s for n, s in params.items() if len(s) == 3}
    routers = {n: s for n, s in params.items() if len(s) == 2}
    others = sorted(set(params) - set(stacked) - set(routers))
    if len(stacked) != 2 or len(routers) != 1 or others:
        raise UnsupportedModelError(
            f"{path}: a mixture of experts with parameters {sorted(params)}: only one router "
            "matrix and stacked fused gate/up and down experts are supported yet"
        )
    ((router, router_shape),) = routers.items()
    experts = router_shape[0]
    gate_up = next((n for n, s in stacked.items() if s[0] == experts and s[2] == hidden_dim), None)
    down = next((n for n in stacked if n != gate_up), None)
    if gate_up is None or router_shape[1] != hidden_dim:
        raise UnsupportedModelError(f"{path}: expert weights {stacked} do not read {hidden_dim}")
    inner2 = stacked[gate_up][1]
    if inner2 % 2 or stacked[down] != (experts, hidden_dim, inner2 // 2):
        raise UnsupportedModelError(f"{path}: expert weights {stacked} are not a fused gated MLP")
    spec = _probe(G, path, router, gate_up, down, experts, inner2 // 2)
    stored = stored_experts(G.model, gate_up, down, spec.gate_first)
    evidence.append(
        f"mixture of experts {path}: {experts} gated {spec.activation.value} experts of "
        f"{spec.intermediate_dim}, top {spec.top_k} of a softmax"
        + (" renormalized" if spec.normalize_top_k else "")
        + " (probed)"
    )
    return spec, {"router": router, **stored}


def stored_experts(model, gate_up: str, down: str, gate_first: bool) -> dict[str, str]:
    """Where the checkpoint stores each expert's gate, up and down matrices: name patterns
    (`{}` the expert) read from transformers' own loading rules, which stack experts stored one
    by one into `gate_up` and `down` (`MergeModulelist`, then `Concatenate` of gate and up in
    the order of the rules' sources)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import Concatenate, MergeModulelist, WeightConverter

    found: dict[str, list[str]] = {}
    for rule in get_model_conversion_mapping(model):
        if not isinstance(rule, WeightConverter) or len(rule.target_patterns) != 1:
            continue
        ops = [type(op) for op in rule.operations]
        target = rule.target_patterns[0].lstrip(".")
        for name in (gate_up, down):
            if not name.endswith(target):
                continue
            merged = [MergeModulelist, Concatenate] if name == gate_up else [MergeModulelist]
            dims = [op.dim for op in rule.operations]
            if ops != merged or dims != [0, 1][: len(dims)]:
                continue
            prefix = name[: len(name) - len(target)]
            found[name] = [prefix + p.lstrip(".").replace("*", "{}") for p in rule.source_patterns]
    if len(found.get(gate_up, ())) != 2 or len(found.get(down, ())) != 1:
        raise UnsupportedModelError(
            f"{gate_up}: experts stored stacked in the checkpoint (not one by one as "
            "transformers' loading rules stack them): not supported yet"
        )
    gate, up = found[gate_up] if gate_first else found[gate_up][::-1]
    return {"expert_gate": gate, "expert_up": up, "expert_down": found[down][0]}


def _probe(G, path, router, gate_up, down, experts, inner) -> Moe:
    module = probes.materialize(G.submodule(path))
    found = dict(module.named_parameters())
    at = len(path) + 1
    w_router, w_gate_up, w_down = (found[n[at:]] for n in (router, gate_up, down))
    x = torch.randn(1, 9, w_router.shape[1], generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        observed = module(x)
        if isinstance(observed, tuple):
            observed = observed[0]
        observed = observed.reshape(x.shape)
        scores = torch.softmax(x @ w_router.T, dim=-1)
        fused = torch.einsum("bsh,eih->bsei", x, w_gate_up)
    candidates = {}
    for k, normalize, activation, gate_first in itertools.product(
        range(1, experts + 1), (True, False), probes.ACTIVATIONS, (True, False)
    ):
        candidates[f"{k}|{normalize}|{activation}|{gate_first}"] = (
            lambda k=k, n=normalize, a=activation, g=gate_first: _reference(
                scores, fused, w_down, k, n, probes.ACTIVATIONS[a], g
            )
        )
    try:
        chosen = probes.pick(f"{path}: the mixture of experts", observed, candidates)
    except UnsupportedModelError:
        raise UnsupportedModelError(
            f"{path}: the mixture of experts matches no softmax top-k routing hf2kh knows (every "
            "k, renormalized or not, each activation, either gate/up order); it needs the "
            "op-by-op fallback, which this version of hf2kh does not emit"
        ) from None
    k, normalize, activation, gate_first = chosen.split("|")
    return Moe(
        num_experts=experts,
        top_k=int(k),
        intermediate_dim=inner,
        activation=Activation(activation),
        normalize_top_k=normalize == "True",
        gate_first=gate_first == "True",
    )


def _reference(scores, fused, w_down, k, normalize, act, gate_first):
    top, index = torch.topk(scores, k, dim=-1)
    if normalize:
        top = top / top.sum(dim=-1, keepdim=True)
    routing = torch.zeros_like(scores).scatter(-1, index, top)
    gate, up = fused.chunk(2, dim=-1)
    if not gate_first:
        gate, up = up, gate
    each = torch.einsum("bsei,ehi->bseh", act(gate) * up, w_down)
    return torch.einsum("bseh,bse->bsh", each, routing)


def args(moe: Moe) -> list[Arg]:
    return [
        Arg("intermediate_dim", moe.intermediate_dim, "int. Width of each expert's MLP."),
        Arg("num_experts", moe.num_experts, "int. Experts of each mixture-of-experts layer."),
        Arg("num_experts_per_token", moe.top_k, "int. Experts each token is routed to."),
    ]


def build_lines(prefix: str, name: str, shape: str) -> list[str]:
    return [
        f"self.{name} = {prefix}SparseMoe(",
        "    num_experts=self.num_experts,",
        "    num_experts_per_token=self.num_experts_per_token,",
        "    intermediate_dim=self.intermediate_dim,",
        "    kernel_initializer=self.kernel_initializer,",
        "    dtype=self.dtype_policy,",
        f'    name="{name}",',
        ")",
        f"self.{name}.build({shape})",
    ]


def text(moe: Moe) -> str:
    return (
        f"a sparse mixture of `num_experts` gated {moe.activation.value} experts, "
        "`num_experts_per_token` per token"
    )


def weight_rows(moe: Moe, weights: dict[str, str], hf, keras: str, shapes) -> list[WeightRow]:
    """The router (a model parameter) and each expert's gate, up and down matrices under the
    names the checkpoint stores them (`stored_experts`), one Keras `Dense` kernel each."""
    router = hf(weights["router"])
    shape = tuple(shapes[router])
    rows = [
        WeightRow(router, shape, f"{keras}/{ROUTER}/kernel", shape[::-1], ({"op": "transpose"},))
    ]
    hidden, inner = shape[1], moe.intermediate_dim
    for expert in range(moe.num_experts):
        for role, stored_shape in (("gate", (inner, hidden)), ("up", (inner, hidden)),
                                   ("down", (hidden, inner))):  # fmt: skip
            rows.append(
                WeightRow(
                    hf(weights[f"expert_{role}"]).format(expert),
                    stored_shape,
                    f"{keras}/{EXPERT.format(expert=expert, role=role)}/kernel",
                    stored_shape[::-1],
                    ({"op": "transpose"},),
                )
            )
    return rows
