"""Sparse mixture of experts: a router, the top-k experts of each token, gated-MLP experts, and
maybe a shared expert every token runs.

Recognized by shapes and a numeric probe, never names: a module whose parameters are one router
matrix (experts, hidden) and two stacked expert tensors, fused gate/up (experts, 2 * inner,
hidden) and down (experts, hidden, inner), or both transposed; besides them at most a per-expert
buffer (a correction bias for choosing experts), a child module that is a gated MLP (the shared
expert) and a (1, hidden) matrix (a sigmoid gate on the shared expert's output). A CPU copy of
the module with random weights (and a random correction bias) runs on random tokens, and the one
reference that computes the same output is kept: softmax or sigmoid scores of the router's
logits; the `top_k` chosen on the scores, on the scores plus the bias or on the logits plus the
bias, among all experts or only those of each token's best groups; the chosen scores
renormalized or not, times 1 or a constant the module multiplies by; each activation, `[gate |
up]` or `[up | gate]`; plus the shared expert's output (gated or not). The probe compares the
module's whole output, so every op inside it is accounted for; a routing no candidate matches is
refused.

Emitted as the package's sparse MoE layer (`<name>_sparse_moe.py`), which runs every expert on
every token and weights them by the routing (`keras.ops` only); its weights are the router, the
correction bias, each expert's gate, up and down kernels (read from the experts as the
checkpoint stores them: one by one, which transformers stacks on load, or already stacked) and
the shared expert's.
"""

from __future__ import annotations

import itertools
import textwrap
from dataclasses import replace

import torch

from hf2kh.components import mlp as mlp_component
from hf2kh.components.base import Arg
from hf2kh.components.softcap import MULS, constant
from hf2kh.errors import UnsupportedModelError
from hf2kh.generate.weight_map import WeightRow
from hf2kh.inspect.dataflow import calls_within
from hf2kh.ir import Activation, ChoiceBias, Moe, MoeScoring, SharedExpert, WeightLayout
from hf2kh.recognize import probes
from hf2kh.recognize.graph_view import GraphView

# Keras names inside the sparse MoE layer: the router, its correction bias, one `Dense` per
# expert and role, the shared expert's `Dense` layers and its output gate.
ROUTER = "router"
CORRECTION_BIAS = "score_correction_bias"
EXPERT = "expert_{expert}_{role}"
SHARED = "shared_expert_{role}"
SHARED_GATE = "shared_expert_gating"

# Tokens the probe routes: enough that a wrong routing changes some token's choice.
PROBE_TOKENS = 48


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
    experts = next((s[0] for s in stacked.values() if s[-1] == hidden_dim), None)
    routers = [n for n, s in params.items() if s == (experts, hidden_dim)]
    shared_gates = [n for n, s in params.items() if s == (1, hidden_dim)]
    shared_path = _shared_module(G, path, set(stacked) | set(routers) | set(shared_gates))
    others = sorted(
        n
        for n in set(params) - set(stacked) - set(routers) - set(shared_gates)
        if shared_path is None or not n.startswith(f"{shared_path}.")
    )
    if len(stacked) != 2 or len(routers) != 1 or len(shared_gates) > 1 or others:
        raise UnsupportedModelError(
            f"{path}: a mixture of experts with parameters {sorted(params)}: one router matrix, "
            "stacked fused gate/up and down experts and at most a shared gated MLP (with a "
            "one-unit gate) are supported"
        )
    (router,) = routers
    layouts = _expert_layouts(stacked, experts, hidden_dim)
    if not layouts:
        raise UnsupportedModelError(f"{path}: expert weights {stacked} are not a fused gated MLP")
    biases = [
        b.name for b in G.g.buffers if b.name.startswith(f"{path}.") and b.shape == (experts,)
    ]
    if len(biases) > 1:
        raise UnsupportedModelError(f"{path}: several per-expert buffers {biases}")
    shared, shared_weights = None, {}
    if shared_path is not None:
        shared, shared_weights = _shared_expert(G, path, shared_path, hidden_dim, evidence)
    elif shared_gates:
        raise UnsupportedModelError(
            f"{path}: a one-unit gate {shared_gates[0]} without a shared expert"
        )
    weights = {"router": router, **shared_weights}
    if shared_gates:
        weights["shared_output_gate"] = shared_gates[0]
    spec, gate_up, down = _probe(
        G, path, weights, layouts, biases[0] if biases else None, shared_path
    )
    if spec.choice_bias is not ChoiceBias.NONE:
        weights["correction_bias"] = biases[0]
    if shared is not None:
        spec = replace(spec, shared=replace(shared, gated_output=bool(shared_gates)))
    stored = stored_experts(G.model, gate_up, down, spec.gate_first)
    evidence.append(f"mixture of experts {path}: {describe(spec)} (probed)")
    return spec, {**weights, **stored}


def _shared_module(G: GraphView, path: str, routed: set[str]) -> str | None:
    """The child of `path` holding the parameters that are not the router's or the routed
    experts' (the shared expert), if any."""
    children = [
        c
        for c in G.g.module(path).children
        if G.subtree_params(c) and not set(G.subtree_params(c)) & routed
    ]
    if len(children) > 1:
        raise UnsupportedModelError(f"{path}: modules {children} besides the routed experts")
    return children[0] if children else None


def _shared_expert(G: GraphView, path: str, shared_path: str, hidden_dim: int, evidence):
    projections = [c for c in G.g.module(shared_path).children if G.is_projection(c)]
    calls = calls_within(G.g, shared_path)
    if not calls:
        raise UnsupportedModelError(f"{shared_path}: not run by the mixture of experts {path}")
    mlp, weights = mlp_component.recognize(
        G, shared_path, projections, calls, G.out(shared_path), hidden_dim, evidence
    )
    if not mlp.gated or mlp.bias or mlp.weight_layout is not WeightLayout.LINEAR:
        raise UnsupportedModelError(
            f"{shared_path}: a shared expert that is not a bias-free gated MLP is not supported"
        )
    shared = SharedExpert(intermediate_dim=mlp.intermediate_dim, activation=mlp.activation)
    return shared, {f"shared_{role}": p for role, p in weights.items()}


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
    if not found:  # no rule stacks them: the checkpoint stores them stacked, as the model
        return {"experts_gate_up": gate_up, "experts_down": down}
    if len(found.get(gate_up, ())) != 2 or len(found.get(down, ())) != 1:
        raise UnsupportedModelError(
            f"{gate_up}: transformers' loading rules stack these experts in a way hf2kh does "
            "not read (not one by one, fused gate/up from two tensors)"
        )
    gate, up = found[gate_up] if gate_first else found[gate_up][::-1]
    return {"expert_gate": gate, "expert_up": up, "expert_down": found[down][0]}


def _expert_layouts(stacked: dict, experts: int, hidden: int) -> list:
    """(layout, gate/up tensor, down tensor, expert width) of each way the two stacked tensors
    can be a fused gated MLP: as `Linear` weights, gate/up (experts, 2 * inner, hidden) and down
    (experts, hidden, inner), or transposed, (experts, hidden, 2 * inner) and (experts, inner,
    hidden) (Aria's, stored for `grouped_mm`)."""
    found = []
    for (gate_up, a), (down, b) in itertools.permutations(stacked.items()):
        for layout in WeightLayout:
            linear = layout is WeightLayout.LINEAR
            width = a[1] if linear else a[2]
            expected_a = (experts, width, hidden) if linear else (experts, hidden, width)
            expected_b = (experts, hidden, width // 2) if linear else (experts, width // 2, hidden)
            if width % 2 == 0 and a == expected_a and b == expected_b:
                found.append((layout, gate_up, down, width // 2))
    return found


def _probe(G, path, weights, layouts, bias, shared_path) -> tuple[Moe, str, str]:
    """The `Moe` the module computes, and its gate/up and down tensors."""
    module = probes.materialize(G.submodule(path))
    at = len(path) + 1
    found = dict(module.named_parameters())
    w_router = found[weights["router"][at:]]
    experts, hidden = w_router.shape
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        # logits of about unit size, so sigmoid scores do not saturate and a bias of their
        # size changes some choices
        w_router.copy_(torch.randn(w_router.shape, generator=gen) / hidden**0.5)
        correction = None
        if bias is not None:
            correction = module.get_buffer(bias[at:])
            correction.copy_(torch.randn(experts, generator=gen) * 0.5)
        x = torch.randn(1, PROBE_TOKENS, hidden, generator=gen)
        observed = module(x)
        if isinstance(observed, tuple):
            observed = observed[0]
        observed = observed.reshape(x.shape)
        logits = x @ w_router.T
        shared = 0.0
        if shared_path is not None:
            shared = module.get_submodule(shared_path[at:])(x).reshape(x.shape)
            if "shared_output_gate" in weights:
                shared = shared * torch.sigmoid(x @ found[weights["shared_output_gate"][at:]].T)
    factors = [1.0] + sorted(
        {
            value
            for c in calls_within(G.g, path)
            if c.kind == "function"
            and c.target in MULS
            and (value := constant(c)) not in (None, 1.0)
        }
    )
    # the k of each recorded `topk` (the experts per token, the groups kept, ...); every k when
    # the module records none
    ks = sorted(
        {
            int(c.constants[0])
            for c in calls_within(G.g, path)
            if c.kind == "function" and c.target == "topk" and c.constants
            if str(c.constants[0]).isdigit() and 0 < int(c.constants[0]) <= experts
        }
    ) or list(range(1, experts + 1))
    with torch.no_grad():
        routings = list(_routings(logits, correction, ks))
        # one expert layout, activation and gate/up order at a time: every expert's output on
        # every token is (tokens, experts, hidden) large
        for (layout, gate_up, down, inner), a, g in itertools.product(
            layouts, probes.ACTIVATIONS, (True, False)
        ):
            each = _experts(x, found[gate_up[at:]], found[down[at:]], layout, a, g)
            found_match = next(
                (
                    (fields, factor)
                    for (fields, routed), factor in itertools.product(routings, factors)
                    if probes.matches(
                        observed, torch.einsum("bseh,bse->bsh", each, routed) * factor + shared
                    )
                ),
                None,
            )
            if found_match is not None:
                fields, factor = found_match
                spec = Moe(
                    num_experts=experts,
                    intermediate_dim=inner,
                    activation=Activation(a),
                    gate_first=g,
                    routed_scale=factor,
                    expert_layout=layout,
                    **fields,
                )
                return spec, gate_up, down
    raise UnsupportedModelError(
        f"{path}: the mixture of experts matches no routing hf2kh knows (softmax or sigmoid "
        "scores, top k of them, of them or the logits plus a correction bias, in the best "
        "groups or not, renormalized or not, scaled or not; each activation, either gate/up "
        "order); it needs the op-by-op fallback, which this version of hf2kh does not emit"
    )


def _routings(logits, correction, ks: list[int]):
    """(Moe fields, routing weights (batch, tokens, experts)) of every routing candidate, the
    plainest first: top k of the experts for each k of `ks`, within the best few of n groups
    (`ks` again) or not."""
    experts = logits.shape[-1]
    biases = [ChoiceBias.NONE]
    if correction is not None:
        biases += [ChoiceBias.SCORES, ChoiceBias.LOGITS]
    groups = [(1, 1)] + [
        (n, best) for n in range(2, experts // 2 + 1) if experts % n == 0 for best in ks if best < n
    ]
    for scoring, choice_bias, (n, best), k, normalize in itertools.product(
        MoeScoring, biases, groups, ks, (True, False)
    ):
        scores = torch.softmax(logits, -1) if scoring is MoeScoring.SOFTMAX else logits.sigmoid()
        choice = {
            ChoiceBias.NONE: scores,
            ChoiceBias.SCORES: scores + (correction if correction is not None else 0.0),
            ChoiceBias.LOGITS: logits + (correction if correction is not None else 0.0),
        }[choice_bias]
        if n > 1:
            choice = _best_groups(choice, n, best)
            if k > experts // n * best:
                continue
        index = torch.topk(choice, k, dim=-1).indices
        top = scores.gather(-1, index)
        if normalize:
            top = top / top.sum(dim=-1, keepdim=True)
        fields = dict(
            top_k=k,
            normalize_top_k=normalize,
            scoring=scoring,
            choice_bias=choice_bias,
            num_groups=n,
            top_k_groups=best,
        )
        yield fields, torch.zeros_like(scores).scatter(-1, index, top)


def _best_groups(choice, groups: int, best: int):
    """`choice` with the experts outside each token's `best` groups (a group scored by the sum
    of its two best experts) set to -inf."""
    grouped = choice.unflatten(-1, (groups, -1))
    group_scores = grouped.topk(2, dim=-1).values.sum(-1)
    chosen = group_scores.topk(best, dim=-1).indices
    keep = torch.zeros_like(group_scores).scatter(-1, chosen, 1.0).bool()
    return grouped.masked_fill(~keep[..., None], float("-inf")).flatten(-2)


def _experts(x, w_gate_up, w_down, layout: WeightLayout, activation: str, gate_first: bool):
    """Every expert's output on every token (batch, tokens, experts, hidden)."""
    linear = layout is WeightLayout.LINEAR
    fused = torch.einsum("bsh,eih->bsei" if linear else "bsh,ehi->bsei", x, w_gate_up)
    gate, up = fused.chunk(2, dim=-1)
    if not gate_first:
        gate, up = up, gate
    hidden = probes.ACTIVATIONS[activation](gate) * up
    return torch.einsum("bsei,ehi->bseh" if linear else "bsei,eih->bseh", hidden, w_down)


def describe(moe: Moe) -> str:
    choice = {
        ChoiceBias.NONE: "",
        ChoiceBias.SCORES: " chosen on the scores plus a correction bias",
        ChoiceBias.LOGITS: " chosen on the logits plus a correction bias",
    }[moe.choice_bias]
    text = (
        f"{moe.num_experts} gated {moe.activation.value} experts of {moe.intermediate_dim}, "
        f"top {moe.top_k} of {moe.scoring.value} scores{choice}"
    )
    if moe.num_groups > 1:
        text += f" in the best {moe.top_k_groups} of {moe.num_groups} groups"
    if moe.normalize_top_k:
        text += ", renormalized"
    if moe.routed_scale != 1.0:
        text += f", times {moe.routed_scale:g}"
    if moe.shared is not None:
        text += (
            f"; a shared gated {moe.shared.activation.value} expert of "
            f"{moe.shared.intermediate_dim}"
            + (" with a sigmoid gate" if moe.shared.gated_output else "")
        )
    return text


def args(moe: Moe, beside_mlp: bool = False) -> list[Arg]:
    """The block's arguments for its mixture of experts; `beside_mlp`: other layers have a dense
    MLP, which keeps the name `intermediate_dim` (the experts' width is `moe_intermediate_dim`)."""
    width = "moe_intermediate_dim" if beside_mlp else "intermediate_dim"
    found = [
        Arg(width, moe.intermediate_dim, "int. Width of each expert's MLP."),
        Arg("num_experts", moe.num_experts, "int. Experts of each mixture-of-experts layer."),
        Arg("num_experts_per_token", moe.top_k, "int. Experts each token is routed to."),
    ]
    if moe.num_groups > 1:
        found += [
            Arg("num_expert_groups", moe.num_groups, "int. Groups the experts are split into."),
            Arg(
                "num_expert_groups_per_token",
                moe.top_k_groups,
                "int. Best groups each token's experts are chosen from.",
            ),
        ]
    if moe.routed_scale != 1.0:
        doc = "float. Multiplies the routed experts' weights."
        found.append(Arg("routed_scaling_factor", moe.routed_scale, doc))
    if moe.shared is not None:
        doc = "int. Width of the shared expert's MLP."
        found.append(Arg("shared_intermediate_dim", moe.shared.intermediate_dim, doc))
    return found


def build_lines(moe: Moe, prefix: str, name: str, shape: str, beside_mlp: bool) -> list[str]:
    layer_args = [a.name for a in args(moe, beside_mlp)]
    layer_args[0] = f"intermediate_dim=self.{layer_args[0]}"
    return [
        f"self.{name} = {prefix}SparseMoe(",
        *(f"    {a}," if "=" in a else f"    {a}=self.{a}," for a in layer_args),
        "    kernel_initializer=self.kernel_initializer,",
        "    dtype=self.dtype_policy,",
        f'    name="{name}",',
        ")",
        f"self.{name}.build({shape})",
    ]


def doc(moe: Moe) -> list[str]:
    """The sparse MoE layer's docstring, after its first line: what this model's routing does."""
    scoring = "each its own sigmoid" if moe.scoring is MoeScoring.SIGMOID else "a softmax"
    text = (
        f"The router scores every expert ({scoring}); each token's `num_experts_per_token` best "
        "experts"
    )
    if moe.choice_bias is not ChoiceBias.NONE:
        on = "router logits" if moe.choice_bias is ChoiceBias.LOGITS else "scores"
        text += f" (chosen on the {on} plus a fixed correction bias)"
    if moe.num_groups > 1:
        text += ", taken from its `num_expert_groups_per_token` best of `num_expert_groups` groups,"
    text += " are weighted by their scores"
    if moe.normalize_top_k:
        text += ", renormalized to sum to 1"
    if moe.routed_scale != 1.0:
        text += ", times `routed_scaling_factor`"
    text += (
        f". Each expert computes `down({moe.activation.value}(gate(x)) * up(x))`. Every expert "
        "runs on every token and the routing weights (zero for the experts not chosen) combine "
        "them."
    )
    lines = textwrap.wrap(text, 92)
    if moe.shared is not None:
        shared = (
            f"A shared expert, `down({moe.shared.activation.value}(gate(x)) * up(x))` of width "
            "`shared_intermediate_dim`, runs on every token"
            + (
                ", scaled by the sigmoid of a one-unit projection,"
                if moe.shared.gated_output
                else ""
            )
            + " and is added."
        )
        lines += ["", *textwrap.wrap(shared, 92)]
    return lines


def text(moe: Moe) -> str:
    return (
        f"a sparse mixture of `num_experts` gated {moe.activation.value} experts, "
        "`num_experts_per_token` per token"
        + (", and a shared expert" if moe.shared is not None else "")
    )


def weight_rows(moe: Moe, weights: dict[str, str], hf, keras: str, shapes) -> list[WeightRow]:
    """The router (a model parameter), its correction bias, each expert's gate, up and down
    matrices (stored one by one under the names `stored_experts` found, or stacked: each
    expert's slice of the stacked tensors) and the shared expert's: one Keras `Dense` kernel
    each."""
    router = hf(weights["router"])
    shape = tuple(shapes[router])
    rows = [_kernel(router, shape, f"{keras}/{ROUTER}")]
    if "correction_bias" in weights:
        name = hf(weights["correction_bias"])  # a buffer: not among the parameter `shapes`
        bias_shape = (moe.num_experts,)
        rows.append(WeightRow(name, bias_shape, f"{keras}/{CORRECTION_BIAS}", bias_shape, ()))
    hidden, inner = shape[1], moe.intermediate_dim
    for expert in range(moe.num_experts):
        for role, part in (("gate", (inner, hidden)), ("up", (inner, hidden)),
                           ("down", (hidden, inner))):  # fmt: skip
            path = f"{keras}/{EXPERT.format(expert=expert, role=role)}"
            if "experts_down" not in weights:  # one by one
                rows.append(_kernel(hf(weights[f"expert_{role}"]).format(expert), part, path))
                continue
            stacked = hf(weights["experts_down" if role == "down" else "experts_gate_up"])
            linear = moe.expert_layout is WeightLayout.LINEAR
            ops = [{"op": "take", "axis": 0, "index": expert}]
            if role != "down":
                half = 0 if (role == "gate") == moe.gate_first else 1
                axis = 0 if linear else 1
                ops.append({"op": "split", "axis": axis, "sizes": [inner, inner], "index": half})
            if linear:
                rows.append(_kernel(stacked, tuple(shapes[stacked]), path, part, ops))
            else:  # stored (in, out): already the kernel
                kernel = part[::-1]
                rows.append(
                    WeightRow(stacked, tuple(shapes[stacked]), f"{path}/kernel", kernel, tuple(ops))
                )
    if moe.shared is not None:
        rows += _shared_rows(moe, weights, hf, keras, shapes)
    return rows


def _shared_rows(moe: Moe, weights, hf, keras: str, shapes) -> list[WeightRow]:
    rows = []
    inner = moe.shared.intermediate_dim
    for role, path in weights.items():
        if not role.startswith("shared_") or role == "shared_output_gate":
            continue
        name = f"{hf(path)}.weight"
        shape = tuple(shapes[name])
        role = role.removeprefix("shared_")
        if role.startswith("gate_up:"):  # fused [gate | up] (or [up | gate]) rows
            gate_half = int(role.split(":")[1])
            for part, half in (("gate", gate_half), ("up", 1 - gate_half)):
                split = {"op": "split", "axis": 0, "sizes": [inner, inner], "index": half}
                out = (inner, shape[1])
                rows.append(
                    _kernel(name, shape, f"{keras}/{SHARED.format(role=part)}", out, [split])
                )
        else:
            rows.append(_kernel(name, shape, f"{keras}/{SHARED.format(role=role)}"))
    if moe.shared.gated_output:
        name = hf(weights["shared_output_gate"])
        rows.append(_kernel(name, tuple(shapes[name]), f"{keras}/{SHARED_GATE}"))
    return rows


def _kernel(name: str, shape, layer: str, part=None, ops=()) -> WeightRow:
    """A `Linear` matrix (out, in), or the `part` of it `ops` select, as the kernel (in, out)
    of the Keras `Dense` `layer`."""
    part = tuple(part or shape)
    return WeightRow(name, tuple(shape), f"{layer}/kernel", part[::-1], (*ops, {"op": "transpose"}))
