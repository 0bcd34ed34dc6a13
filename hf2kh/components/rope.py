"""Rotary position embedding (`rotate_half` layout; plain, linear or Llama 3 scaling; partial).

Recognized by running a fresh CPU copy of the model's rotary module and matching its cos table
against candidate references built from the config's rope parameters; emitted as the package's
rotary layer.
"""

from __future__ import annotations

from hf2kh.components.base import Arg
from hf2kh.ir import Rope, RopeScaling
from hf2kh.recognize import probes
from hf2kh.recognize.graph_view import GraphView


def recognize(G: GraphView, rotary: str, config, head_dim: int) -> Rope:
    observed = probes.probe_rope(G.submodule(rotary), config, head_dim)
    rotary_dim = observed.shape[-1]
    params = getattr(config, "rope_parameters", None) or {}
    theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    candidates: dict[str, dict | None] = {"none": None}
    factor = params.get("factor")
    if factor:
        candidates["linear"] = {"scaling": "linear", "factor": float(factor)}
        if "low_freq_factor" in params:
            candidates["llama3"] = {
                "scaling": "llama3",
                "factor": float(factor),
                "low_freq_factor": float(params["low_freq_factor"]),
                "high_freq_factor": float(params["high_freq_factor"]),
                "original_max_position_embeddings": int(params["original_max_position_embeddings"]),
            }
    chosen = probes.pick(
        f"rotary embedding {type(G.submodule(rotary)).__name__}",
        observed,
        {
            k: (lambda s=s: probes.rope_cos(theta, rotary_dim, observed.shape[0], s))
            for k, s in candidates.items()
        },
    )
    scaling = candidates[chosen] or {}
    return Rope(
        theta=theta,
        rotary_dim=rotary_dim,
        scaling=RopeScaling(chosen),
        factor=scaling.get("factor", 1.0),
        low_freq_factor=scaling.get("low_freq_factor", 1.0),
        high_freq_factor=scaling.get("high_freq_factor", 4.0),
        original_max_position_embeddings=scaling.get("original_max_position_embeddings", 8192),
    )


def describe(rope: Rope, head_dim: int) -> str:
    return (
        f"rope: theta {rope.theta:g}, rotary dim {rope.rotary_dim} of {head_dim}, "
        f"scaling {rope.scaling.value}"
    )


# Block/backbone argument -> rotary layer argument, with its documentation.
_ARGS = {
    "rope_max_wavelength": ("max_wavelength", "float. Rotary base (theta)."),
    "rope_rotary_dim": ("rotary_dim", "int. Features of each head that are rotated."),
    "rope_scaling_factor": ("scaling_factor", "float. Rotary frequency scaling factor."),
    "rope_low_freq_factor": (
        "low_freq_factor",
        "float. Llama 3 rope scaling: low-frequency factor.",
    ),
    "rope_high_freq_factor": (
        "high_freq_factor",
        "float. Llama 3 rope scaling: high-frequency factor.",
    ),
    "rope_original_max_position_embeddings": (
        "original_max_position_embeddings",
        "int. Llama 3 rope scaling: original context.",
    ),
}


def args(rope: Rope) -> list[Arg]:
    values = {
        "rope_max_wavelength": rope.theta,
        "rope_rotary_dim": rope.rotary_dim,
    }
    if rope.scaling is not RopeScaling.NONE:
        values["rope_scaling_factor"] = rope.factor
    if rope.scaling is RopeScaling.LLAMA3:
        values["rope_low_freq_factor"] = rope.low_freq_factor
        values["rope_high_freq_factor"] = rope.high_freq_factor
        values["rope_original_max_position_embeddings"] = rope.original_max_position_embeddings
    return [Arg(name, value, _ARGS[name][1]) for name, value in values.items()]


def layer_arg(block_arg: str) -> str:
    """The rotary layer's own name for a block argument (`rope_rotary_dim` -> `rotary_dim`)."""
    return _ARGS[block_arg][0]
