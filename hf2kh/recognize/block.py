"""Read a block's steps from the recorded dataflow: `let out = component(inputs)` and `add`.

Every call the block makes at its own level is accounted for: a child that is a component
(attention, norm, MLP module), a group of sibling projections with the activation between them
(an MLP spread over the block, as OPT's `fc1`/`fc2`), a residual `add`, or an op that only moves
data (view, dropout). Anything else stops the port naming the op: leaving it out would compute
something else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hf2kh.components import attention as attention_component
from hf2kh.components import mlp as mlp_component
from hf2kh.components import moe as moe_component
from hf2kh.components import norm as norm_component
from hf2kh.components import scale as scale_component
from hf2kh.components.base import (
    ADDS,
    before_post_norm,
    check_output_is,
    explain_ops,
    post_norm_inside,
    pre_norm_inside,
    residual_inside,
)
from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.dataflow import PASSTHROUGH, Step, block_steps, calls_within, first_call
from hf2kh.inspect.graph import Call
from hf2kh.ir import (
    Add,
    Attention,
    BlockType,
    Component,
    Let,
    Mlp,
    Moe,
    Norm,
    Scale,
    SharedExpert,
    WeightLayout,
)
from hf2kh.recognize import not_run as not_run_component
from hf2kh.recognize.graph_view import GraphView


@dataclass
class _Draft:
    """Steps over value ids, before values get names."""

    steps: list[tuple[str, int, str | None, tuple[int, ...]]] = field(default_factory=list)
    # (kind "let"/"add"/"scale", output value, component key ("scale:" for a scale) or None,
    # input values)
    components: dict[str, tuple[tuple[str, ...], object, dict[str, str], str]] = field(
        default_factory=dict
    )  # key -> (hf paths, spec, weights by role, hf class)
    factors: dict[int, float] = field(default_factory=dict)  # scale step output -> its factor


def recognize_block(
    G: GraphView, block: str, hidden_dim: int, rope, evidence: list[str], causal: bool = True
):
    """The `BlockType` of `block` (a full module path); `causal`: what the reach probe measured
    (`hf2kh.recognize.layers.attention_reach`)."""
    head = first_call(G.g, block)
    block_in, block_out = head.inputs[0], head.outputs[0]
    alias: dict[int, int] = {}

    def val(v: int) -> int:
        while v in alias:
            v = alias[v]
        return v

    draft = _Draft()
    group: list[Call] = []  # an open group of sibling MLP calls

    def close_group() -> None:
        if group:
            _sibling_mlp(G, block, group, hidden_dim, draft, val, evidence)
            group.clear()

    def group_values() -> set[int]:
        made = {val(o) for c in group for o in c.outputs[:1]}
        return made | {val(group[0].inputs[0])}

    for step in _steps(G, block):
        call = step.call
        rel = step.name
        if (call.kind == "module" and _is_passthrough_module(G, call.target)) or (
            call.kind == "function" and call.target in PASSTHROUGH
        ):
            if call.inputs and call.outputs and val(call.inputs[0]) != call.outputs[0]:
                alias[call.outputs[0]] = val(call.inputs[0])
            continue
        reads_group = bool(group) and any(val(i) in group_values() for i in call.inputs)
        if call.kind == "module" and G.is_projection(call.target):
            if group and not reads_group:
                close_group()
            group.append(call)
            continue
        if group and reads_group and call.target not in ADDS and not _is_component(G, call):
            group.append(call)
            continue
        close_group()
        if call.kind == "module":
            _module_step(G, block, rel, call, hidden_dim, rope, draft, val, evidence, causal)
        elif call.target in ADDS and len(call.inputs) == 2:
            draft.steps.append(("add", call.outputs[0], None, tuple(val(i) for i in call.inputs)))
        elif scale_component.is_scale(call):
            draft.factors[call.outputs[0]] = scale_component.factor(block, call)
            draft.steps.append(("scale", call.outputs[0], "scale:", (val(call.inputs[0]),)))
        else:
            raise UnsupportedModelError(
                f"op `{call.target}` in {block} is not explained by any recognized component; "
                "porting without it would compute something else"
            )
    close_group()
    out = _fold_shared_mlp(block, draft, val(block_out), evidence)
    named = _named(G, block, draft, val(block_in), out)
    not_run = not_run_component.recognize(G, block, named.components, hidden_dim, evidence)
    return dataclasses.replace(named, not_run=not_run) if not_run else named


def _steps(G: GraphView, block: str, scope: str | None = None) -> list[Step]:
    """The block's own calls, in order, with each part of an MLP spread over sibling modules
    (BERT's `intermediate`: dense, activation; `output`: dense, residual add, norm) opened: its
    calls are read as the block's."""
    found = []
    for step in block_steps(G.g, scope or block, include_passthrough=True):
        call = step.call
        if call.kind == "module" and _is_mlp_part(G, call.target):
            found += _steps(G, block, call.target)
        else:
            found.append(Step(call, call.target[len(block) + 1 :]) if step.is_module else step)
    return found


def _is_mlp_part(G: GraphView, path: str) -> bool:
    """A parameterless container of exactly one projection (and norms): half of an MLP whose
    other half is a sibling, not an MLP or attention of its own."""
    children = [c for c in G.g.module(path).children if G.subtree_params(c)]
    projections = [c for c in children if G.is_projection(c)]
    return (
        not G.own_params(path)
        and len(projections) == 1
        and all(G.is_projection(c) or G.is_norm(c) for c in children)
        and not attention_component.is_attention(G, path)
    )


def _is_passthrough_module(G: GraphView, path: str) -> bool:
    """A parameterless child that only moves data (dropout at inference, identity)."""
    if G.subtree_params(path):
        return False
    return all(c.target in PASSTHROUGH for c in calls_within(G.g, path) if c.kind == "function")


def _is_component(G: GraphView, call: Call) -> bool:
    return call.kind == "module" and bool(G.subtree_params(call.target))


def _module_step(G, block, rel, call, hidden_dim, rope, draft, val, evidence, causal) -> None:
    path = call.target
    cls = type(G.submodule(path)).__name__
    # A sublayer that adds the residual itself (BLOOM) is the component and an `add` step; one
    # that also normalizes the sum (BERT's attention) adds a norm step after it.
    post_norm = post_norm_inside(G, path, call)
    out, residual, tail = residual_inside(G, path, before_post_norm(G, path, call))
    source = val(call.inputs[0])
    if post_norm is not None and residual is None:
        raise UnsupportedModelError(
            f"{path}: ends in the norm {post_norm[0]} of something other than a residual sum"
        )
    if moe_component.is_moe(G, path, hidden_dim):  # before attention: its router has a softmax too
        spec, weights = moe_component.recognize(G, path, hidden_dim, evidence)
        kind = "mlp"
    elif attention_component.is_attention(G, path):
        path = _innermost_attention(G, path)
        spec, weights = attention_component.recognize(
            G, path, hidden_dim, rope, evidence, causal=causal
        )
        kind = "attention"
        # a pre-norm encoder normalizes the attention's input inside the attention module: that
        # norm is the step before it, the attention reads its output
        pre_norm = pre_norm_inside(G, path, call)
        if pre_norm is not None:
            _norm_step(G, block, pre_norm[0], pre_norm[1], val(call.inputs[0]), draft)
            source = pre_norm[1]
    elif G.is_norm(path):
        spec = norm_component.recognize(G, path, G.g.value(call.inputs[0]).shape[-1])
        weights, kind = {"norm": path}, "norm"
    elif G.subtree_params(path):
        projections = [c for c in G.g.module(path).children if G.is_projection(c)]
        calls = [c for c in calls_within(G.g, path) if c not in tail]
        spec, weights = mlp_component.recognize(
            G, path, projections, calls, out, hidden_dim, evidence
        )
        check_output_is(G, path, weights["down"], residual_ok=True)
        kind = "mlp"
    else:
        raise UnsupportedModelError(
            f"{path} ({cls}) in {block} is not explained by any recognized component"
        )
    key = f"{kind}:{rel}"
    rel_weights = {role: p[len(block) + 1 :] for role, p in weights.items()}
    draft.components[key] = ((rel,), spec, rel_weights, cls)
    draft.steps.append(("let", out, key, (source,)))
    if residual is not None:
        summed = call.outputs[0] if post_norm is None else post_norm[1]
        draft.steps.append(("add", summed, None, (val(residual), out)))
    if post_norm is not None:
        _norm_step(G, block, post_norm[0], call.outputs[0], post_norm[1], draft)


def _norm_step(G, block: str, norm_path: str, out: int, source: int, draft) -> None:
    """`out = norm(source)` for a norm inside a sublayer's module (BERT's post-norm after the
    residual add, a pre-norm encoder's norm of the attention's input)."""
    spec = norm_component.recognize(G, norm_path, G.g.value(source).shape[-1])
    norm_rel = norm_path[len(block) + 1 :]
    norm_key = f"norm:{norm_rel}"
    cls = type(G.submodule(norm_path)).__name__
    draft.components[norm_key] = ((norm_rel,), spec, {"norm": norm_rel}, cls)
    draft.steps.append(("let", out, norm_key, (source,)))


def _innermost_attention(G: GraphView, path: str) -> str:
    """A wrapper whose only child with parameters is the attention (GPT-Neo's `attn.attention`)
    is looked through, provided it computes nothing itself."""
    children = [c for c in G.g.module(path).children if G.subtree_params(c)]
    if len(children) == 1 and attention_component.is_attention(G, children[0]):
        own = [c for c in calls_within(G.g, path) if c.scope == path]
        explain_ops(path, own, PASSTHROUGH)
        return _innermost_attention(G, children[0])
    return path


def _sibling_mlp(G, block, group: list[Call], hidden_dim, draft, val, evidence) -> None:
    projections = [c.target for c in group if c.kind == "module" and G.is_projection(c.target)]
    last = group[-1]
    if not (last.kind == "module" and G.is_projection(last.target)):
        raise UnsupportedModelError(
            f"{block}: `{last.target}` after the projections {projections} is not explained"
        )
    nested = [c for g in group if g.kind == "module" for c in calls_within(G.g, g.target)]
    spec, weights = mlp_component.recognize(
        G, block, projections, [*group, *nested], last.outputs[0], hidden_dim, evidence
    )
    rels = tuple(p[len(block) + 1 :] for p in projections)
    key = f"mlp:{'+'.join(rels)}"
    rel_weights = {role: p[len(block) + 1 :] for role, p in weights.items()}
    draft.components[key] = (rels, spec, rel_weights, "(sibling modules)")
    draft.steps.append(("let", last.outputs[0], key, (val(group[0].inputs[0]),)))


def _fold_shared_mlp(block: str, draft: _Draft, block_out: int, evidence: list[str]) -> int:
    """A mixture of experts and a gated MLP that read the same value and whose outputs the block
    adds (GraniteMoeShared's `block_sparse_moe` and `shared_mlp`) are one mixture of experts
    with a shared expert. Returns the block's output value (the sum's, if it was)."""
    moes = [k for k, c in draft.components.items() if isinstance(c[1], Moe) and not c[1].shared]
    mlps = [k for k, c in draft.components.items() if isinstance(c[1], Mlp)]
    if len(moes) != 1 or len(mlps) != 1:
        return block_out
    lets = {key: (out, inputs) for kind, out, key, inputs in draft.steps if kind == "let"}
    (moe_out, moe_in), (mlp_out, mlp_in) = lets[moes[0]], lets[mlps[0]]
    summed = next(
        (out for kind, out, _, inputs in draft.steps
         if kind == "add" and sorted(inputs) == sorted((moe_out, mlp_out))),
        None,
    )  # fmt: skip
    mlp = draft.components[mlps[0]][1]
    if summed is None or moe_in != mlp_in or not mlp.gated or mlp.bias:
        return block_out
    if mlp.weight_layout is not WeightLayout.LINEAR:
        return block_out
    paths, spec, weights, cls = draft.components[moes[0]]
    mlp_paths, _, mlp_weights, _ = draft.components.pop(mlps[0])
    spec = dataclasses.replace(spec, shared=SharedExpert(mlp.intermediate_dim, mlp.activation))
    shared = {f"shared_{role}": path for role, path in mlp_weights.items()}
    draft.components[moes[0]] = (paths + mlp_paths, spec, {**weights, **shared}, cls)
    rename = {summed: moe_out}
    draft.steps = [
        (kind, out, key, tuple(rename.get(v, v) for v in inputs))
        for kind, out, key, inputs in draft.steps
        if key != mlps[0] and out != summed
    ]
    evidence.append(
        f"{block}: {'+'.join(mlp_paths)} reads the mixture of experts' input and is added to its "
        "output: its shared expert"
    )
    return rename.get(block_out, block_out)


# -- names ---------------------------------------------------------------------------------------


def _kind(key: str) -> str:
    return key.split(":", 1)[0]


def _named(G: GraphView, block: str, draft: _Draft, block_in: int, block_out: int) -> BlockType:
    """Give values readable names (`x` the residual stream, `h` a normalized input, `attention`,
    `feedforward`) and components their Keras layer names."""
    steps = draft.steps
    producer = {out: k for k, (_, out, _, _) in enumerate(steps)}
    uses: dict[int, list[int]] = {}
    for k, (_, _, _, inputs) in enumerate(steps):
        for v in inputs:
            uses.setdefault(v, []).append(k)
    uses.setdefault(block_out, []).append(len(steps))
    if {i for s in steps for i in s[3]} - set(producer) - {block_in}:
        raise UnsupportedModelError(f"{block}: a step reads a value the block did not compute")

    def base(k: int) -> str:
        kind, out, key, inputs = steps[k]
        if kind == "add":
            # the residual stream, or the sum of two sublayer outputs (parallel blocks)
            return "x" if any(_on_stream(v) for v in inputs) else "branches"
        if kind == "scale":  # a scaled value keeps its name (`attention = attention * s`)
            return base(producer[inputs[0]]) if inputs[0] in producer else "x"
        comp = _kind(key)
        if comp == "attention":
            return "attention"
        if comp == "mlp":
            return "feedforward"
        source = inputs[0]
        if source in producer and _kind(steps[producer[source]][2] or "add:") in (
            "attention",
            "mlp",
        ):
            return base(producer[source])  # sandwich norm on a sublayer's output
        readers = [steps[r] for r in uses.get(out, []) if r < len(steps)]
        if out == block_out or any(r[0] == "add" for r in readers):
            return "x"  # post-norm: the normalized value is the residual stream
        return "h"

    def _on_stream(v: int) -> bool:
        if v == block_in:
            return True
        k = producer.get(v)
        return k is not None and base(k) == "x"

    names: dict[int, str] = {block_in: "x"}
    holder: dict[str, int] = {"x": block_in}
    for k, (_, out, _, _) in enumerate(steps):
        name, n = base(k), 1
        candidate = name
        while candidate in holder and any(u > k for u in uses.get(holder[candidate], [])):
            n += 1
            candidate = f"{name}_{n}"
        names[out] = candidate
        holder[candidate] = out

    feedforwards = [
        p for p, spec, _, _ in draft.components.values() if isinstance(spec, (Mlp, Moe))
    ]
    if len(feedforwards) > 1:  # e.g. a mixture of experts and a shared MLP beside it, summed
        raise UnsupportedModelError(
            f"{block}: expected one MLP or mixture of experts, found {feedforwards}"
        )
    component_names = _component_names(draft, steps, block_out)
    components = tuple(
        Component(
            name=component_names[key],
            hf_paths=paths,
            hf_class=cls,
            spec=spec,
            weights=tuple(weights.items()),
        )
        for key, (paths, spec, weights, cls) in draft.components.items()
    )
    ir_steps = []
    for kind, out, key, inputs in steps:
        if kind == "add":
            ir_steps.append(Add(names[out], (names[inputs[0]], names[inputs[1]])))
        elif kind == "scale":
            value = names[inputs[0]]
            name = scale_component.arg_name(value)
            ir_steps.append(Scale(names[out], value, draft.factors[out], name))
        else:
            ir_steps.append(Let(names[out], component_names[key], tuple(names[i] for i in inputs)))
    _check_one_each(block, components)
    return BlockType(
        hf_class=type(G.submodule(block)).__name__,
        components=components,
        steps=tuple(ir_steps),
        output=names[block_out],
    )


def _component_names(draft: _Draft, steps, block_out: int) -> dict[str, str]:
    """Keras layer names: `self_attention`, `feedforward`, and norms by where they sit."""
    producer = {out: key for _, out, key, _ in steps}
    readers: dict[int, list[str]] = {}
    for _, _, key, inputs in steps:
        for v in inputs:
            readers.setdefault(v, []).append(key or "add")
    names: dict[str, str] = {}
    taken: set[str] = set()

    def claim(key: str, *options: str) -> None:
        for option in options:
            if option not in taken:
                names[key] = option
                taken.add(option)
                return
        raise AssertionError(f"no layer name for {key}")

    for kind, out, key, inputs in steps:
        if kind != "let" or key in names:
            continue
        comp = _kind(key)
        if comp == "attention":
            claim(key, "self_attention")
        elif comp == "mlp":
            claim(key, "feedforward")
        else:
            feeds = {_kind(r) for r in readers.get(out, []) if r != "add"}
            source = _kind(producer.get(inputs[0]) or "add:")
            # post-norm: the normalized sum is the residual stream from here on
            on_stream = out == block_out or "add" in readers.get(out, [])
            after = _added_branch(steps, inputs[0]) if on_stream else None
            if source == "attention":
                claim(key, "post_attention_layernorm")
            elif source == "mlp":
                claim(key, "post_feedforward_layernorm")
            elif after == "attention":
                claim(key, "self_attention_layernorm", "self_attention_output_layernorm")
            elif after == "mlp":
                claim(key, "feedforward_layernorm", "feedforward_output_layernorm")
            elif "attention" in feeds:
                claim(key, "self_attention_layernorm", f"{key}_layernorm")
            elif "mlp" in feeds:
                claim(key, "feedforward_layernorm", "feedforward_input_layernorm")
            else:
                claim(key, *(f"layernorm_{n}" for n in range(len(steps))))
    return names


def _added_branch(steps, value: int) -> str | None:
    """For the output of a residual add: the kind of the sublayer it added, if any."""
    producer = {out: (kind, key, inputs) for kind, out, key, inputs in steps}
    kind, _, inputs = producer.get(value, (None, None, ()))
    if kind != "add":
        return None
    for v in inputs:
        source = producer.get(v)
        while source and _kind(source[1] or "add:") in ("norm", "scale"):
            source = producer.get(source[2][0])
        if source and source[0] == "let":
            return _kind(source[1])
    return None


def _check_one_each(block: str, components: tuple[Component, ...]) -> None:
    attentions = [c for c in components if isinstance(c.spec, Attention)]
    mlps = [c for c in components if isinstance(c.spec, (Mlp, Moe))]
    if len(attentions) != 1:
        raise UnsupportedModelError(f"{block}: expected one attention, found {len(attentions)}")
    if len(mlps) != 1:
        raise UnsupportedModelError(
            f"{block}: expected one MLP, found {[c.hf_paths for c in mlps]}"
        )
    norms = {c.spec for c in components if isinstance(c.spec, Norm)}
    if len({(n.kind, n.scale_offset) for n in norms}) > 1:
        raise UnsupportedModelError(f"{block}: norms of different kinds in one block")
