"""Normalization: RMSNorm (plain or the `(1 + w)` form) and LayerNorm, with or without a bias.

Recognized by a numeric probe against reference formulas (the module's own epsilon settings are
the candidates); emitted as `keras.layers.LayerNormalization` or the package's RMS norm layer.
"""

from __future__ import annotations

from hf2kh.components.base import Arg
from hf2kh.errors import UnsupportedModelError
from hf2kh.generate.weight_map import WeightRow
from hf2kh.ir import Norm, NormKind
from hf2kh.recognize import probes
from hf2kh.recognize.graph_view import GraphView

# Call-time functions a norm module may use (its arithmetic is checked by the probe).
OPS = {"pow", "mean", "rsqrt", "add", "mul", "sub", "layer_norm", "to", "float", "type_as"}


def epsilons(G: GraphView, path: str) -> list[float]:
    attrs = G.g.module(path).attributes
    found = [float(v) for k, v in attrs.items() if "eps" in k and isinstance(v, float)]
    return found or [1e-5, 1e-6, 1e-12]


def recognize(G: GraphView, path: str, width: int) -> Norm:
    kind, eps, offset = probes.probe_norm(G.submodule(path), width, epsilons(G, path))
    own = G.own_params(path)
    if "weight" not in own and NormKind(kind) is NormKind.RMS:
        raise UnsupportedModelError(f"{path}: an RMS norm without a weight is not supported yet")
    return Norm(NormKind(kind), eps, offset, bias="bias" in own, scale="weight" in own)


def describe(norm: Norm) -> str:
    if norm.kind is NormKind.RMS:
        form = "RMSNorm (1 + w)" if norm.scale_offset else "RMSNorm"
    else:
        form = "LayerNorm" + ("" if norm.bias else " without bias")
        form += "" if norm.scale else " or weight"
    return f"{form}, eps {norm.epsilon:g}"


def rms_class(prefix: str) -> str:
    return f"{prefix}LayerNorm"


def layer_code(norm: Norm, prefix: str, epsilon: str, name: str, dtype: str) -> str:
    """The constructor expression of a norm layer named `name`."""
    if norm.kind is NormKind.RMS:
        return f'{rms_class(prefix)}(epsilon={epsilon}, dtype={dtype}, name="{name}")'
    scale = "" if norm.scale else ", scale=False"
    return (
        f"keras.layers.LayerNormalization(epsilon={epsilon}, center={norm.bias}{scale}, "
        f'dtype={dtype}, name="{name}")'
    )


def args(norm: Norm, arg: str = "layer_norm_epsilon") -> list[Arg]:
    what = "RMS" if norm.kind is NormKind.RMS else "layer"
    return [Arg(arg, norm.epsilon, f"float. Epsilon of the {what} norms.")]


def variables(norm: Norm) -> dict[str, str]:
    """HF parameter name -> Keras variable name."""
    if norm.kind is NormKind.RMS:
        return {"weight": "scale"}
    names = {"weight": "gamma"} if norm.scale else {}
    if norm.bias:
        names["bias"] = "beta"
    return names


def weight_rows(norm: Norm, hf: str, keras: str, shapes) -> list[WeightRow]:
    rows = []
    for hf_param, keras_var in variables(norm).items():
        shape = tuple(shapes[f"{hf}.{hf_param}"])
        rows.append(WeightRow(f"{hf}.{hf_param}", shape, f"{keras}/{keras_var}", shape, ()))
    return rows
