"""Rotary position embedding (plain, linear, Llama 3 or YaRN scaling; partial; half-split or
interleaved pairs; handed to the blocks as tables or applied inside attention).

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
import math

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


def _candidates(config) -> dict[str, dict]:
    """The ropes the config's rope parameters allow, by name (`none|theta`, `linear|theta`,
    ...): each theta, plain or with the scaling its parameters give."""
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
        if params.get("original_max_position_embeddings"):
            candidates[f"yarn|{theta}"] = _yarn(config, params, theta)
    return candidates


def _yarn(config, params: dict, theta: float) -> dict:
    """The YaRN candidate of one rope parameter set, its defaults as transformers fills them
    (factor from the context lengths, the attention factor from `mscale`/`mscale_all_dim`)."""
    original = int(params["original_max_position_embeddings"])
    factor = params.get("factor") or config.max_position_embeddings / original

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        m, m_all = params.get("mscale"), params.get("mscale_all_dim")
        attention_factor = (
            mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)
        )
    top = getattr(config, "rope_parameters", None) or {}
    return {
        "theta": theta,
        "scaling": "yarn",
        "factor": float(factor),
        "original_max_position_embeddings": original,
        "beta_fast": float(params.get("beta_fast") or 32.0),
        "beta_slow": float(params.get("beta_slow") or 1.0),
        "attention_factor": float(attention_factor),
        # transformers reads `truncate` from the top-level parameters, even when nested
        "truncate": bool(top.get("truncate", True)),
    }


def _rope(name: str, found: dict, rotary_dim: int) -> Rope:
    return Rope(
        theta=found["theta"],
        rotary_dim=rotary_dim,
        scaling=RopeScaling(name.split("|")[0]),
        factor=found.get("factor", 1.0),
        low_freq_factor=found.get("low_freq_factor", 1.0),
        high_freq_factor=found.get("high_freq_factor", 4.0),
        original_max_position_embeddings=found.get("original_max_position_embeddings", 8192),
        **{k: found[k] for k in _YARN_FIELDS if k in found},
    )


_YARN_FIELDS = ("beta_fast", "beta_slow", "attention_factor", "truncate")


def recognize_table(what: str, tables, config) -> Rope:
    """The rope whose cos table is one of `tables` ((positions, width) tensors), among the
    candidates the config's rope parameters give (each theta; plain, linear, Llama 3 or YaRN).
    A table holds each frequency for both halves of the rotated features (`rotate_half`), twice
    in a row (Cohere's table for interleaved pairs), or once (GPT-OSS: `width` is half the
    rotated features); which features rotate together is probed later (`probe_layout`)."""
    for observed in tables:
        width, positions = observed.shape[-1], observed.shape[0]
        candidates: dict[str, tuple[dict, int]] = {}
        for form, rotary_dim in (("", width), ("|pairs", width), ("|single", 2 * width)):
            candidates |= {f"{k}{form}": (c, rotary_dim) for k, c in _candidates(config).items()}
        refs = {
            k: (
                lambda c=c, d=d, n=positions, form=k.rpartition("|")[2]: probes.rope_cos(
                    c["theta"],
                    d,
                    n,
                    {x: y for x, y in c.items() if x != "theta"} or None,
                    pairs=form == "pairs",
                    single=form == "single",
                )
            )
            for k, (c, d) in candidates.items()
        }
        try:
            chosen = probes.pick(what, observed, refs)
        except UnsupportedModelError:
            if observed is tables[-1]:
                raise
            continue
        found, rotary_dim = candidates[chosen]
        return _rope(chosen, found, rotary_dim)
    raise UnsupportedModelError(f"{what}: no rotary table found")


# What applying rope in interleaved pairs calls inside attention, besides the half-split ops:
# the table's halves spread to pairs (GLM's `repeat_interleave`), `stack((-x2, x1)).flatten()`.
INTERLEAVED_OPS = {"repeat_interleave", "stack", "flatten"}

_PROBE_POSITIONS = 64  # angles stay small enough for float32 tables to agree to 1e-4


# What rope built inside attention from its own sin/cos buffer calls (GPT-J, CodeGen: the
# buffer tiled over the batch and gathered at the position ids), besides the rotation's ops.
INSIDE_OPS = {"repeat", "gather"}


def _same_everywhere(out: torch.Tensor) -> torch.Tensor:
    return out[:, :1].expand_as(out).clone()


def _rotated_operands(G, attn: str, sources: list[str], head_dim: int, query_scale=None) -> dict:
    """The query and key operands of the score product, (rows, positions, head_dim), when the
    projections `sources` give every position the same output; the query divided by
    `query_scale` (a factor per position applied besides rope, `query_temperature`)."""
    run = attention_probe.run(G, attn, replace={s: _same_everywhere for s in sources})
    # A matmul-like score product takes the key transposed, (..., head_dim, positions): said
    # by the op, not guessed from the shape, which cannot tell when length == head_dim (64).
    key_transposed = run.product != "einsum"
    found = {
        what: _by_position(operand, run.length, head_dim, transposed)[:, :_PROBE_POSITIONS].double()
        for what, operand, transposed in (
            ("query", run.query, False),
            ("key", run.key, key_transposed),
        )
    }
    if query_scale is not None:
        found["query"] = found["query"] / query_scale[: found["query"].shape[1]][None, :, None]
    return found


def recognize_inside(
    G, attn: str, sources: list[str], head_dim: int, config, query_scale=None
) -> Rope | None:
    """The rope an attention applies without being handed rotary tables (GPT-J and CodeGen
    build them from a buffer of their own), measured: with every position given the same
    pre-rope query and key, the features that change with the position are the rotated ones
    (the first `rotary_dim`), and the angles at position p must be p times the frequencies of
    one of the config's rope candidates, in one of the two layouts. None when the query and
    key reaching the score product do not change with the position."""
    operands = _rotated_operands(G, attn, sources, head_dim, query_scale)
    if all(_rotation_error(v, torch.zeros(1), 0, None) <= 1e-4 for v in operands.values()):
        return None
    moved = torch.stack(
        [
            (v - v[:, :1]).abs().amax((0, 1)) / (v.pow(2).mean().sqrt() or 1.0)
            for v in operands.values()
        ]
    ).amax(0)
    changed = (moved > 1e-6).nonzero()
    rotary_dim = int(changed.max()) + 1
    rotary_dim += rotary_dim % 2
    tried = []
    for name, found in _candidates(config).items():
        rope = _rope(name, found, rotary_dim)
        tried.append(f"{name}|{rotary_dim}")
        layout = _layout_of(operands, rope)
        if layout is not None:
            return dataclasses.replace(rope, layout=layout)
    raise UnsupportedModelError(
        f"{attn}: its queries and keys are rotated by position, but by none of the known "
        f"references ({', '.join(tried)}); it needs the op-by-op fallback, which this version "
        "of hf2kh does not emit"
    )


def _layout_of(operands: dict, rope: Rope) -> RopeLayout | None:
    """The one layout in which both operands are position 0's rotated by `rope`, or None."""
    frequencies = probes.rope_inv_freq(rope.theta, rope.rotary_dim, _scaling(rope)).double()
    found = None
    for vectors in operands.values():
        angles = torch.arange(vectors.shape[1]).double()[:, None] * frequencies[None]
        matching = [
            layout
            for layout in RopeLayout
            if _rotation_error(vectors, angles, rope.rotary_dim, layout) <= 1e-4
        ]
        if not matching or (found is not None and found not in matching):
            return None
        found = found or matching[0]
    return found


def probe_layout(
    G, attn: str, sources: list[str], rope: Rope, head_dim: int, query_scale=None
) -> Rope | None:
    """`rope` with the layout the attention `attn` applies, measured: its q/k projections
    (`sources`, full paths) give every position the same output, so the query and key operands
    of the score product at position p are position 0's rotated by p times the frequencies.
    None when they are not rotated at all (a layer without rope, though handed the tables:
    Cohere 2's global layers). `query_scale`: as `_rotated_operands`."""
    operands = _rotated_operands(G, attn, sources, head_dim, query_scale)
    frequencies = probes.rope_inv_freq(rope.theta, rope.rotary_dim, _scaling(rope)).double()
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
    if rope.scaling is RopeScaling.YARN:
        found |= {k: getattr(rope, k) for k in _YARN_FIELDS}
        found["original_max_position_embeddings"] = rope.original_max_position_embeddings
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
        "int. Llama 3 / YaRN rope scaling: original context.",
    ),
    "rope_beta_fast": ("beta_fast", "float. YaRN: rotations where the ramp starts."),
    "rope_beta_slow": ("beta_slow", "float. YaRN: rotations where the ramp ends."),
    "rope_attention_factor": ("attention_factor", "float. YaRN: multiplies cos and sin."),
    "rope_truncate": ("truncate", "bool. YaRN: round the ramp's ends to whole dimensions."),
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
    if rope.scaling is RopeScaling.YARN:
        values["rope_original_max_position_embeddings"] = rope.original_max_position_embeddings
        values |= {f"rope_{k}": getattr(rope, k) for k in _YARN_FIELDS}
    return [Arg(name, value, _ARGS[name][1]) for name, value in values.items()]


def layer_arg(block_arg: str) -> str:
    """The rotary layer's own name for a block argument (`rope_rotary_dim` -> `rotary_dim`)."""
    return _ARGS[block_arg][0]
