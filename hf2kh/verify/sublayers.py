"""Localization inside a block: compare module outputs where HF and Keras hold the same tensor.

The points come from the model IR and the weight map, never from names: each component of a block
type that the generated block keeps as a Keras sublayer of the same name (norms, attention) is
compared with the output of the HF module it replaces (`Component.hf_paths`), and each projection
whose HF weight fills exactly one Keras kernel (q/k/v/o, the MLP's projections; not a fused q/k/v
that is split) with the output of that HF module. A tensor is compared only when both sides have
the same number of elements (the Keras side's head axes are flattened as HF's are).

Some HF modules return more than the Keras component computes (BLOOM's attention adds the residual
inside its module). A point that fails in a block that passes on its own is therefore not the same
tensor on both sides, and is not used to localize anything in blocks of that type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODES = ("end to end", "alone")


@dataclass(frozen=True)
class Point:
    """One compared module output of layer `layer`: the Keras layer path (from the backbone, as
    the weight table writes it) and the HF module path."""

    layer: int
    keras_path: str
    hf_path: str

    @property
    def relative(self) -> str:
        """The Keras path inside its block (the same for every block of one type)."""
        return self.keras_path.partition("/")[2]


def sublayer_points(ir, weight_map: Path) -> list[list[Point]]:
    """The points of each layer of `ir`, from its components and its weight map (a port's
    `<package>/weight_map.json`)."""
    rows = json.loads(weight_map.read_text())["rows"] if weight_map.exists() else []
    by_tensor: dict[str, list[str]] = {}
    for row in rows:
        by_tensor.setdefault(row["hf_name"], []).append(row["keras_path"])
    points: list[list[Point]] = []
    for i in range(ir.num_layers):
        block, keras_block = ir.block_path(i), f"transformer_layer_{i}"
        layer_points = [
            Point(i, f"{keras_block}/{c.name}", f"{block}.{c.hf_paths[-1]}")
            for c in ir.block_type(i).components
            if c.hf_paths
        ]
        for hf_name, keras_paths in by_tensor.items():
            if not hf_name.startswith(f"{block}.") or not hf_name.endswith(".weight"):
                continue
            if len(keras_paths) != 1 or not keras_paths[0].endswith("/kernel"):
                continue  # split (fused q/k/v) or not a projection
            keras_path = keras_paths[0].removesuffix("/kernel")
            if keras_path.startswith(f"{keras_block}/"):
                layer_points.append(Point(i, keras_path, hf_name.removesuffix(".weight")))
        points.append(layer_points)
    return points


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


class HFPointRecorder:
    """The output of each point's HF module in one forward pass (forward hooks)."""

    def __init__(self, model, points: list[Point]):
        self.outputs: dict[str, np.ndarray] = {}
        self._handles = []
        modules = dict(model.named_modules())
        for point in points:
            module = modules.get(point.hf_path)
            if module is not None:
                self._handles.append(module.register_forward_hook(self._hook(point.hf_path)))

    def _hook(self, path: str):
        def hook(module, args, output):
            tensor = _first(output)
            if hasattr(tensor, "detach"):
                self.outputs[path] = tensor.detach().float().cpu().numpy()

        return hook

    def close(self):
        for handle in self._handles:
            handle.remove()


def _children(layer):
    return {
        child.name: child for child in layer._flatten_layers(include_self=False, recursive=False)
    }


def resolve(backbone, keras_path: str):
    """The Keras layer at `keras_path` ("transformer_layer_1/self_attention/query"), or None."""
    first, *rest = keras_path.split("/")
    try:
        layer = backbone.get_layer(first)
    except ValueError:
        return None
    for name in rest:
        layer = _children(layer).get(name)
        if layer is None:
            return None
    return layer


class KerasPointRecorder:
    """The output of each point's Keras layer, recorded by wrapping that layer's `call` while
    `mode` is set (calls outside a mode, such as the logits pass, are not recorded). `order` is
    the order of the first calls: the order in which the block computes them."""

    def __init__(self, backbone, points: list[Point]):
        self.mode: str | None = None
        self.outputs: dict[str, dict[str, np.ndarray]] = {m: {} for m in MODES}
        self.order: list[str] = []
        self._wrapped = []
        for point in points:
            layer = resolve(backbone, point.keras_path)
            if layer is not None and "call" not in vars(layer):
                self._wrap(layer, point.keras_path)

    def _wrap(self, layer, path: str):
        import keras

        original = layer.call

        def call(*args, **kwargs):
            output = original(*args, **kwargs)
            if self.mode is not None:
                value = _first(output)
                self.outputs[self.mode][path] = np.asarray(
                    keras.ops.convert_to_numpy(value), dtype=np.float32
                )
                if path not in self.order:
                    self.order.append(path)
            return output

        object.__setattr__(layer, "call", call)
        self._wrapped.append(layer)

    def close(self):
        for layer in self._wrapped:
            object.__delattr__(layer, "call")
        self._wrapped = []


def same_shape(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray | None:
    """`candidate` in `reference`'s shape when only head axes differ (same leading batch and
    sequence axes, same element count), else None."""
    if candidate.shape == reference.shape:
        return candidate
    if candidate.size != reference.size or candidate.shape[:2] != reference.shape[:2]:
        return None
    return candidate.reshape(reference.shape)
