"""Numeric probes: run a HF submodule on random inputs, keep the candidate reference that matches.

Submodules come from the meta-device model; a probe copies one to the CPU with random weights, so
probing a 70B model's norm costs a few KB.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch.utils._pytree import tree_map_only
from transformers.cache_utils import Cache

from hf2kh.errors import UnsupportedModelError

ProbeTolerance = 1e-5


def materialize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A CPU float32 copy of `module` with random parameters (meta tensors have no values)."""
    clone = copy.deepcopy(module).to_empty(device="cpu").float()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in clone.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if p.ndim == 1 else 0.0))
    return clone.eval()


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False  # a module returning a tuple (FNet's Fourier sublayer) is no reference's
    a, b = a.detach(), b.detach()
    scale = float(b.float().pow(2).mean().sqrt()) or 1.0
    return a.shape == b.shape and float((a - b).abs().max()) <= ProbeTolerance * max(scale, 1.0)


def matches(observed: torch.Tensor, candidate: torch.Tensor) -> bool:
    """Whether a candidate reference's output equals the observed one (probe tolerance)."""
    return _close(candidate, observed)


def pick(
    what: str, observed: torch.Tensor, candidates: dict[str, Callable[[], torch.Tensor]]
) -> str:
    """The name of the first candidate whose output matches `observed`."""
    for name, fn in candidates.items():
        if _close(fn(), observed):
            return name
    raise UnsupportedModelError(
        f"{what} matches none of the known references ({', '.join(candidates)}); "
        "it needs the op-by-op fallback, which this version of hf2kh does not emit"
    )


def probe_norm(
    module: torch.nn.Module, width: int, epsilons: list[float]
) -> tuple[str, float, float]:
    """(kind, epsilon, scale_offset) of a normalization module, by matching references."""
    norm = materialize(module)
    x = torch.randn(3, 5, width, generator=torch.Generator().manual_seed(1)) * 3 + 0.7
    with torch.no_grad():
        observed = norm(x)
    params = dict(norm.named_parameters())
    weight = params.get("weight")
    bias = params.get("bias")
    candidates: dict[str, Callable[[], torch.Tensor]] = {}
    for eps in epsilons:
        w = weight if weight is not None else torch.ones(width)

        def rms(offset: float, eps: float = eps, w: torch.Tensor = w) -> torch.Tensor:
            y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
            return y * (offset + w)

        def layer(eps: float = eps, w: torch.Tensor = w) -> torch.Tensor:
            y = torch.nn.functional.layer_norm(x, (width,), None, None, eps)
            return y * w + (bias if bias is not None else 0.0)

        candidates[f"rms|{eps}|0"] = lambda eps=eps, rms=rms: rms(0.0)
        candidates[f"rms|{eps}|1"] = lambda eps=eps, rms=rms: rms(1.0)
        candidates[f"layer|{eps}|0"] = layer
    kind, eps, offset = pick(f"normalization {type(module).__name__}", observed, candidates).split(
        "|"
    )
    return kind, float(eps), float(offset)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": torch.nn.functional.silu,
    "gelu": lambda x: torch.nn.functional.gelu(x),
    "gelu_approximate": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "relu": torch.relu,
    "relu_squared": lambda x: torch.relu(x).square(),
}


def probe_activation(fn: Callable[[torch.Tensor], torch.Tensor]) -> str:
    x = torch.linspace(-6, 6, 241)
    with torch.no_grad():
        observed = fn(x)
    return pick("activation", observed, {k: (lambda a=a: a(x)) for k, a in ACTIVATIONS.items()})


def probe_projection(module: torch.nn.Module, in_features: int) -> tuple[str, bool]:
    """("linear" for y = x W^T, "conv1d" for y = x W) and whether it adds a bias."""
    proj = materialize(module)
    x = torch.randn(2, 3, in_features, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        observed = proj(x)
    params = dict(proj.named_parameters())
    w, b = params["weight"], params.get("bias")
    candidates = {}
    if w.shape[-1] == in_features:
        candidates["linear"] = lambda: x @ w.T + (b if b is not None else 0.0)
    if w.shape[0] == in_features:
        candidates["conv1d"] = lambda: x @ w + (b if b is not None else 0.0)
    layout = pick(f"projection {type(module).__name__}", observed, candidates)
    return layout, b is not None


def rope_inv_freq(theta: float, rotary_dim: int, scaling: dict | None) -> torch.Tensor:
    """The candidate rope's `rotary_dim / 2` frequencies in HF's float32 arithmetic."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim)
    )
    if scaling and scaling["scaling"] == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif scaling and scaling["scaling"] == "llama3":
        inv_freq = llama3_inv_freq(inv_freq, **{k: v for k, v in scaling.items() if k != "scaling"})
    elif scaling and scaling["scaling"] == "yarn":
        inv_freq = yarn_inv_freq(theta, rotary_dim, scaling)
    return inv_freq


def yarn_inv_freq(theta: float, rotary_dim: int, scaling: dict) -> torch.Tensor:
    """YaRN's frequencies (Peng et al., 2023), as transformers computes them: plain below the
    correction dimension of `beta_fast` rotations, divided by `factor` above that of `beta_slow`,
    a linear ramp in between."""
    positions = scaling["original_max_position_embeddings"]

    def correction_dim(rotations: float) -> float:
        return (rotary_dim * math.log(positions / (rotations * 2 * math.pi))) / (
            2 * math.log(theta)
        )

    low, high = correction_dim(scaling["beta_fast"]), correction_dim(scaling["beta_slow"])
    if scaling["truncate"]:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(rotary_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp
    frequencies = theta ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim)
    return (1.0 / (scaling["factor"] * frequencies)) * (1 - extrapolation) + (
        1.0 / frequencies
    ) * extrapolation


def rope_cos(
    theta: float,
    rotary_dim: int,
    positions: int,
    scaling: dict | None,
    pairs: bool = False,
    single: bool = False,
) -> torch.Tensor:
    """cos table of the candidate rope: each frequency for both halves (`rotate_half`), with
    `pairs` twice in a row (a table for interleaved pairs, Cohere's `repeat_interleave`), with
    `single` once (GPT-OSS applies it to each half)."""
    inv_freq = rope_inv_freq(theta, rotary_dim, scaling)
    freqs = torch.arange(positions).float()[:, None] * inv_freq[None]
    factor = (scaling or {}).get("attention_factor", 1.0)  # YaRN's, on cos and sin
    if single:
        return freqs.cos() * factor
    if pairs:
        return freqs.repeat_interleave(2, dim=-1).cos() * factor
    return torch.cat([freqs, freqs], -1).cos() * factor


def llama3_inv_freq(
    inv_freq, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings
):
    low_wavelen = original_max_position_embeddings / low_freq_factor
    high_wavelen = original_max_position_embeddings / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_max_position_embeddings / wavelen - low_freq_factor) / (
        high_freq_factor - low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


class _Stop(Exception):
    pass


def run_stem(
    model: torch.nn.Module,
    embed: str,
    position: str | None,
    block0: str,
    skip: tuple[str, ...],
    length: int = 64,
    projection: str | None = None,
    blocks: tuple[str, ...] = (),
    norm: str | None = None,
    tables: tuple[str, ...] = (),
) -> dict:
    """Run the model's code before its first block on the CPU, with random stem weights.

    Only modules outside `skip` (the block container and the head) are materialized, so this is
    cheap for a model of any size. Returns the rows of the token embedding table that were looked
    up, the position embedding output (if any), the projected embeddings (if `projection`), the
    normalized embeddings and the norm's input (if `norm`, as `normed` and `norm_input`) and the
    first block's input, for a batch of `length` tokens. With `blocks` (every block's path, in
    order), the forward runs on to the last of them, each block passing its input through
    (`_record_inputs`), and `inputs` holds the arguments each block received (masks, rotary
    tables, ALiBi tensors) under its path. Each of `tables` gives its output (`table:<path>`)
    and its rows (`rows:<path>`).
    """
    stem = copy.deepcopy(model)
    _materialize_outside(stem, skip)
    captured: dict = {"inputs": {}}
    for path in blocks:
        _record_inputs(stem.get_submodule(path), path, captured["inputs"], last=path == blocks[-1])

    def keep(key):
        def hook(module, args, output):
            if isinstance(output, (tuple, list)):  # (values, scale): I-BERT's QuantEmbedding
                output = output[0]
            captured[key] = output.detach().clone()

        return hook

    def keep_norm_input(module, args):
        captured["norm_input"] = args[0].detach().clone()

    def keep_input(module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        captured["block"] = hidden.detach().clone()

    def stop(module, args, kwargs):
        keep_input(module, args, kwargs)
        raise _Stop

    table = stem.get_submodule(embed).weight
    handles = []
    if position is not None:
        handles.append(stem.get_submodule(position).register_forward_hook(keep("position")))
        captured["position_table"] = stem.get_submodule(position).weight.detach().clone()
    if projection is not None:
        handles.append(stem.get_submodule(projection).register_forward_hook(keep("projected")))
    if norm is not None:
        handles.append(stem.get_submodule(norm).register_forward_hook(keep("normed")))
        handles.append(stem.get_submodule(norm).register_forward_pre_hook(keep_norm_input))
    for path in tables:  # other embedding tables (positions, token types): output and table
        handles.append(stem.get_submodule(path).register_forward_hook(keep(f"table:{path}")))
        captured[f"rows:{path}"] = stem.get_submodule(path).weight.detach().clone()
    if not blocks:
        handles.append(stem.get_submodule(block0).register_forward_pre_hook(stop, with_kwargs=True))
    else:
        handles.append(
            stem.get_submodule(block0).register_forward_pre_hook(keep_input, with_kwargs=True)
        )
    vocab = stem.get_submodule(embed).weight.shape[0]
    ids = torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(3))
    captured["embed"] = table.detach()[ids].clone()
    captured["ids"] = ids
    try:
        with torch.no_grad():
            stem(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    if "block" not in captured:
        raise UnsupportedModelError(f"the forward never reached {block0}")
    return captured


def _record_inputs(block: torch.nn.Module, path: str, store: dict, last: bool) -> None:
    """Replace `block.forward` (on the stem copy) by a recorder: it keeps the block's arguments
    and returns what the block would, shaped by a run on the meta device, with the input hidden
    states passed through (and zeros for any other tensor). The last block stops the forward."""
    forward = block.forward

    def to_meta(t: torch.Tensor) -> torch.Tensor:
        return t.to("meta")

    def record(*args, **kwargs):
        # A key/value cache handed to the block would collect the meta run's keys below and
        # mix devices in every later probe of it: the probes run without one.
        args, kwargs = tree_map_only(Cache, lambda _: None, (args, kwargs))
        store[path] = (
            tree_map_only(torch.Tensor, lambda t: t.detach().clone(), args),
            tree_map_only(torch.Tensor, lambda t: t.detach().clone(), kwargs),
        )
        if last:
            raise _Stop
        hidden = args[0] if args else kwargs["hidden_states"]
        shaped = forward(
            *tree_map_only(torch.Tensor, to_meta, args),
            **tree_map_only(torch.Tensor, to_meta, kwargs),
        )
        passed = []

        def fill(t: torch.Tensor) -> torch.Tensor:
            if not passed and t.shape == hidden.shape:
                passed.append(t)
                return hidden
            return torch.zeros(t.shape, dtype=t.dtype)

        return tree_map_only(torch.Tensor, fill, shaped)

    block.forward = record


def _materialize_outside(model: torch.nn.Module, skip: tuple[str, ...]) -> None:
    """Give every module outside `skip` real CPU tensors, initialized the way transformers does
    (which also recomputes derived buffers such as rotary frequencies and embedding scales)."""
    torch.manual_seed(4)
    gen = torch.Generator().manual_seed(4)

    def visit(module: torch.nn.Module, path: str) -> None:
        if path in skip:
            return
        for name, child in module.named_children():
            visit(child, f"{path}.{name}" if path else name)
        module.to_empty(device="cpu", recurse=False)
        # Defined values first: `_init_weights` finds norms by class name, so a renamed norm
        # (BLOOM's embedding LayerNorm) would keep uninitialized memory.
        with torch.no_grad():
            for p in module.parameters(recurse=False):
                p.copy_(torch.ones(p.shape) if p.ndim == 1 else torch.randn(p.shape, generator=gen))
        init = getattr(model, "_init_weights", None)
        if init is not None:
            init(module)
        _rebuild_buffers(module, getattr(model, "config", None))

    visit(model, "")


def _rebuild_buffers(module: torch.nn.Module, config) -> None:
    """A parameterless module with buffers (rotary frequencies) gets the buffers a fresh CPU
    instance computes: transformers' `_init_weights` recognizes rotary modules by class name,
    which a renamed class defeats."""
    buffers = dict(module.named_buffers(recurse=False))
    if not buffers or list(module.parameters(recurse=False)) or config is None:
        return
    try:
        fresh = type(module)(config=config)
    except Exception:  # noqa: BLE001 - not built from the config alone: keep the init's values
        return
    with torch.no_grad():
        for name, value in fresh.named_buffers(recurse=False):
            if name in buffers and buffers[name].shape == value.shape:
                buffers[name].copy_(value)
