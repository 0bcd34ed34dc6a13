"""Prove a decoder LM port: every layer, the logits, cached greedy generation, tokenizer ids.

The Keras side is the generated package imported from disk with the preset its conversion script
wrote: exactly what the user gets. The HF side is the original model in float32 (eager attention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hf2kh.verify.compare import TOLERANCES, Comparison, compare
from hf2kh.verify.layer_checks import (
    GREEDY_SEED,
    INPUT_SEEDS,
    Case,
    HFRecorder,
    as_check,
    default_cases,
    first_divergence,
    hf_device,
    layer_check,
    layer_outputs_model,
    make_inputs,
    to_numpy,
    worst,
)
from hf2kh.verify.report import Check, VerifyReport
from hf2kh.verify.sublayers import MODES, HFPointRecorder, KerasPointRecorder, Point, same_shape


def verify_decoder(
    hf_model: torch.nn.Module,
    causal_lm,
    block_paths: list[str],
    hf_tokenizer,
    corpus: list[str],
    *,
    name: str,
    dtype: str = "float32",
    device: str = "cpu",
    cases: list[Case] | None = None,
    new_tokens: int = 16,
    rtol: float | None = None,
    sublayers: list[list[Point]] | None = None,
    greedy: bool = True,
) -> VerifyReport:
    """`rtol` overrides the dtype's tolerance; `sublayers` (`hf2kh.verify.sublayers`) are the
    module outputs compared inside each block to say where a failing block goes wrong; without
    `greedy` (streamed verification) generation is not compared and the report notes it."""
    import keras

    report = VerifyReport(model=name, dtype=dtype, device=device)
    tolerance = TOLERANCES[dtype] if rtol is None else rtol
    points = [p for layer_points in sublayers or [] for p in layer_points]
    keras_points = KerasPointRecorder(causal_lm.backbone, points)
    point_results: dict[tuple[str, str], list[Comparison]] = {}
    backbone = causal_lm.backbone
    vocab = backbone.vocabulary_size
    cases = cases or default_cases(getattr(backbone, "max_sequence_length", None))
    layer_model = layer_outputs_model(backbone)
    per_layer: list[list[Comparison]] = [[] for _ in block_paths]
    alone: list[list[Comparison]] = [[] for _ in block_paths]
    embeds: list[Comparison] = []
    logits: list[Comparison] = []
    for seed, case in zip(INPUT_SEEDS, cases, strict=False):
        token_ids, padding_mask = make_inputs(case, vocab, seed)
        valid = padding_mask.astype(bool)
        recorder = HFRecorder(hf_model, block_paths)
        hf_points = HFPointRecorder(hf_model, points)
        try:
            with torch.no_grad():
                device_of = hf_device(hf_model)
                hf_logits = (
                    hf_model(
                        input_ids=torch.as_tensor(token_ids, dtype=torch.long, device=device_of),
                        attention_mask=torch.as_tensor(padding_mask, device=device_of),
                    )
                    .logits.float()
                    .cpu()
                    .numpy()
                )
        finally:
            recorder.close()
            hf_points.close()
        inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
        keras_points.mode = MODES[0]
        keras_layers = layer_model(inputs)
        keras_points.mode = None
        keras_logits = to_numpy(causal_lm(inputs))
        embeds.append(
            compare(
                "embeddings",
                recorder.inputs[0].numpy(),
                to_numpy(backbone.embed(token_ids)),
                valid,
                tolerance,
            )
        )
        for i, layer in enumerate(backbone.transformer_layers):
            hf_out = recorder.outputs[i].numpy()
            per_layer[i].append(
                compare(layer.name, hf_out, to_numpy(keras_layers[i]), valid, tolerance)
            )
            keras_points.mode = MODES[1]
            block_alone = layer(
                keras.ops.convert_to_tensor(recorder.inputs[i].numpy()), padding_mask=padding_mask
            )
            keras_points.mode = None
            alone[i].append(
                compare(f"{layer.name} alone", hf_out, to_numpy(block_alone), valid, tolerance)
            )
        logits.append(compare("logits", hf_logits, keras_logits, valid, tolerance))
        _compare_points(points, hf_points, keras_points, valid, tolerance, point_results)
    keras_points.close()

    shapes = ", ".join("x".join(map(str, (len(c.lengths), max(c.lengths)))) for c in cases)
    report.checks.append(as_check(worst(embeds), "layers"))
    for i, path in enumerate(block_paths):
        report.checks.append(layer_check(worst(per_layer[i]), worst(alone[i]), path))
    for i, path in enumerate(block_paths):
        report.checks.append(as_check(worst(alone[i]), "blocks", f"on HF {path}'s recorded input"))
    report.checks.append(as_check(worst(logits), "logits", f"batches {shapes}, right padding"))
    report.first_divergence = first_divergence(report.checks, block_paths)
    located = _localize(report.checks, sublayers or [], keras_points.order, point_results)
    report.checks.extend(located)
    if located and report.first_divergence:
        keras_path, _, mode = located[0].name.rstrip(")").partition(" (")
        hf_path = located[0].detail.removeprefix("HF ").partition(": ")[0]
        where = located[0].detail.rpartition("; ")[2]
        report.first_divergence += (
            f"; first diverging sublayer ({mode}): Keras {keras_path} = HF {hf_path}, {where}"
        )

    if greedy:
        report.checks.append(_greedy_check(hf_model, causal_lm, vocab, new_tokens, tolerance))
    report.checks.extend(_tokenizer_checks(hf_tokenizer, causal_lm.preprocessor, corpus))
    return report


def _compare_points(points, hf_points, keras_points, valid, tolerance, results) -> None:
    """Compare this case's recorded sublayer outputs (where both sides have the tensor)."""
    for point in points:
        reference = hf_points.outputs.get(point.hf_path)
        for mode in MODES:
            candidate = keras_points.outputs[mode].get(point.keras_path)
            if reference is None or candidate is None:
                continue
            candidate = same_shape(reference, candidate)
            if candidate is not None:
                results.setdefault((mode, point.keras_path), []).append(
                    compare(point.keras_path, reference, candidate, valid, tolerance)
                )


def _localize(checks, sublayers, order, results) -> list[Check]:
    """For each failing layer, in each mode, the first compared sublayer (in the order the block
    computes them) that diverges, named by its Keras and HF paths: a `sublayers` check. Points
    that diverge in a block passing on its own are not the same tensor on both sides (see
    `hf2kh.verify.sublayers`) and are left out."""
    by_name = {c.name: c for c in checks}
    rank = {path: n for n, path in enumerate(order)}
    per_key = {key: worst(found) for key, found in results.items()}
    passing_blocks = {
        i
        for i, layer_points in enumerate(sublayers)
        if by_name.get(f"transformer_layer_{i} alone", Check("", "", False, "")).passed
    }
    not_same = {
        p.relative
        for i in passing_blocks
        for p in sublayers[i]
        if (c := per_key.get((MODES[1], p.keras_path))) is not None and not c.passed
    }
    located = []
    for i, layer_points in enumerate(sublayers):
        name = f"transformer_layer_{i}"
        layer, alone = by_name.get(name), by_name.get(f"{name} alone")
        if layer is None or (layer.passed and alone is not None and alone.passed):
            continue
        usable = sorted(
            (p for p in layer_points if p.relative not in not_same),
            key=lambda p: rank.get(p.keras_path, len(rank)),
        )
        for mode in MODES:
            first = next(
                (
                    (p, per_key[(mode, p.keras_path)])
                    for p in usable
                    if (mode, p.keras_path) in per_key and not per_key[(mode, p.keras_path)].passed
                ),
                None,
            )
            if first is None:
                continue
            point, c = first
            starts = mode == MODES[1] or not per_key.get((MODES[1], point.keras_path), c).passed
            where = "the error starts here" if starts else "the error accumulates from upstream"
            located.append(
                as_check(
                    Comparison(
                        f"{point.keras_path} ({mode})",
                        c.max_abs,
                        c.rel_rms,
                        c.rel_elementwise,
                        c.worst_index,
                        c.tolerance,
                    ),
                    "sublayers",
                    f"HF {point.hf_path}: the first diverging sublayer of {name} {mode}, "
                    f"worst at {list(c.worst_index)}; {where}",
                )
            )
    return located


def hf_greedy(hf_model, prompt: np.ndarray, new_tokens: int, with_scale: bool = False):
    """HF's greedy continuation by full forward passes (no cache), with the top-2 margins (and,
    with `with_scale`, the RMS of each step's logits)."""
    device = hf_device(hf_model)
    ids = torch.as_tensor(prompt, dtype=torch.long, device=device)
    tokens, margins, scales = [], [], []
    with torch.no_grad():
        for _ in range(new_tokens):
            last = hf_model(input_ids=ids).logits[0, -1].float()
            top = torch.topk(last, 2)
            tokens.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
            scales.append(float(last.pow(2).mean().sqrt()))
            ids = torch.cat([ids, top.indices[:1].view(1, 1)], dim=1)
    if with_scale:
        return tokens, margins, scales
    return tokens, margins


# Greedy generation is checked on one right-padded batch of prompts of different lengths: each
# row must continue its prompt exactly as HF's greedy decoding of that prompt alone does.
GREEDY_PROMPT_LENGTHS = (6, 3, 9)
# A first difference counts as a near tie when HF's top-2 margin there is within this many times
# the dtype's tolerance on the logits (relative to the RMS of that step's logits).
NEAR_TIE_FACTOR = 4


def is_near_tie(margin: float, scale: float, tolerance: float) -> bool:
    """Whether HF's top-2 margin at a step is within the error a port in reduced precision may
    have on its logits there (`scale`: the RMS of HF's logits at that step). In float32 no
    difference is a near tie: greedy tokens must be identical."""
    return tolerance > TOLERANCES["float32"] and margin <= NEAR_TIE_FACTOR * tolerance * scale


@dataclass(frozen=True)
class GreedyRow:
    """One prompt's greedy continuation: the port's tokens, HF's, and HF's top-2 margin and
    logits RMS at each step."""

    got: list[int]
    expected: list[int]
    margins: list[float]
    scales: list[float]


def judge_greedy(rows: list[GreedyRow], tolerance: float, name: str) -> Check:
    """Greedy tokens must be identical in every row; in reduced precision a first difference at a
    near tie (see `is_near_tie`) is reported with its margin, not failed."""
    smallest = min((m for row in rows for m in row.margins), default=float("inf"))
    differing = [(r, _first_difference(row.got, row.expected)) for r, row in enumerate(rows)]
    differing = [(r, first) for r, first in differing if first is not None]
    if not differing:
        return Check(name, "generation", True, f"identical; smallest top-2 margin {smallest:.2e}")
    details, passed = [], True
    for r, first in differing:
        row = rows[r]
        if first >= min(len(row.got), len(row.expected)):
            near = False
            details.append(f"row {r}: {len(row.got)} tokens vs HF {len(row.expected)}")
        else:
            near = is_near_tie(row.margins[first], row.scales[first], tolerance)
            details.append(
                f"row {r} token {first} differs: {row.got[first]} vs HF {row.expected[first]}, "
                f"HF top-2 margin {row.margins[first]:.2e}"
                + (" (a near tie at this precision)" if near else "")
            )
        passed = passed and near
    return Check(name, "generation", passed, "; ".join(details))


def _first_difference(got: list[int], expected: list[int]) -> int | None:
    for i, (a, b) in enumerate(zip(got, expected, strict=False)):
        if a != b:
            return i
    return None if len(got) == len(expected) else min(len(got), len(expected))


def greedy_prompts(vocab: int, max_positions: int | None, new_tokens: int) -> list[np.ndarray]:
    """The prompts of the greedy check (random token ids, `GREEDY_PROMPT_LENGTHS`)."""
    rng = np.random.default_rng(GREEDY_SEED)
    lengths = list(GREEDY_PROMPT_LENGTHS)
    if max_positions:
        lengths = [max(1, min(n, max_positions - new_tokens)) for n in lengths]
    return [rng.integers(0, vocab, size=(1, n)).astype("int32") for n in lengths]


def _greedy_check(hf_model, causal_lm, vocab: int, new_tokens: int, tolerance: float) -> Check:
    """Greedy generation with the KV cache, one batch of prompts of different lengths, as token
    ids; judged by `judge_greedy`."""
    max_positions = getattr(causal_lm.backbone, "max_sequence_length", None)
    prompts = greedy_prompts(vocab, max_positions, new_tokens)
    total = max(p.shape[1] for p in prompts) + new_tokens
    token_ids = np.zeros((len(prompts), total), "int32")
    padding_mask = np.zeros((len(prompts), total), bool)
    for row, prompt in enumerate(prompts):
        token_ids[row, : prompt.shape[1]] = prompt[0]
        padding_mask[row, : prompt.shape[1]] = True
    preprocessor = causal_lm.preprocessor
    causal_lm.preprocessor = None  # token ids in, token ids out
    try:
        causal_lm.compile(sampler="greedy")
        output = causal_lm.generate(
            {"token_ids": token_ids, "padding_mask": padding_mask}, stop_token_ids=None
        )
    finally:
        causal_lm.preprocessor = preprocessor
    generated = to_numpy(output["token_ids"]).astype(int)
    rows = []
    for row, prompt in enumerate(prompts):
        n = prompt.shape[1]
        expected, margins, scales = hf_greedy(hf_model, prompt, total - n, with_scale=True)
        rows.append(GreedyRow(generated[row, n:].tolist(), expected, margins, scales))
    lengths = ", ".join(str(p.shape[1]) for p in prompts)
    name = (
        f"greedy generation ({new_tokens}+ tokens, KV cache, one batch of prompts of "
        f"lengths {lengths})"
    )
    return judge_greedy(rows, tolerance, name)


def _tokenizer_checks(hf_tokenizer, preprocessor, corpus: list[str]) -> list[Check]:
    if hf_tokenizer is None or preprocessor is None:
        return []
    tokenizer = preprocessor.tokenizer
    mismatches = []
    for text in corpus:
        expected = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        got = to_numpy(tokenizer(text)).astype(int).tolist()
        if got != expected:
            mismatches.append(text)
    checks = [
        Check(
            f"tokenizer ids ({len(corpus)} texts)",
            "tokenizer",
            not mismatches,
            "identical" if not mismatches else f"differs on {mismatches[0]!r}",
        )
    ]
    text = corpus[0]
    expected = hf_tokenizer(text)["input_ids"]
    packed = preprocessor.generate_preprocess([text], sequence_length=len(expected) + 4)
    ids = to_numpy(packed["token_ids"]).astype(int)[0]
    mask = to_numpy(packed["padding_mask"])[0].astype(bool)
    got = ids[mask].tolist()
    checks.append(
        Check(
            "preprocessor special tokens",
            "tokenizer",
            got == expected,
            "start/end tokens as HF adds them" if got == expected else f"{got} vs HF {expected}",
        )
    )
    return checks
