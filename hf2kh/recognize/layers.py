"""Per-layer settings, read from what each block receives and computes.

`probes.run_stem` records the arguments every block receives (its mask, its rotary tables). A
block's reach is measured, not read from a setting: a CPU copy of the block with random weights
runs on those arguments, and the gradient of one output position says which input positions it
reads: every position (bidirectional, an encoder), or the earlier ones, all or a sliding window.
That covers a window in the mask the model hands the block (Gemma 2, Mistral) and one applied
inside attention (GPT-Neo's local layers) alike.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_flatten

from hf2kh.errors import UnsupportedModelError


def materialize_block(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """A CPU float32 copy of the block at `path`: buffers as transformers initializes them
    (masks, rotary frequencies), parameters random (1-D near 1, matrices scaled by fan-in)."""
    block = copy.deepcopy(model.get_submodule(path))
    init = getattr(model, "_init_weights", None)
    for module in block.modules():
        module.to_empty(device="cpu", recurse=False)
        if init is not None:
            init(module)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in block.parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if p.ndim == 1 else noise / math.sqrt(p.shape[-1]))
            p.requires_grad_(False)
    return block.float().eval()


def _hidden_of(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@dataclass(frozen=True)
class Reach:
    """Which positions one block's output reads: every position (bidirectional, an encoder), or
    the earlier ones, all of them (`window` None) or the last `window` (itself included).
    Bidirectional with a `window`: the positions less than `window` away on either side."""

    causal: bool
    window: int | None = None


def attention_reach(model: torch.nn.Module, path: str, inputs, length: int) -> Reach:
    """What the block at `path` reads (`Reach`), measured on `length` tokens with the arguments
    `inputs` = (args, kwargs) it received."""
    args, kwargs = inputs
    hidden = _hidden_of(args, kwargs)
    block = materialize_block(model, path)
    x = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(6)).requires_grad_()
    if args:
        out = block(x, *args[1:], **kwargs)
    else:
        out = block(*args, **{**kwargs, "hidden_states": x})
    leaves = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
    out = next(t for t in leaves if t.shape == hidden.shape)
    read = {}
    for q in sorted({length - 1, length // 2}):
        (grad,) = torch.autograd.grad(out[:, q].sum(), x, retain_graph=True)
        read[q] = (grad.abs().sum(dim=(0, 2)) != 0).nonzero().flatten().tolist()
    everything = list(range(length))
    if all(keys == everything for keys in read.values()):
        return Reach(causal=False)
    if any(keys and keys[-1] > q for q, keys in read.items()):
        return _bidirectional_window(path, read, length)
    reach = {}
    for q, keys in read.items():
        if not keys or keys != list(range(keys[0], q + 1)):
            raise UnsupportedModelError(
                f"{path}: position {q} reads positions {keys[:3]}...{keys[-3:]}, neither every "
                "position, all earlier ones nor a sliding window"
            )
        reach[q] = q + 1 - keys[0]
    window = reach[length - 1]
    if any(r != min(window, q + 1) for q, r in reach.items()):
        raise UnsupportedModelError(f"{path}: the positions it reads are not one sliding window")
    return Reach(causal=True, window=None if window >= length else window)


def _bidirectional_window(path: str, read: dict[int, list[int]], length: int) -> Reach:
    """A block whose positions read later ones too, but not every one: each position `q` must
    read exactly the positions `k` with `|q - k| < window` (ModernBERT's local layers)."""
    middle = length // 2
    keys = read[middle]
    window = middle - keys[0] + 1 if keys else 0
    for q, found in read.items():
        expected = list(range(max(0, q - window + 1), min(length, q + window)))
        if window < 1 or found != expected:
            raise UnsupportedModelError(
                f"{path}: position {q} reads positions {found[:3]}...{found[-3:]}, neither every "
                "position, all earlier ones nor a sliding window"
            )
    return Reach(causal=False, window=window)


def rotary_tables(inputs, length: int) -> list[torch.Tensor]:
    """The (positions, width) tensors a block receives besides its hidden states (cos, sin)."""
    args, kwargs = inputs
    rest = [*args[1:], *(v for k, v in kwargs.items() if k != "hidden_states")]
    return [
        t.reshape(-1, length, t.shape[-1])[0]
        for t in tree_flatten(rest)[0]
        if isinstance(t, torch.Tensor)
        and t.ndim in (2, 3)
        and t.shape[-2] == length
        and t.is_floating_point()
    ]
