"""Tensor names: how transformers itself maps a checkpoint's stored names to the model's.

Checkpoints store names the current model classes may not use: a missing `base_model_prefix`
(the original GPT-2 was saved from the base model), or legacy names transformers renames on load
(`embed_out` -> `lm_head` for GPT-NeoX, `gamma`/`beta` -> `weight`/`bias`). The port reads the
tensors under their stored names, so it asks transformers' own loading rules for the mapping.
"""

from __future__ import annotations

from collections.abc import Iterable

from hf2kh.errors import UnsupportedModelError


def stored_names(model, stored: Iterable[str]) -> dict[str, str]:
    """Model parameter/buffer name -> the name the checkpoint stores it under.

    Only renames are followed; a tensor transformers converts on load (fused, split or
    permuted by a `WeightConverter`) is refused, naming it. Experts stored one by one and
    stacked on load (`MergeModulelist`, then `Concatenate` of gate and up) are left out of the
    mapping but under their renamed names: the mixture-of-experts component's rows read them
    (`hf2kh.components.moe.stored_experts`), and the weight audit checks every one is used.
    """
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import (
        WeightConverter,
        WeightRenaming,
        apply_renamings,
        rename_source_key,
    )

    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    meta_state_dict = model.state_dict()
    mapping: dict[str, str] = {}
    for name in stored:
        model_name, converted_by = rename_source_key(
            name, renamings, converters, model.base_model_prefix, meta_state_dict
        )
        if converted_by is not None and _stacks_experts(converters, converted_by):
            # an expert stored alone: under its renamed name (`block_sparse_moe` -> `mlp`), which
            # the mixture-of-experts component's rows use
            mapping.setdefault(apply_renamings(name, renamings), name)
            continue
        if converted_by is not None:
            raise UnsupportedModelError(
                f"checkpoint tensor {name} is converted by transformers on load "
                f"({converted_by}), which the port does not reproduce"
            )
        mapping.setdefault(model_name, name)
    return mapping


def _stacks_experts(converters, converted_by) -> bool:
    """The converter that matched stacks per-expert tensors (and concatenates gate and up)."""
    from transformers.core_model_loading import Concatenate, MergeModulelist

    for converter in converters:
        if converted_by in converter.source_patterns:
            stacking = (MergeModulelist, Concatenate)
            return all(isinstance(op, stacking) for op in converter.operations)
    return False
