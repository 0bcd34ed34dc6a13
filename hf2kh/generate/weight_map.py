"""The weight-mapping table: one row per (HF tensor, Keras variable) pair, and its audit.

Roles come from the recognizer (`ModelSpec.weights`); this module knows where each role lives in
the generated package (the layer names the templates use) and how a HF tensor becomes that
Keras variable (a short list of numpy ops: transpose, reshape, split).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hf2kh.errors import WeightAuditError
from hf2kh.recognize.spec import ModelSpec

TABLE_VERSION = 1


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


def _norm_variable(spec: ModelSpec) -> tuple[str, str]:
    return ("scale", "") if spec.norm.kind == "rms" else ("gamma", "beta")


def keras_paths(spec: ModelSpec) -> dict[str, str]:
    """Role -> Keras variable path (blocks use `{i}`), matching the templates' layer names."""
    gamma, beta = _norm_variable(spec)
    block = "transformer_layer_{i}"
    attn = f"{block}/self_attention"
    paths = {
        "embed": "token_embedding/embeddings",
        "lm_head": "token_embedding/reverse_embeddings",
        "pos_embed": "position_embedding/embeddings",
        "final_norm.gamma": f"sequence_output_layernorm/{gamma}",
        "final_norm.beta": f"sequence_output_layernorm/{beta}",
        "attn_norm.gamma": f"{block}/self_attention_layernorm/{gamma}",
        "attn_norm.beta": f"{block}/self_attention_layernorm/{beta}",
        "mlp_norm.gamma": f"{block}/feedforward_layernorm/{gamma}",
        "mlp_norm.beta": f"{block}/feedforward_layernorm/{beta}",
        "q_norm.gamma": f"{attn}/query_norm/scale",
        "k_norm.gamma": f"{attn}/key_norm/scale",
        "out.kernel": f"{attn}/attention_output/kernel",
        "out.bias": f"{attn}/attention_output/bias",
        "gate.kernel": f"{block}/feedforward_gate_dense/kernel",
        "gate.bias": f"{block}/feedforward_gate_dense/bias",
        "up.kernel": f"{block}/feedforward_intermediate_dense/kernel",
        "up.bias": f"{block}/feedforward_intermediate_dense/bias",
        "down.kernel": f"{block}/feedforward_output_dense/kernel",
        "down.bias": f"{block}/feedforward_output_dense/bias",
    }
    for name in ("query", "key", "value"):
        paths[f"{name}.kernel"] = f"{attn}/{name}/kernel"
        paths[f"{name}.bias"] = f"{attn}/{name}/bias"
    return paths


def _head_shapes(spec: ModelSpec) -> dict[str, int]:
    a = spec.attention
    return {
        "query": a.num_query_heads,
        "key": a.num_key_value_heads,
        "value": a.num_key_value_heads,
    }


def _transform(spec: ModelSpec, role: str, layout: str, shape: tuple[int, ...]):
    """(ops, keras shape) turning a HF tensor of `shape` into the role's Keras variable."""
    a = spec.attention
    hidden = spec.embedding.hidden_dim
    ops: list[dict] = []
    target = role.split(".")[0]
    if layout == "linear" and role != "embed":
        ops.append({"op": "transpose"})
        shape = shape[::-1]
    if role.endswith(".kernel") and target in ("query", "key", "value"):
        heads = _head_shapes(spec)[target]
        shape = (hidden, heads, a.head_dim)
        ops.append({"op": "reshape", "shape": list(shape)})
    elif role.endswith(".bias") and target in ("query", "key", "value"):
        shape = (_head_shapes(spec)[target], a.head_dim)
        ops.append({"op": "reshape", "shape": list(shape)})
    elif role == "out.kernel":
        shape = (a.num_query_heads, a.head_dim, hidden)
        ops.append({"op": "reshape", "shape": list(shape)})
    return ops, tuple(shape)


def _parts(spec: ModelSpec, role: str, layout: str, shape: tuple[int, ...]):
    """(Keras role, split ops, shape of the part) for each Keras variable one HF tensor fills:
    itself, or the query/key/value parts of a fused projection."""
    if not role.startswith("qkv."):
        return [(role, (), shape)]
    a = spec.attention
    sizes = [a.num_query_heads * a.head_dim] + [a.num_key_value_heads * a.head_dim] * 2
    axis = 0 if layout == "linear" else -1  # Linear stores (out, in), Conv1D and biases (..., out)
    if a.fused_layout == "per_head" and axis != 0 and len(shape) > 1:
        raise ValueError("a per-head fused projection is only known as a Linear layer")
    parts = []
    for index, name in enumerate(("query", "key", "value")):
        part_shape = list(shape)
        part_shape[axis] = sizes[index]
        if a.fused_layout == "per_head":
            # Rows are [q_h | k_h | v_h] per head: view (heads, 3, head_dim, ...), take one part.
            rest = list(shape[1:])
            ops = (
                {"op": "reshape", "shape": [a.num_query_heads, 3, a.head_dim, *rest]},
                {"op": "take", "axis": 1, "index": index},
                {"op": "reshape", "shape": [sizes[index], *rest]},
            )
        else:
            ops = ({"op": "split", "axis": axis, "sizes": sizes, "index": index},)
        parts.append((f"{name}.{role.split('.')[1]}", ops, tuple(part_shape)))
    return parts


def build_table(spec: ModelSpec, hf_shapes: dict[str, tuple[int, ...]]) -> WeightTable:
    """Expand the spec's roles over the blocks into rows (fused qkv split into three rows)."""
    paths = keras_paths(spec)
    rows: list[WeightRow] = []
    for role, ref in spec.weights.items():
        if role == "block":
            continue
        layers = range(spec.num_layers) if "{i}" in ref.hf_name else [None]
        for i in layers:
            hf_name = ref.hf_name.format(i=i) if i is not None else ref.hf_name
            shape = tuple(hf_shapes[hf_name])
            for part_role, split, part_shape in _parts(spec, role, ref.layout, shape):
                ops, keras_shape = _transform(spec, part_role, ref.layout, part_shape)
                keras_path = paths[part_role].format(i=i)
                rows.append(WeightRow(hf_name, shape, keras_path, keras_shape, (*split, *ops)))
    return WeightTable(rows)


def rename_tensors(
    table: WeightTable, names: dict[str, str], dtypes: dict[str, str]
) -> WeightTable:
    """The table with each row's HF tensor under its name (and dtype) in the checkpoint."""
    rows = []
    for row in table.rows:
        name = names.get(row.hf_name, row.hf_name)
        rows.append(dataclasses.replace(row, hf_name=name, hf_dtype=dtypes.get(name, "")))
    return WeightTable(rows, dict(table.declared))


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
        part = next((op for op in row.transform if op["op"] in ("split", "take")), None)
        used.setdefault(row.hf_name, []).append(part)
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
            indices = sorted(s["index"] for s in splits)
            if indices != list(range(len(splits))):
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
