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
    permuted by a `WeightConverter`) is refused, naming it.
    """
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    meta_state_dict = model.state_dict()
    mapping: dict[str, str] = {}
    for name in stored:
        model_name, converted_by = rename_source_key(
            name, renamings, converters, model.base_model_prefix, meta_state_dict
        )
        if converted_by is not None:
            raise UnsupportedModelError(
                f"checkpoint tensor {name} is converted by transformers on load "
                f"({converted_by}), which the port does not reproduce"
            )
        mapping.setdefault(model_name, name)
    return mapping
