"""Rotary position embedding (`rotate_half` layout; plain, linear or Llama 3 scaling; partial).

Recognized per block from the cos table the block receives in a CPU run of the stem
(`probes.run_stem`), matched against candidate references built from the config's rope
parameters (each theta, one per layer type in Gemma 3); emitted as the package's rotary layer.
"""

from __future__ import annotations

from hf2kh.components.base import Arg
from hf2kh.errors import UnsupportedModelError
from hf2kh.ir import Rope, RopeScaling
from hf2kh.recognize import probes


def _parameter_sets(config) -> list[dict]:
    """The config's rope parameter dicts: one, or one per layer type (Gemma 3)."""
    params = getattr(config, "rope_parameters", None) or {}
    nested = [v for v in params.values() if isinstance(v, dict)]
    found = nested or [params]
    if not any("rope_theta" in p for p in found):
        found = [{**found[0], "rope_theta": getattr(config, "rope_theta", 10000.0)}]
    return found


def recognize_table(what: str, tables, config) -> Rope:
    """The rope whose cos table is one of `tables` ((positions, rotary_dim) tensors), among the
    candidates the config's rope parameters give (each theta; plain, linear or Llama 3)."""
    for observed in tables:
        rotary_dim = observed.shape[-1]
        candidates: dict[str, dict] = {}
        for params in _parameter_sets(config):
            theta = float(params.get("rope_theta", 10000.0))
            candidates[f"none|{theta}"] = {"theta": theta}
            factor = params.get("factor")
            if factor:
                candidates[f"linear|{theta}"] = {
                    "theta": theta,
                    "scaling": "linear",
                    "factor": float(factor),
                }
                if "low_freq_factor" in params:
                    candidates[f"llama3|{theta}"] = {
                        "theta": theta,
                        "scaling": "llama3",
                        "factor": float(factor),
                        "low_freq_factor": float(params["low_freq_factor"]),
                        "high_freq_factor": float(params["high_freq_factor"]),
                        "original_max_position_embeddings": int(
                            params["original_max_position_embeddings"]
                        ),
                    }
        refs = {
            k: (
                lambda c=c, d=rotary_dim, n=observed.shape[0]: probes.rope_cos(
                    c["theta"],
                    d,
                    n,
                    {x: y for x, y in c.items() if x != "theta"} or None,
                )
            )
            for k, c in candidates.items()
        }
        try:
            chosen = probes.pick(what, observed, refs)
        except UnsupportedModelError:
            if observed is tables[-1]:
                raise
            continue
        found = candidates[chosen]
        return Rope(
            theta=found["theta"],
            rotary_dim=rotary_dim,
            scaling=RopeScaling(chosen.split("|")[0]),
            factor=found.get("factor", 1.0),
            low_freq_factor=found.get("low_freq_factor", 1.0),
            high_freq_factor=found.get("high_freq_factor", 4.0),
            original_max_position_embeddings=found.get("original_max_position_embeddings", 8192),
        )
    raise UnsupportedModelError(f"{what}: no rotary table found")


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
