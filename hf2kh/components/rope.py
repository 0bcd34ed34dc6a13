"""Rotary position embedding (plain, linear or Llama 3 scaling; partial; half-split or
interleaved pairs).

The frequencies are recognized per block from the cos table the block receives in a CPU run of the
stem (`probes.run_stem`), matched against candidate references built from the config's rope
parameters (each theta, one per layer type in Gemma 3). Which features rotate together (the
layout) is probed on the attention itself (`probe_layout`): with every position given the same
pre-rope query and key, what reaches the score product at position p must be position 0's
vectors rotated by p times the frequencies, in one of the two layouts. Emitted as the package's
rotary layer.
"""

from __future__ import annotations

import dataclasses

import torch

from hf2kh.components.base import Arg
from hf2kh.errors import UnsupportedModelError
from hf2kh.ir import Rope, RopeLayout, RopeScaling
from hf2kh.recognize import attention_probe, probes


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
        # each frequency for both halves of the table, or twice in a row (Cohere's table for
        # interleaved pairs); which features rotate together is probed later (`probe_layout`)
        candidates |= {f"{k}|pairs": c for k, c in candidates.items()}
        refs = {
            k: (
                lambda c=c, d=rotary_dim, n=observed.shape[0], pairs=k.endswith("|pairs"): (
                    probes.rope_cos(
                        c["theta"],
                        d,
                        n,
                        {x: y for x, y in c.items() if x != "theta"} or None,
                        pairs=pairs,
                    )
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


# What applying rope in interleaved pairs calls inside attention, besides the half-split ops:
# the table's halves spread to pairs (GLM's `repeat_interleave`), `stack((-x2, x1)).flatten()`.
INTERLEAVED_OPS = {"repeat_interleave", "stack", "flatten"}

_PROBE_POSITIONS = 64  # angles stay small enough for float32 tables to agree to 1e-4


def probe_layout(G, attn: str, sources: list[str], rope: Rope, head_dim: int) -> Rope | None:
    """`rope` with the layout the attention `attn` applies, measured: its q/k projections
    (`sources`, full paths) give every position the same output, so the query and key operands
    of the score product at position p are position 0's rotated by p times the frequencies.
    None when they are not rotated at all (a layer without rope, though handed the tables:
    Cohere 2's global layers)."""

    def same_everywhere(out: torch.Tensor) -> torch.Tensor:
        return out[:, :1].expand_as(out).clone()

    run = attention_probe.run(G, attn, replace={s: same_everywhere for s in sources})
    frequencies = probes.rope_inv_freq(rope.theta, rope.rotary_dim, _scaling(rope)).double()
    # A matmul-like score product takes the key transposed, (..., head_dim, positions): said
    # by the op, not guessed from the shape, which cannot tell when length == head_dim (64).
    key_transposed = run.product != "einsum"
    operands = {
        what: _by_position(operand, run.length, head_dim, transposed)[:, :_PROBE_POSITIONS].double()
        for what, operand, transposed in (
            ("query", run.query, False),
            ("key", run.key, key_transposed),
        )
    }
    if all(_rotation_error(v, torch.zeros(1), 0, None) <= 1e-4 for v in operands.values()):
        return None
    found = None
    for what, vectors in operands.items():
        angles = torch.arange(vectors.shape[1]).double()[:, None] * frequencies[None]
        errors = {
            layout: _rotation_error(vectors, angles, rope.rotary_dim, layout)
            for layout in RopeLayout
        }
        matching = [layout for layout, error in errors.items() if error <= 1e-4]
        if not matching or (found is not None and found not in matching):
            raise UnsupportedModelError(
                f"{attn}: the {what} reaching the score product is not rotated in any known "
                "rope layout (half-split, interleaved pairs); it needs the op-by-op fallback, "
                "which this version of hf2kh does not emit"
            )
        found = found or matching[0]
    return dataclasses.replace(rope, layout=found)


def _scaling(rope: Rope) -> dict | None:
    if rope.scaling is RopeScaling.NONE:
        return None
    found = {"scaling": rope.scaling.value, "factor": rope.factor}
    if rope.scaling is RopeScaling.LLAMA3:
        found |= {
            "low_freq_factor": rope.low_freq_factor,
            "high_freq_factor": rope.high_freq_factor,
            "original_max_position_embeddings": rope.original_max_position_embeddings,
        }
    return found


def _by_position(
    operand: torch.Tensor, length: int, head_dim: int, transposed: bool = False
) -> torch.Tensor:
    """A score-product operand as (rows, positions, head_dim), whatever its axis order
    ((b, h, s, d), (b*h, s, d), a key given `transposed` as (b, h, d, s))."""
    x = operand.detach()
    if transposed or (x.shape[-1] != head_dim and x.shape[-2] == head_dim):
        x = x.transpose(-1, -2)
    axis = max(a for a in range(x.ndim - 1) if x.shape[a] == length)
    return x.movedim(axis, -2).reshape(-1, length, head_dim)


def _rotation_error(vectors, angles, rotary_dim: int, layout: RopeLayout | None) -> float:
    """Largest error, relative to the vectors' RMS, of `vectors[:, p]` as `vectors[:, 0]`
    rotated by `angles[p]` in `layout` (the features past `rotary_dim` pass through; layout
    None: not rotated at all)."""
    x = vectors[:, :1].expand_as(vectors)
    rotated, passed = x[..., :rotary_dim], x[..., rotary_dim:]
    if layout is None:
        expected = x
    elif layout is RopeLayout.HALF_SPLIT:
        cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
        x1, x2 = rotated.chunk(2, dim=-1)
        turned = torch.cat([-x2, x1], -1)
    else:
        cos = angles.repeat_interleave(2, -1).cos()
        sin = angles.repeat_interleave(2, -1).sin()
        turned = torch.stack([-rotated[..., 1::2], rotated[..., 0::2]], -1).flatten(-2)
    if layout is not None:
        expected = torch.cat([rotated * cos + turned * sin, passed], -1)
    scale = float(vectors.pow(2).mean().sqrt()) or 1.0
    return float((expected - vectors).abs().max()) / scale


def describe(rope: Rope, head_dim: int) -> str:
    return (
        f"rope: theta {rope.theta:g}, rotary dim {rope.rotary_dim} of {head_dim}, "
        f"scaling {rope.scaling.value}, {rope.layout.value.replace('_', '-')} layout (probed)"
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
