"""Prove an encoder port: the embeddings, every layer end to end and alone, the backbone output on
padded batches, the task's logits (masked-LM logits, or a classifier's class logits), tokenizer
ids. No generation.

The Keras side is the generated package imported from disk with the preset its conversion script
wrote. HF's padded positions compute nothing meaningful (they are masked out of every other
position's attention but still attend themselves), so only non-padded positions are compared.
Segment ids (token types) are drawn at random when the backbone takes them, so the segment table
is exercised beyond its first row.
"""

from __future__ import annotations

import numpy as np
import torch

from hf2kh.verify.compare import TOLERANCES, Comparison, compare
from hf2kh.verify.layer_checks import (
    Case,
    HFRecorder,
    as_check,
    default_cases,
    first_divergence,
    layer_check,
    layer_outputs_model,
    make_inputs,
    named_layers,
    to_numpy,
    worst,
)
from hf2kh.verify.report import Check, VerifyReport


def encoder_inputs(backbone, case: Case, seed: int) -> dict[str, np.ndarray]:
    """The Keras inputs of one batch: token ids, padding mask, and segment ids if the backbone
    takes them (random, zero on padding)."""
    token_ids, padding_mask = make_inputs(case, backbone.vocabulary_size, seed)
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    if "segment_ids" in backbone.input:
        rng = np.random.default_rng(1000 + seed)
        segments = rng.integers(0, backbone.num_segments, size=token_ids.shape)
        inputs["segment_ids"] = (segments * padding_mask).astype("int32")
    return inputs


def hf_forward(hf_model, inputs: dict[str, np.ndarray]):
    """HF's outputs on the same inputs (`segment_ids` as `token_type_ids`)."""
    device = next(hf_model.parameters()).device
    kwargs = {
        "input_ids": torch.as_tensor(inputs["token_ids"], dtype=torch.long, device=device),
        "attention_mask": torch.as_tensor(inputs["padding_mask"], device=device),
    }
    if "segment_ids" in inputs:
        kwargs["token_type_ids"] = torch.as_tensor(
            inputs["segment_ids"], dtype=torch.long, device=device
        )
    with torch.no_grad():
        return hf_model(**kwargs)


def all_positions(token_ids: np.ndarray) -> np.ndarray:
    """`mask_positions` asking the masked-LM head for every position of every row."""
    batch, length = token_ids.shape
    return np.broadcast_to(np.arange(length, dtype="int32"), (batch, length)).copy()


def verify_masked_lm(
    hf_model: torch.nn.Module,
    masked_lm,
    block_paths: list[str],
    hf_tokenizer,
    corpus: list[str],
    *,
    name: str,
    backbone=None,
    preprocessor=None,
    dtype: str = "float32",
    device: str = "cpu",
    cases: list[Case] | None = None,
    rtol: float | None = None,
) -> VerifyReport:
    import keras

    report = VerifyReport(model=name, dtype=dtype, device=device)
    tolerance = TOLERANCES[dtype] if rtol is None else rtol
    if masked_lm is not None:  # a task; else a bare encoder's `backbone` and `preprocessor`
        backbone, preprocessor = masked_lm.backbone, masked_lm.preprocessor
    cases = cases or default_cases(getattr(backbone, "max_sequence_length", None))
    layer_model = layer_outputs_model(backbone)
    per_layer: list[list[Comparison]] = [[] for _ in block_paths]
    alone: list[list[Comparison]] = [[] for _ in block_paths]
    embeds: list[Comparison] = []
    outputs: list[Comparison] = []
    logits: list[Comparison] = []
    for seed, case in enumerate(cases):
        inputs = encoder_inputs(backbone, case, seed)
        valid = inputs["padding_mask"].astype(bool)
        recorder = HFRecorder(hf_model, block_paths)
        # the backbone's output: after a final norm, where the model has one (ModernBERT)
        hf_backbone: list[torch.Tensor] = []
        hook = hf_model.base_model.register_forward_hook(
            lambda module, args, out, found=hf_backbone: found.append(_hidden_states(out))
        )
        try:
            hf_output = hf_forward(hf_model, inputs)
        finally:
            recorder.close()
            hook.remove()
        keras_layers = layer_model(inputs)
        segments = [inputs["segment_ids"]] if "segment_ids" in inputs else []
        embedded = to_numpy(backbone.embed(inputs["token_ids"], *segments))
        embeds.append(compare("embeddings", recorder.inputs[0].numpy(), embedded, valid, tolerance))
        for i, (layer_name, layer) in enumerate(named_layers(backbone)):
            hf_out = recorder.outputs[i].numpy()
            per_layer[i].append(
                compare(layer_name, hf_out, to_numpy(keras_layers[i]), valid, tolerance)
            )
            block_input = keras.ops.convert_to_tensor(recorder.inputs[i].numpy())
            block_alone = layer(
                block_input,
                padding_mask=inputs["padding_mask"],
                **_shared_block_inputs(backbone, block_input),
            )
            alone[i].append(
                compare(f"{layer_name} alone", hf_out, to_numpy(block_alone), valid, tolerance)
            )
        outputs.append(
            compare(
                "backbone output",
                hf_backbone[0].detach().float().cpu().numpy(),
                to_numpy(backbone(inputs)),
                valid,
                tolerance,
            )
        )
        if masked_lm is not None:
            hf_logits = hf_output.logits.float().cpu().numpy()
            logits.append(_task_logits(masked_lm, inputs, hf_logits, valid, tolerance))

    shapes = ", ".join("x".join(map(str, (len(c.lengths), max(c.lengths)))) for c in cases)
    report.checks.append(as_check(worst(embeds), "layers"))
    for i, path in enumerate(block_paths):
        report.checks.append(layer_check(worst(per_layer[i]), worst(alone[i]), path))
    for i, path in enumerate(block_paths):
        report.checks.append(as_check(worst(alone[i]), "blocks", f"on HF {path}'s recorded input"))
    padded = f"batches {shapes}, right padding (non-padded positions compared)"
    report.checks.append(as_check(worst(outputs), "outputs", padded))
    if logits:
        where = "every position; " if logits[0].name == "masked-LM logits" else ""
        report.checks.append(as_check(worst(logits), "logits", f"{where}{padded}"))
    report.first_divergence = first_divergence(report.checks, block_paths)
    report.checks.extend(_tokenizer_ids(hf_tokenizer, preprocessor, corpus))
    return report


def _shared_block_inputs(backbone, hidden_states) -> dict:
    """What the backbone hands every block besides the hidden states and the mask: the
    relative-position table of a disentangled attention (DeBERTa), computed by its layer."""
    if getattr(backbone, "relative_embedding", None) is None:
        return {}
    return {"relative_embeddings": backbone.relative_embedding(hidden_states)}


def _hidden_states(output) -> torch.Tensor:
    """The hidden states a transformers base model returns (a `ModelOutput` or a tuple)."""
    if isinstance(output, (tuple, list)):
        return output[0]
    return output.last_hidden_state


def _task_logits(task, inputs, hf_logits, valid, tolerance) -> Comparison:
    """The task's logits against HF's: the masked-LM head asked for every position (non-padded
    ones compared), or a classifier's class logits (one row per text)."""
    if "mask_positions" in task.input:
        masked = {**inputs, "mask_positions": all_positions(inputs["token_ids"])}
        return compare("masked-LM logits", hf_logits, to_numpy(task(masked)), valid, tolerance)
    return compare("class logits", hf_logits, to_numpy(task(inputs)), None, tolerance)


def _tokenizer_ids(hf_tokenizer, preprocessor, corpus: list[str]) -> list[Check]:
    """The generated tokenizer's ids on the corpus (no special tokens) against HF's."""
    if hf_tokenizer is None or preprocessor is None:
        return []
    mismatches = [
        text
        for text in corpus
        if to_numpy(preprocessor.tokenizer(text)).astype(int).tolist()
        != hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    ]
    detail = "identical" if not mismatches else f"differs on {mismatches[0]!r}"
    return [Check(f"tokenizer ids ({len(corpus)} texts)", "tokenizer", not mismatches, detail)]


def verify_masked_lm_port(module, ir, preset: str, hf_model, hf_tokenizer, tokenizer_spec, **kw):
    """Load the preset as its KerasHub task (`MaskedLM`, `TextClassifier`; a bare encoder's
    `Backbone` and `TextClassifierPreprocessor`; each must be the generated class) and run
    `verify_masked_lm` on it; `kw`: dtype, device, rtol."""
    from hf2kh.generate.context import TASK_CLASSES
    from hf2kh.generate.tokenizer import tokenizer_test_corpus
    from hf2kh.ir import Task

    if ir.head.task is Task.BASE:
        masked_lm = None
        kw["backbone"] = _load_generated(module, ir, "Backbone", preset)
        kw["preprocessor"] = _load_generated(module, ir, "TextClassifierPreprocessor", preset)
    else:
        masked_lm = _load_generated(module, ir, TASK_CLASSES[ir.head.task], preset)
    return verify_masked_lm(
        hf_model,
        masked_lm,
        [ir.block_path(i) for i in range(ir.num_layers)],
        hf_tokenizer,
        tokenizer_test_corpus(tokenizer_spec.special_tokens),
        name=ir.name,
        **kw,
    )


def _load_generated(module, ir, kind: str, preset: str):
    """`keras_hub.models.<kind>.from_preset(preset)`, which must be the generated class."""
    import keras_hub

    from hf2kh.errors import VerificationFailed

    loaded = getattr(keras_hub.models, kind).from_preset(preset)
    expected = getattr(module, f"{ir.class_prefix}{kind}")
    if type(loaded) is not expected:
        raise VerificationFailed(
            f"the preset loads as {type(loaded).__name__}, not {expected.__name__}"
        )
    return loaded
