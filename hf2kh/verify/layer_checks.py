"""What the decoder and encoder checks share: the sample batches, HF's block inputs and outputs
recorded with hooks, comparisons turned into report checks, and the first divergence named."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hf2kh.verify.compare import Comparison
from hf2kh.verify.report import Check


@dataclass(frozen=True)
class Case:
    """One input batch: `lengths[i]` real tokens in row i, right-padded to `max(lengths)`."""

    lengths: tuple[int, ...]


# The sample batches are drawn with these seeds, one per case; the greedy prompts with GREEDY_SEED.
INPUT_SEEDS = (0, 1, 2)
GREEDY_SEED = 99


def default_cases(max_positions: int | None) -> list[Case]:
    cases = [Case((5,)), Case((13, 9)), Case((24, 17, 3))]
    if max_positions:
        cases = [Case(tuple(min(n, max_positions) for n in c.lengths)) for c in cases]
    return cases


def make_inputs(case: Case, vocab_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    length = max(case.lengths)
    token_ids = rng.integers(0, vocab_size, size=(len(case.lengths), length)).astype("int32")
    padding_mask = np.zeros_like(token_ids)
    for row, n in enumerate(case.lengths):
        padding_mask[row, :n] = 1
        token_ids[row, n:] = 0
    return token_ids, padding_mask


class HFRecorder:
    """Captures each HF block's input hidden states and output with forward hooks."""

    def __init__(self, model: torch.nn.Module, block_paths: list[str]):
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self._handles = []
        for path in dict.fromkeys(block_paths):  # a block shared by all layers: one hook, N calls
            module = model.get_submodule(path)
            self._handles.append(module.register_forward_pre_hook(self._pre, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._post))

    def _pre(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        self.inputs.append(hidden.detach().float().cpu())

    def _post(self, module, args, output):
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        self.outputs.append(hidden.detach().float().cpu())

    def close(self):
        for h in self._handles:
            h.remove()


def hf_device(model: torch.nn.Module) -> torch.device:
    """Where the HF model's inputs go: its parameters' device, or the device a streamed model
    (`hf2kh.verify.stream`, parameters on `meta` until their block runs) reads them to."""
    return getattr(model, "hf2kh_device", None) or next(model.parameters()).device


def to_numpy(x) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float32)


def as_check(c: Comparison, group: str, detail: str = "") -> Check:
    text = detail or (f"worst at {list(c.worst_index)}" if c.worst_index else "")
    return Check(
        c.name, group, c.passed, text, c.max_abs, c.rel_rms, c.worst_index, c.rel_elementwise
    )


def worst(comparisons: list[Comparison]) -> Comparison:
    return max(comparisons, key=lambda c: c.rel_elementwise)


def layer_check(end_to_end: Comparison, alone: Comparison, path: str) -> Check:
    """A layer passes when its end-to-end output is within tolerance, or when it deviates only by
    error accumulated upstream: the same block on HF's own input is within tolerance. (Deep real
    models amplify float32 rounding from layer to layer; the block-alone check is what tells a
    wrong block from that. The logits are still held to the tolerance on their own.)"""
    check = as_check(end_to_end, "layers", f"vs HF {path}")
    if not end_to_end.passed and alone.passed:
        check.passed = True
        check.detail = (
            f"vs HF {path}: accumulated upstream rounding; the block alone is within tolerance "
            f"({alone.rel_elementwise:.1e})"
        )
    return check


def first_divergence(checks: list[Check], block_paths: list[str]) -> str | None:
    by_name = {c.name: c for c in checks}
    for c in checks:
        if c.group == "layers" and not c.passed:
            if c.name == "embeddings":
                return "embeddings: the token/position embedding differs before any block"
            alone = by_name.get(f"{c.name} alone")
            index = int(c.name.rpartition("_")[2])
            where = f"{c.name} (HF {block_paths[index]})"
            if alone is not None and not alone.passed:
                return f"{where}: wrong on its own inputs too, so this block's code is at fault"
            return f"{where}: correct on HF's inputs, so the error accumulates from earlier layers"
    logits = by_name.get("logits")
    if logits is not None and not logits.passed:
        return (
            "logits: every block matches on HF's inputs, so the final norm or LM head differs "
            "(or upstream rounding grew past the tolerance)"
        )
    return None


def named_layers(backbone) -> list[tuple[str, object]]:
    """(name, layer) of each layer of `backbone` in order: its `transformer_layers`, or its one
    `transformer_layer` shared by all layers, named `transformer_layer_<i>` at depth i."""
    layers = getattr(backbone, "transformer_layers", None)
    if layers is not None:
        return [(layer.name, layer) for layer in layers]
    shared = backbone.transformer_layer
    return [(f"{shared.name}_{i}", shared) for i in range(backbone.num_layers)]


def layer_outputs_model(backbone):
    """A model giving every transformer layer's output of `backbone` (each call of a shared
    layer: its inbound nodes, in the order the backbone's graph made them)."""
    import keras

    layers = [layer for _, layer in named_layers(backbone)]
    outputs = [
        layer._inbound_nodes[layers[:i].count(layer)].output_tensors[0]
        for i, layer in enumerate(layers)
    ]
    # Built in a stateless scope: outside one, Keras' torch backend gathers every variable's
    # value into the new model's torch parameters, which would read every variable of a streamed
    # model (`hf2kh.verify.stream`) into memory at once.
    with keras.StatelessScope(initialize_variables=False):
        return keras.Model(backbone.input, outputs)
