"""Recognize a decoder-only language model from its layer graph, into the model IR, by evidence.

Roles come from the recorded dataflow: the module reading `input_ids` is the token embedding,
repeated blocks are read step by step (`hf2kh.recognize.block`), the projection producing
vocabulary logits after the last block is the head. Kinds come from numeric probes, sizes and
constants from parameter shapes and the modules' own settings. `model_type` and class names are
only reported, never decided on.
"""

from __future__ import annotations

import math

import torch

from hf2kh.components import classifier_head, head_transform, relative_attention
from hf2kh.components import norm as norm_component
from hf2kh.components import rope as rope_component
from hf2kh.components import scale as scale_component
from hf2kh.components import softcap as softcap_component
from hf2kh.components.base import explain_ops
from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.dataflow import PASSTHROUGH, first_call
from hf2kh.inspect.graph import LayerGraph
from hf2kh.ir import (
    BlockType,
    EmbeddingNormInput,
    Head,
    LayerOptions,
    ModelIR,
    Positions,
    Stem,
    Task,
)
from hf2kh.recognize import layers as layers_probe
from hf2kh.recognize import probes, stem_tables
from hf2kh.recognize.block import recognize_block
from hf2kh.recognize.graph_view import GraphView

# What may happen to the hidden states between the last block and the logits, besides the final
# norm and the head modules.
HEAD_OPS = PASSTHROUGH | {"__getitem__", "float"}


def recognize_model(
    graph: LayerGraph, model: torch.nn.Module, config, *, name: str, source: str, revision
) -> ModelIR:
    G = GraphView(graph, model)
    evidence = [f"reported by the checkpoint (not used to decide): model_type={graph.model_type!r}"]

    # -- embeddings ------------------------------------------------------------------------
    input_value = next(v.id for v in graph.values if v.source == "input:input_ids")
    module_calls = [c for c in graph.calls if c.kind == "module"]
    embed = next(
        (
            c.target
            for c in module_calls
            if c.inputs and G.derives(c.inputs[0], input_value) and G.is_projection(c.target)
        ),
        None,
    )
    if embed is None:
        raise UnsupportedModelError("no module reads input_ids through an embedding table")
    vocab_size, embedding_dim = G.own_params(embed)["weight"]
    evidence.append(f"token embedding: {embed} reads input_ids, table {vocab_size}x{embedding_dim}")

    if not graph.block_groups:
        raise UnsupportedModelError("no repeated transformer blocks found")
    group = max(graph.block_groups, key=lambda g: len(g.indices))
    blocks = [group.block(i) for i in group.indices]
    block0 = blocks[0]
    if not group.shared and any(len(graph.module(b).calls) > 1 for b in blocks):
        raise UnsupportedModelError(
            f"the blocks {group.container}.N are each called more than once (layers sharing "
            "blocks in groups): not supported yet"
        )
    if group.shared:
        evidence.append(
            f"one block {block0} ({group.class_name}) computes all {len(blocks)} layers: "
            "called once per layer, each call reading the previous one's output"
        )
    block_call = first_call(graph, block0)
    last_block_call = graph.calls[graph.module(blocks[-1]).calls[-1]]
    _refuse_modules_between_blocks(G, group.container, block_call, last_block_call)

    stem_modules = [
        c.target
        for c in module_calls
        if c.index < block_call.index and not c.target.startswith(f"{group.container}.")
    ]
    hidden_dim = graph.value(block_call.inputs[0]).shape[-1]
    embedding_projection = None
    projection_bias = False
    if hidden_dim != embedding_dim:
        embedding_projection = _projection_between(
            G,
            stem_modules,
            first_call(graph, embed).outputs[0],
            (hidden_dim, embedding_dim),
            bias_ok=True,
        )
        projection_bias = "bias" in G.own_params(embedding_projection)
        evidence.append(
            f"token embeddings projected from {embedding_dim} to {hidden_dim} by "
            f"{embedding_projection}" + (" (with a bias)" if projection_bias else "")
        )
    positions = [
        p
        for p in stem_modules
        if p not in (embed, embedding_projection)
        and G.is_projection(p)
        and G.own_params(p)["weight"][-1] in (hidden_dim, embedding_dim)
        and (
            stem_tables.lookup_index(G, p) is None
            or not G.derives(stem_tables.lookup_index(G, p), input_value)
            or stem_tables.padding_id(G, p, input_value) is not None
        )
    ]
    embedding_out = first_call(graph, embed).outputs[0]
    embedding_norms = [
        p
        for p in stem_modules
        if G.is_norm(p) and G.derives(first_call(graph, p).inputs[0], embedding_out)
    ]
    if len(embedding_norms) > 1:
        raise UnsupportedModelError(f"more than one norm of the embeddings: {embedding_norms}")
    embedding_norm_path = embedding_norms[0] if embedding_norms else None
    rotary = [
        p
        for p in stem_modules
        if not G.subtree_params(p)
        and not G.own_params(p)
        and any(
            set(graph.calls[k].outputs) & set(first_call(graph, b).inputs[1:])
            for k in graph.module(p).calls
            for b in blocks
        )
    ]
    after = [c for c in graph.calls if c.index > last_block_call.index]
    after = [c for c in after if c.scope != blocks[-1] and not c.scope.startswith(f"{blocks[-1]}.")]
    after_modules = [c for c in after if c.kind == "module"]
    head = next(
        (
            c.target
            for c in after_modules
            if graph.value(c.outputs[0]).shape[-1] == vocab_size and G.is_projection(c.target)
        ),
        None,
    )
    classifier = None
    if head is None:
        classifier = classifier_head.recognize(
            G, after, last_block_call.outputs[0], hidden_dim, vocab_size, evidence
        )
        if classifier is not None:
            head = classifier.head

    # -- what each block receives: masks, rotary tables (a CPU run of the stem) -----------------
    # probed on more tokens than any window the config may hold spans (only the probe's length:
    # what a block reads is measured); a bidirectional one (ModernBERT's `local_attention`) spans
    # twice its half-width
    windows = [
        v for k, v in vars(config).items() if ("window" in k or "local" in k) and type(v) is int
    ]
    # and on more tokens than a relative-position table handed to the blocks has rows, so that
    # DeBERTa's log buckets (from half the buckets on) show in the relative positions it reads
    relative_rows = [
        graph.value(v).shape[0]
        for v in block_call.inputs[1:]
        if len(graph.value(v).shape) == 2 and graph.value(v).dtype.startswith("float")
    ]
    spans = [*(2 * w + 1 for w in windows), *(rows + 2 for rows in relative_rows)]
    length = min(max([64, *spans]), 8193)
    stem, length = _run_stem(
        model,
        embed,
        block0,
        (group.container, *([head] if head else [])),
        length,
        evidence,
        projection=embedding_projection,
        blocks=tuple(dict.fromkeys(blocks)),
        norm=embedding_norm_path,
        tables=tuple(positions),
    )
    G.block_inputs = stem["inputs"]
    pads = {p: stem_tables.padding_id(G, p, input_value) for p in positions}
    position_path, token_types, position_padding_id = stem_tables.classify(stem, positions, pads)
    # ELECTRA projects the embeddings after adding positions and token types and normalizing
    project_last = embedding_projection is not None and any(
        G.derives(G.inp(embedding_projection), G.out(p))
        for p in [*positions, *([embedding_norm_path] if embedding_norm_path else [])]
    )
    stem["project_last"] = project_last
    if project_last:
        evidence.append(f"{embedding_projection} projects the summed (and normalized) embeddings")
    if position_padding_id is not None:
        evidence.append(
            f"positions counted from the token ids: {position_path} row "
            f"{position_padding_id} + cumsum(input_ids != {position_padding_id}) (dataflow, probed)"
        )
    positions = [position_path] if position_path else []
    if position_path:
        stem["position"] = stem[f"table:{position_path}"]
        stem["position_table"] = stem[f"rows:{position_path}"]
    type_vocab_size = None
    if token_types:
        stem["token_types"] = stem[f"table:{token_types}"]
        type_vocab_size = G.own_params(token_types)["weight"][0]
        evidence.append(
            f"token types: {token_types} ({type_vocab_size} rows), read at one row for every "
            "token when none are given (probed)"
        )
    embedding_norm, norm_reads = None, EmbeddingNormInput.SUM
    if embedding_norm_path is not None:
        width = G.g.value(G.inp(embedding_norm_path)).shape[-1]
        norm_reads = _embedding_norm_input(
            G, embedding_norm_path, positions, token_types, embedding_projection
        )
        embedding_norm = norm_component.recognize(G, embedding_norm_path, width)
        evidence.append(
            f"embedding norm {embedding_norm_path}: {norm_component.describe(embedding_norm)}"
            + (
                ", of the token embeddings alone (the positions are added to its output)"
                if norm_reads is EmbeddingNormInput.TOKENS
                else ""
            )
        )
    stem["norm_reads"] = norm_reads

    # -- blocks: a few block types and the type of each layer ----------------------------------
    block_types: list[BlockType] = []
    layers: list[int] = []
    first_of_variant = {v.indices[0]: v for v in group.variants}
    type_of_variant: dict[int, int] = {}
    rope = None
    window_of: dict[int, int | None] = {}
    for variant_start, variant in first_of_variant.items():
        path = group.block(variant_start)
        if rotary:
            rope = rope_component.recognize_table(
                f"the rotary tables {path} receives",
                layers_probe.rotary_tables(stem["inputs"][path], length),
                config,
            )
        reach = layers_probe.attention_reach(model, path, stem["inputs"][path], length)
        window = reach.window
        for i in variant.indices:
            window_of[i] = window
        if window is not None and not reach.causal:
            evidence.append(
                f"{path}: every position reads the positions less than {window} away on either "
                "side (a bidirectional sliding window, probed)"
            )
        elif window is not None:
            evidence.append(f"{path}: attends to a sliding window of {window} tokens (probed)")
        elif not reach.causal:
            evidence.append(f"{path}: every position reads every other (bidirectional, probed)")
        block = recognize_block(G, path, hidden_dim, rope, evidence, causal=reach.causal)
        if block not in block_types:
            block_types.append(block)
        for i in variant.indices:
            type_of_variant[i] = block_types.index(block)
    layers = [type_of_variant[i] for i in group.indices]
    evidence.append(
        f"{len(blocks)} layers of the shared block {group.container} ({group.class_name})"
        if group.shared
        else f"{len(blocks)} blocks {group.container}.N ({group.class_name}), "
        f"{len(block_types)} block type(s)"
    )
    for k, block in enumerate(block_types):
        evidence.append(f"block type {k}: " + "; ".join(_step_text(s) for s in block.steps))
    for block in block_types:
        if block.attention.rope is not None:
            evidence.append(rope_component.describe(block.attention.rope, block.attention.head_dim))

    # -- final norm and head -----------------------------------------------------------------
    pooler = None
    if head is None:  # a bare encoder: at most a pooler after the blocks, which is not ported
        pooler, explained_pooler = classifier_head.recognize_bare_pooler(
            G, after, last_block_call.outputs[0], evidence
        )
        transform, transformed = None, explained_pooler
    elif classifier:
        transform, transformed = None, classifier.explained
    else:
        transform, transformed = head_transform.recognize(
            G, after, head, last_block_call.outputs[0], evidence
        )
        # a pooler the LM head does not read (BigBird's masked LM runs its model's pooler):
        # accounted for, its weights declared unused
        pooler, explained_pooler = classifier_head.recognize_bare_pooler(
            G, after, last_block_call.outputs[0], evidence
        )
        if pooler is not None and G.derives(G.out(head), G.out(pooler)):
            raise UnsupportedModelError(f"the LM head {head} reads the pooler {pooler}")
        transformed = transformed + explained_pooler
    output_projection = None
    if (
        head is not None
        and hidden_dim != embedding_dim
        and (transform is None or transform.dim != embedding_dim)
    ):
        output_projection = _projection_between(
            G,
            [c.target for c in after_modules if c.target != head],
            last_block_call.outputs[0],
            (embedding_dim, hidden_dim),
        )
        evidence.append(f"final hidden states projected to {embedding_dim} by {output_projection}")
    final_norm_path = next(
        (
            c.target
            for c in after_modules
            if G.is_norm(c.target) and (transform is None or c.target != transform.hf_norm)
        ),
        None,
    )
    final_norm = None
    if final_norm_path is not None:
        final_norm = norm_component.recognize(G, final_norm_path, hidden_dim)
        evidence.append(f"final norm {final_norm_path}: {norm_component.describe(final_norm)}")
    inside = [final_norm_path, output_projection, head]
    own = [
        c for c in after if c.scope == "" or not any(p and c.scope.startswith(p) for p in inside)
    ]
    logits = first_call(graph, head).outputs[0] if head else None
    chain = [
        c
        for c in own
        if head and c.kind == "function" and c.outputs and G.derives(c.outputs[0], logits)
    ]
    logit_softcap, capped = softcap_component.find("the head", chain)
    if logit_softcap is not None:
        evidence.append(f"final logits softcapped at {logit_softcap:g}")
    scales = [c for c in chain if c not in capped and scale_component.is_scale(c)]
    logit_scale = None
    for c in scales:
        logit_scale = (logit_scale or 1.0) * scale_component.factor("the head", c)
    if logit_scale is not None:
        evidence.append(f"final logits scaled by {logit_scale:.6g}")
        if logit_softcap is not None:
            raise UnsupportedModelError(
                "the head both scales and softcaps the logits: not supported yet"
            )
    explained = capped + transformed + scales
    explain_ops("the head", [c for c in own if c not in explained], HEAD_OPS)
    tied_names = {t.name: t.target for t in graph.tied}
    tied = (
        head is not None
        and (  # recorded either way round (XLM-RoBERTa's embedding is tied to its decoder)
            tied_names.get(f"{head}.weight") == f"{embed}.weight"
            or tied_names.get(f"{embed}.weight") == f"{head}.weight"
        )
    )
    head_bias = head is not None and "bias" in G.own_params(head)
    if classifier is None and head is not None:
        evidence.append(
            f"LM head {head}: {'tied to' if tied else 'separate from'} the token embedding"
            + (", with a bias" if head_bias else "")
        )

    task = _task(block_types, transform, head, classifier is not None)
    if group.shared and task is Task.CAUSAL_LM:
        raise UnsupportedModelError(
            f"a causal LM sharing one block {block0} among its layers: not supported yet"
        )
    if task is Task.BASE:
        evidence.append("no head: a bare bidirectional encoder, ported as its backbone")
    if task is Task.MASKED_LM:
        evidence.append(
            f"masked-LM head {head}: bidirectional blocks, "
            + ("a transform before it" if transform else "reading the final hidden states")
        )

    # -- positions, embedding scale, windows ---------------------------------------------------
    max_positions = None
    if positions:
        max_positions = G.own_params(positions[0])["weight"][0]
        evidence.append(f"learned positions: {positions[0]} ({max_positions} rows)")
    sinusoid = None
    relative_table, relative_norm, relative_norm_path = _relative_table(
        G, block_types, block_call, hidden_dim, evidence
    )
    if not positions and not any(
        b.attention.rope or b.attention.alibi or b.attention.relative for b in block_types
    ):
        sinusoid = stem_tables.sinusoid_base(stem)
        if sinusoid is None:
            raise UnsupportedModelError(
                "no position information found (no rope, no learned positions, no fixed sinusoids)"
            )
        block_in = stem["block"]
        stem["position"] = stem_tables.sinusoid(block_in.shape[-2], block_in.shape[-1], sinusoid)
        evidence.append(
            f"fixed sinusoidal positions (base {sinusoid:g}, sines then cosines) added to the "
            "token embeddings: no table among the weights, matched on numbers"
        )
    scale = _embedding_scale(stem)
    offset = _position_offset(stem) if positions and position_padding_id is None else 0
    if offset:
        evidence.append(f"learned positions start at row {offset} of the table")
    if scale is not None:
        evidence.append(f"token embeddings are scaled by {scale:.6g} before the first block")

    return ModelIR(
        name=name,
        class_prefix="".join(part.capitalize() for part in name.split("_")),
        source=source,
        revision=revision,
        hf_model_class=type(model).__name__,
        hf_block_container=group.container,
        shared_block=group.shared,
        stem=Stem(
            vocab_size=vocab_size,
            hidden_dim=hidden_dim,
            hf_embedding=embed,
            positions=Positions.SINUSOIDAL
            if sinusoid
            else _positions_kind(positions, position_padding_id),
            sinusoid_base=sinusoid,
            position_padding_id=position_padding_id,
            hf_positions=positions[0] if positions else None,
            max_positions=max_positions,
            position_offset=offset,
            embedding_scale=scale,
            embedding_norm=embedding_norm,
            hf_embedding_norm=embedding_norm_path,
            embedding_norm_input=norm_reads,
            embedding_dim=embedding_dim if embedding_projection else None,
            hf_embedding_projection=embedding_projection,
            embedding_projection_bias=projection_bias,
            project_last=project_last,
            hf_token_types=token_types,
            type_vocab_size=type_vocab_size,
            hf_relative_table=relative_table,
            relative_table_norm=relative_norm,
            hf_relative_table_norm=relative_norm_path,
            masked_embeddings=_masked_embeddings(G, block_call, embedding_out, evidence),
        ),
        block_types=tuple(block_types),
        layers=tuple(layers),
        layer_options=tuple(LayerOptions(sliding_window=window_of[i]) for i in group.indices),
        head=Head(
            hf_head=head,
            tied=tied,
            bias=head_bias,
            final_norm=final_norm,
            hf_final_norm=final_norm_path,
            hf_output_projection=output_projection,
            softcap=logit_softcap,
            logit_scale=logit_scale,
            transform=transform,
            task=task,
            hf_bias=tied_names.get(f"{head}.bias"),
            hf_pooler=classifier.pooler if classifier else pooler,
            num_classes=classifier.num_classes if classifier else None,
            labels=_labels(config, classifier.num_classes) if classifier else (),
            pooler_activation=classifier.activation if classifier else "tanh",
        ),
        bos_token_id=_token_id(config, "bos_token_id"),
        eos_token_id=_token_id(config, "eos_token_id"),
        pad_token_id=_token_id(config, "pad_token_id"),
        evidence=tuple(evidence),
    )


def _refuse_modules_between_blocks(G: GraphView, container: str, first, last) -> None:
    """Stop the port when a module with weights outside the blocks runs between the first and
    the last block (DeBERTa's `conv` after its first layer, `conv_kernel_size` > 0): no step of
    the IR computes it."""
    for c in G.g.calls:
        if not (first.index < c.index < last.index) or c.kind != "module":
            continue
        inside = c.target == container or c.target.startswith(f"{container}.")
        holds = container.startswith(f"{c.target}.")  # a wrapper calling the blocks (ALBERT)
        if inside or holds or not G.subtree_params(c.target):
            continue
        if not any(G.derives(v, first.outputs[0]) for v in c.inputs):
            continue  # not on the blocks' outputs (a shared table computed between them)
        raise UnsupportedModelError(
            f"module {c.target} runs between the blocks, on their outputs: no component "
            "computes it; porting without it would compute something else"
        )


def _relative_table(G: GraphView, block_types, block_call, hidden_dim: int, evidence):
    """(table module, its norm, the norm's path) of the relative-position table the blocks'
    disentangled attention reads (DeBERTa's `rel_embeddings`, LayerNorm-ed or not)."""
    if not any(b.attention.relative for b in block_types):
        return None, None, None
    table, norm_path = relative_attention.table_source(G, block_call)
    rows, width = G.own_params(table)["weight"]
    norm = None
    if norm_path is not None:
        norm = norm_component.recognize(G, norm_path, width)
    evidence.append(
        f"relative-position table {table} ({rows}x{width}) handed to every block"
        + (f", normalized by {norm_path}: {norm_component.describe(norm)}" if norm else "")
    )
    return table, norm, norm_path


def _masked_embeddings(G: GraphView, block_call, embedding_out: int, evidence) -> bool:
    """Whether the stem multiplies the embeddings by the attention mask before the first block
    (DeBERTa): a `mul` of a value derived from the token embeddings by one derived from the mask
    input, which the first block reads."""
    mask = next((v.id for v in G.g.values if v.source == "input:attention_mask"), None)
    if mask is None:
        return False
    for c in G.g.calls:
        if c.index >= block_call.index or c.target != "mul" or len(c.inputs) != 2:
            continue
        a, b = c.inputs
        if {G.derives(a, embedding_out), G.derives(b, embedding_out)} != {True, False}:
            continue
        other = b if G.derives(a, embedding_out) else a
        if G.derives(other, mask) and G.derives(block_call.inputs[0], c.outputs[0]):
            evidence.append(
                f"the embeddings are multiplied by the padding mask before the first block "
                f"(`mul` in {c.scope or 'the model'})"
            )
            return True
    return False


def _run_stem(model, embed, block0, skip, length, evidence, **kwargs) -> tuple[dict, int]:
    """`probes.run_stem` on `length` tokens, or on fewer when the model cannot take that many (a
    position table of fewer rows: its lookup fails); (what it captured, the length used)."""
    first = None
    for tried in (length, length // 2, length // 4, length // 8):
        try:
            stem = probes.run_stem(model, embed, None, block0, skip, tried, **kwargs)
        except (IndexError, RuntimeError) as error:  # an index past a table's rows
            first = first or error
            continue
        if tried != length:
            evidence.append(
                f"the stem probed on {tried} tokens (on {length} it fails: {_first_line(first)})"
            )
        return stem, tried
    raise first


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _labels(config, num_classes: int) -> tuple[str, ...]:
    """The class names by id (the checkpoint's `id2label`; `LABEL_<i>` where it has none)."""
    names = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    return tuple(names.get(i, f"LABEL_{i}") for i in range(num_classes))


def _positions_kind(positions: list[str], padding_id: int | None) -> Positions:
    if not positions:
        return Positions.NONE
    return Positions.LEARNED if padding_id is None else Positions.COUNTED


def _task(block_types: list[BlockType], transform, head: str | None, classifier: bool) -> Task:
    """A causal LM (causal blocks, the head on the hidden states), a masked LM (bidirectional
    blocks, with or without a dense transform before the head), a text classifier
    (bidirectional blocks, class logits from the first token) or a bare encoder (bidirectional
    blocks, no head)."""
    causal = {b.attention.causal for b in block_types}
    if len(causal) != 1:
        raise UnsupportedModelError("causal and bidirectional blocks in one model")
    if head is None:
        if causal == {True}:
            raise UnsupportedModelError(
                "no language-model head producing vocabulary logits (a bare causal model)"
            )
        return Task.BASE
    if classifier:
        if causal == {True}:
            raise UnsupportedModelError(f"a classifier {head} on a causal model: not supported yet")
        return Task.TEXT_CLASSIFIER
    if causal == {True}:  # with or without a dense transform before the head (ModernBERT's)
        return Task.CAUSAL_LM
    return Task.MASKED_LM


def _projection_between(G: GraphView, candidates, source: int, shape, bias_ok=False) -> str:
    """The projection of weight `shape` among `candidates` that reads `source` (bias-free unless
    `bias_ok`)."""
    found = [
        p
        for p in candidates
        if G.is_projection(p)
        and tuple(G.own_params(p)["weight"]) == tuple(shape)
        and (bias_ok or "bias" not in G.own_params(p))
        and G.derives(first_call(G.g, p).inputs[0], source)
    ]
    if len(found) != 1:
        raise UnsupportedModelError(
            f"the embedding width differs from the blocks' and no single projection of shape "
            f"{tuple(shape)} explains it ({found})"
        )
    return found[0]


def _step_text(step) -> str:
    if hasattr(step, "component"):
        return f"{step.out} = {step.component}({', '.join(step.inputs)})"
    if hasattr(step, "factor"):
        return f"{step.out} = {step.input} * {step.factor:.6g}"
    return f"{step.out} = {' + '.join(step.inputs)}"


def _token_id(config, key: str) -> int | None:
    value = getattr(config, key, None)
    if isinstance(value, list):
        value = value[0] if value else None
    return value


def _embedding_norm_input(
    G: GraphView, path: str, positions: list[str], token_types, projection
) -> EmbeddingNormInput:
    """What the norm of the embeddings before the first block reads: the embeddings whole, after
    the position embeddings are added (BART), or the token embeddings alone, the positions added
    to its output (BlenderbotSmall); `_embedding_scale` checks it on numbers."""
    if not positions or G.derives(G.inp(path), G.out(positions[0])):
        return EmbeddingNormInput.SUM
    if token_types or projection:
        raise UnsupportedModelError(
            f"{path} normalizes the token embeddings before the position embeddings are added, "
            "and they are also projected or summed with token types: not supported yet"
        )
    return EmbeddingNormInput.TOKENS


def _position_offset(captured: dict[str, torch.Tensor]) -> int:
    """The table row of position 0: the position embedding of token t is row `t + offset`."""
    table, used = captured["position_table"], captured["position"]
    offset = stem_tables.position_offset(table, used.reshape(-1, used.shape[-2], used.shape[-1])[0])
    if offset is None:
        raise UnsupportedModelError(
            "the position embeddings are not consecutive rows of their table"
        )
    return offset


def _embedding_scale(captured: dict[str, torch.Tensor]) -> float | None:
    """How the first block's input relates to the looked-up embedding rows (after positions).

    With an embedding norm, the block's input must be the norm's output (plus the positions when
    the norm reads the token embeddings alone), and the scale is read off the norm's input."""
    emb, block_in, pos = captured["embed"], captured["block"], captured.get("position")
    types = captured.get("token_types")
    if "projected" in captured:
        emb = captured["projected"]
    if captured.get("project_last"):  # the projection read everything else: the block's input
        emb, pos, types = captured["projected"], None, None
    elif "normed" in captured:
        tokens_only = captured["norm_reads"] is EmbeddingNormInput.TOKENS
        after_norm = block_in - pos if tokens_only else block_in
        if not torch.allclose(after_norm, captured["normed"], rtol=1e-5, atol=1e-5):
            raise UnsupportedModelError(
                "the first block's input is not the normalized embeddings"
                + (" plus the position embeddings" if tokens_only else "")
            )
        block_in = captured["norm_input"]
        if tokens_only:
            pos = None
    if pos is not None:
        block_in = block_in - pos
    if types is not None:
        block_in = block_in - types
    ratio = float((block_in * emb).sum() / (emb * emb).sum())
    if not torch.allclose(block_in, emb * ratio, rtol=1e-5, atol=1e-5):
        raise UnsupportedModelError("the first block's input is not a scaled token embedding")
    if math.isclose(ratio, 1.0, rel_tol=1e-6):
        return None
    return ratio
