"""The weight-mapping table: one row per (HF tensor, Keras variable) pair, and its audit.

Rows come from the model IR: each component's own module (`hf2kh.components`) says which HF
tensors it reads, which Keras variables of its layers they fill and how (a short list of numpy ops:
transpose, reshape, split, take, slice); this module expands them over the layers and audits the
result.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hf2kh.errors import WeightAuditError
from hf2kh.ir import Attention, Mlp, ModelIR, Moe, Norm, Task

TABLE_VERSION = 1
NOT_PORTED_POOLER = (
    "the bare model's pooler (its pooled_output) is not ported: the backbone outputs the last "
    "hidden states"
)


@dataclass(frozen=True)
class WeightRow:
    hf_name: str
    hf_shape: tuple[int, ...]
    keras_path: str
    keras_shape: tuple[int, ...]
    transform: tuple[dict, ...]
    hf_dtype: str = ""


@dataclass
class WeightTable:
    rows: list[WeightRow]
    declared: dict[str, str] = field(default_factory=dict)  # HF tensor -> why it maps to nothing

    def to_json(self) -> dict:
        return {
            "version": TABLE_VERSION,
            "rows": [_row_json(r) for r in self.rows],
            "declared": self.declared,
        }

    def write(self, directory: Path) -> None:
        (directory / "weight_map.json").write_text(json.dumps(self.to_json(), indent=1) + "\n")


def _row_json(row: WeightRow) -> dict:
    data = asdict(row)
    data["hf_shape"] = list(row.hf_shape)
    data["keras_shape"] = list(row.keras_shape)
    data["transform"] = list(row.transform)
    return data


def keras_block(ir: ModelIR, i: int) -> str:
    """The Keras layer of layer `i`: `transformer_layer_<i>`, or the one `transformer_layer`
    of a block shared by all layers."""
    return "transformer_layer" if ir.shared_block else f"transformer_layer_{i}"


def build_table(ir: ModelIR, hf_shapes: dict[str, tuple[int, ...]]) -> WeightTable:
    """Every Keras variable of the generated backbone and the HF tensor it is filled from: the
    stem's, each component's of each layer (rows made by the component's own module), the
    head's."""
    from hf2kh.components import attention, classifier_head, head_transform, mlp, moe, norm

    stem, head = ir.stem, ir.head
    rows = [_row(f"{stem.hf_embedding}.weight", hf_shapes, "token_embedding/embeddings")]
    if stem.hf_positions is not None:
        name = f"{stem.hf_positions}.weight"
        shape = tuple(hf_shapes[name])
        keep = (shape[0] - stem.position_offset, *shape[1:])
        ops = ({"op": "slice", "axis": 0, "start": stem.position_offset},)
        rows.append(
            WeightRow(
                name,
                shape,
                "position_embedding/embeddings",
                keep,
                ops if stem.position_offset else (),
            )
        )
    if stem.hf_token_types is not None:
        rows.append(
            _row(f"{stem.hf_token_types}.weight", hf_shapes, "segment_embedding/embeddings")
        )
    if stem.hf_embedding_projection is not None:
        rows.append(
            _dense(f"{stem.hf_embedding_projection}.weight", hf_shapes, "embedding_projection")
        )
        if stem.embedding_projection_bias:
            name = f"{stem.hf_embedding_projection}.bias"
            rows.append(_row(name, hf_shapes, "embedding_projection/bias"))
    if stem.embedding_norm is not None:
        rows += norm.weight_rows(
            stem.embedding_norm, stem.hf_embedding_norm, "embeddings_layernorm", hf_shapes
        )
    if stem.hf_relative_table is not None:
        rows.append(
            _row(f"{stem.hf_relative_table}.weight", hf_shapes, "relative_embedding/embeddings")
        )
    if stem.relative_table_norm is not None:
        rows += norm.weight_rows(
            stem.relative_table_norm,
            stem.hf_relative_table_norm,
            "relative_embedding/layer_norm",
            hf_shapes,
        )
    if head.hf_output_projection is not None:
        rows.append(_dense(f"{head.hf_output_projection}.weight", hf_shapes, "output_projection"))
    # a block shared by all layers has one set of weights, in one Keras layer
    for i in range(1 if ir.shared_block else ir.num_layers):
        block = ir.block_type(i)
        prefix = ir.block_path(i)
        layer = keras_block(ir, i)

        def hf(rel: str, prefix: str = prefix) -> str:
            return f"{prefix}.{rel}"

        for component in block.components:
            keras = f"{layer}/{component.name}"
            weights = dict(component.weights)
            spec = component.spec
            if isinstance(spec, Norm):
                rows += norm.weight_rows(spec, hf(weights["norm"]), keras, hf_shapes)
            elif isinstance(spec, Attention):
                rows += attention.weight_rows(
                    spec, weights, hf, keras, hf_shapes, ir.stem.hidden_dim
                )
            elif isinstance(spec, Mlp):
                rows += mlp.weight_rows(spec, weights, hf, layer, hf_shapes)
            elif isinstance(spec, Moe):
                rows += moe.weight_rows(spec, weights, hf, keras, hf_shapes)
    if head.final_norm is not None:
        rows += norm.weight_rows(
            head.final_norm, head.hf_final_norm, "sequence_output_layernorm", hf_shapes
        )
    declared = _not_run(ir, hf_shapes)
    if head.task is not Task.TEXT_CLASSIFIER:  # a pooler the output does not read: declared
        pooler = head.hf_pooler
        unused = [n for n in hf_shapes if pooler and n.startswith(f"{pooler}.")]
        declared.update({n: NOT_PORTED_POOLER for n in unused})
    if head.task is Task.BASE:  # no head
        return WeightTable(rows, declared)
    if head.task is Task.TEXT_CLASSIFIER:  # the task's pooler and classifier layers
        return WeightTable(
            rows + classifier_head.weight_rows(head.hf_head, head.hf_pooler, hf_shapes), declared
        )
    if not head.tied:
        name = f"{head.hf_head}.weight"
        shape = tuple(hf_shapes[name])
        rows.append(
            WeightRow(
                name,
                shape,
                "token_embedding/reverse_embeddings",
                shape[::-1],
                ({"op": "transpose"},),
            )
        )
    if head.transform is not None and head.task is Task.CAUSAL_LM:  # in token_logits()
        rows += head_transform.backbone_rows(head.transform, hf_shapes)
    if head.transform is not None and head.task is not Task.CAUSAL_LM:  # the masked-LM head
        bias = (head.hf_bias or f"{head.hf_head}.bias") if head.bias else None
        rows += head_transform.weight_rows(head.transform, bias, hf_shapes)
    elif head.bias:
        rows.append(_row(head.hf_bias or f"{head.hf_head}.bias", hf_shapes, "lm_head_bias/bias"))
    return WeightTable(rows, declared)


def _not_run(ir: ModelIR, hf_shapes) -> dict[str, str]:
    """Each tensor of a module the model does not run (a block's `not_run`), with the reason."""
    declared = {}
    for i in range(ir.num_layers):
        for module in ir.block_type(i).not_run:
            prefix = f"{ir.block_path(i)}.{module.hf_path}."
            declared.update({n: module.reason.value for n in hf_shapes if n.startswith(prefix)})
    return declared


def _dense(hf_name: str, hf_shapes, layer: str) -> WeightRow:
    """A `Linear` weight (out, in) as a Keras `Dense` kernel (in, out)."""
    shape = tuple(hf_shapes[hf_name])
    return WeightRow(hf_name, shape, f"{layer}/kernel", shape[::-1], ({"op": "transpose"},))


def _row(hf_name: str, hf_shapes, keras_path: str) -> WeightRow:
    shape = tuple(hf_shapes[hf_name])
    return WeightRow(hf_name, shape, keras_path, shape, ())


def rename_tensors(
    table: WeightTable, names: dict[str, str], dtypes: dict[str, str]
) -> WeightTable:
    """The table with each row's HF tensor under its name (and dtype) in the checkpoint."""
    rows = []
    for row in table.rows:
        name = names.get(row.hf_name, row.hf_name)
        rows.append(dataclasses.replace(row, hf_name=name, hf_dtype=dtypes.get(name, "")))
    return WeightTable(rows, {names.get(n, n): why for n, why in table.declared.items()})


def declare_unmapped(
    table: WeightTable,
    checkpoint_names: set[str],
    buffers: set[str],
    tied: dict[str, str],
    ignored_patterns: list[str] = (),
) -> None:
    """Declare checkpoint tensors that map to nothing, with the reason.

    Only three reasons are accepted: a tied copy of a mapped tensor, a buffer of the HF model
    (recomputed, not learned), or a name transformers itself drops when loading this model
    (`_keys_to_ignore_on_load_unexpected`, e.g. old GPT-2 causal-mask buffers). Anything else
    stays undeclared and fails the audit.
    """
    mapped = {r.hf_name for r in table.rows}
    for name in sorted(checkpoint_names - mapped):
        if name in tied and tied[name] in mapped:
            table.declared[name] = f"tied: same tensor as {tied[name]}"
        elif name in buffers:
            table.declared[name] = "buffer: recomputed by the port, not a learned weight"
        elif any(re.search(p, name) for p in ignored_patterns):
            table.declared[name] = "ignored by transformers when loading this model"


def _raise(problems: list[str]) -> None:
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise WeightAuditError("weight audit failed: " + "; ".join(problems[:3]) + more)


def audit_checkpoint(table: WeightTable, checkpoint: dict[str, tuple[int, ...]]) -> None:
    """Every checkpoint tensor used exactly once (or declared), each with the expected shape;
    every row's tensor present. Raises `WeightAuditError` naming what is wrong."""
    problems: list[str] = []
    used: dict[str, list[dict | None]] = {}
    for row in table.rows:
        # the part of the tensor the row reads: the index of each split/take, in order
        part = tuple(op["index"] for op in row.transform if op["op"] in ("split", "take"))
        used.setdefault(row.hf_name, []).append(part or None)
        if row.hf_name not in checkpoint:
            problems.append(
                f"Keras variable {row.keras_path} is left unfilled: "
                f"the checkpoint has no {row.hf_name}"
            )
        elif tuple(checkpoint[row.hf_name]) != tuple(row.hf_shape):
            problems.append(
                f"{row.hf_name} has shape {tuple(checkpoint[row.hf_name])}, expected {row.hf_shape}"
            )
    for name, splits in used.items():
        if None in splits and len(splits) > 1:
            problems.append(f"{name} is used {len(splits)} times")
        elif None not in splits:
            # each part once, and each split's parts counted from 0 without a gap
            indices = sorted(splits)
            depth = max(map(len, splits))
            levels = [sorted({s[k] for s in splits if len(s) > k}) for k in range(depth)]
            if len(set(indices)) != len(indices) or any(
                level != list(range(len(level))) for level in levels
            ):
                problems.append(f"{name} is split into parts {indices}, not each part once")
    unused = sorted(set(checkpoint) - set(used) - set(table.declared))
    problems += [f"checkpoint tensor {n} is not used by the port" for n in unused]
    _raise(problems)


def audit_keras(table: WeightTable, keras_variables: dict[str, tuple[int, ...]]) -> None:
    """Every Keras variable filled exactly once, with the shape the table makes."""
    problems: list[str] = []
    filled: dict[str, int] = {}
    for row in table.rows:
        filled[row.keras_path] = filled.get(row.keras_path, 0) + 1
        if row.keras_path not in keras_variables:
            problems.append(
                f"the table fills {row.keras_path}, which the Keras model does not have"
            )
        elif tuple(keras_variables[row.keras_path]) != tuple(row.keras_shape):
            problems.append(
                f"{row.keras_path} has shape {tuple(keras_variables[row.keras_path])}, "
                f"the table makes {row.keras_shape}"
            )
    problems += [f"Keras variable {p} is filled {n} times" for p, n in filled.items() if n > 1]
    problems += [
        f"Keras variable {p} is never filled" for p in sorted(set(keras_variables) - set(filled))
    ]
    _raise(problems)
