"""Which model types the zoo sweeps, and with which head.

Every model type of transformers' causal-LM and masked-LM auto mappings, restricted to text models
whose config class builds from its defaults. A type in both mappings (BERT, RoBERTa...) is swept
with its masked-LM head unless that head is a seq2seq model (BART's `ForConditionalGeneration`).
"""

from __future__ import annotations

from dataclasses import dataclass

# Sub-config names that mark a multimodal model (its text part is usually its own model type).
_NON_TEXT_SUBCONFIGS = ("vision", "audio", "image", "speech", "vq", "video", "patcher")


@dataclass(frozen=True)
class ZooType:
    model_type: str
    task: str  # "causal_lm" | "masked_lm"
    architecture: str  # the transformers class name written to config.architectures


@dataclass(frozen=True)
class Excluded:
    model_type: str
    reason: str


def candidate_types() -> tuple[list[ZooType], list[Excluded]]:
    """The types the zoo sweeps (sorted by name) and the ones it leaves out, with why."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )
    from transformers.utils import logging

    # default configs warn about their own token ids; not news for a listing
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return _candidates(
            CONFIG_MAPPING, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES
        )
    finally:
        logging.set_verbosity(verbosity)


def _candidates(config_mapping, causal_names, masked_names):
    causal = dict(causal_names)
    masked = dict(masked_names)
    types: list[ZooType] = []
    excluded: list[Excluded] = []
    for model_type in sorted(set(causal) | set(masked)):
        if model_type in masked and "ConditionalGeneration" not in masked[model_type]:
            task, arch = "masked_lm", masked[model_type]
        elif model_type in causal:
            task, arch = "causal_lm", causal[model_type]
        else:
            excluded.append(Excluded(model_type, f"{masked[model_type]} is a seq2seq model"))
            continue
        reason = _not_text(model_type, arch, config_mapping)
        if reason:
            excluded.append(Excluded(model_type, reason))
        else:
            types.append(ZooType(model_type, task, arch))
    return types, excluded


def _not_text(model_type: str, arch: str, config_mapping) -> str | None:
    """Why `model_type` is not a plain text model the zoo can build, or None."""
    if "ConditionalGeneration" in arch:
        return f"{arch} is a multimodal or seq2seq model"
    try:
        config_cls = config_mapping[model_type]
    except Exception as exc:  # noqa: BLE001 - a broken registration is just left out
        return f"no config class: {type(exc).__name__}"
    sub = [k for k in (getattr(config_cls, "sub_configs", None) or {})]
    multimodal = [k for k in sub if any(word in k for word in _NON_TEXT_SUBCONFIGS)]
    if multimodal:
        return f"multimodal (sub-configs {', '.join(multimodal)})"
    try:
        config_cls()
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        text = str(exc).strip().splitlines()
        return f"its config does not build from defaults: {type(exc).__name__}: " + (
            text[0][:120] if text else ""
        )
    return None


def select(types: list[ZooType], only: list[str] | None) -> list[ZooType]:
    """The types named in `only` (all when None); an unknown name is an error."""
    from hf2kh.errors import Hf2khError

    if not only:
        return types
    by_name = {t.model_type: t for t in types}
    unknown = [name for name in only if name not in by_name]
    if unknown:
        raise Hf2khError(
            f"not a text model type of the causal-LM or masked-LM mappings: {', '.join(unknown)} "
            "(`hf2kh zoo --list` shows them)"
        )
    return [by_name[name] for name in only]
