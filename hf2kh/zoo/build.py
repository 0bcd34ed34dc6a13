"""Build a tiny random checkpoint of one model type: shrunk config, weights, tokenizer.

`build_checkpoint` writes a Hugging Face layout (`config.json`, `model.safetensors`, tokenizer
files) the way a user's checkpoint looks. Weights are drawn after transformers' own init, as the
test fixtures do: HF initializes biases to 0 and norm weights to 1, which would hide a missing
bias or norm weight in a port.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from hf2kh.zoo.shrink import Shrunk, Tokens, shrink_overrides
from hf2kh.zoo.tokenizer import tokenizer_files
from hf2kh.zoo.types import ZooType

EMBEDDING_STD = 0.05
VECTOR_NOISE = 0.1


class BuildError(Exception):
    """Building the checkpoint failed at `stage` ("config", "model" or "save")."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


@dataclass
class Built:
    path: Path
    num_params: int
    num_layers: int
    overrides: dict


def tiny_config(zoo_type: ZooType, tokens: Tokens):
    """The config class's defaults with every size key shrunk, and what was overridden."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config_cls = CONFIG_MAPPING[zoo_type.model_type]
    shrunk: Shrunk = shrink_overrides(config_cls().to_dict(), tokens)
    config = config_cls(**shrunk.overrides)
    config.architectures = [zoo_type.architecture]
    return config, shrunk


def tiny_model(zoo_type: ZooType, config, seed: int = 0):
    import torch
    import transformers

    torch.manual_seed(seed)
    cls = getattr(transformers, zoo_type.architecture)
    model = cls._from_config(config, dtype=torch.float32)
    randomize_weights(model, seed)
    return model.eval()


def randomize_weights(model, seed: int = 0) -> None:
    """Re-draw every parameter: kernels ~ N(0, 1/fan_in), embeddings small, 1-D values noisy."""
    import torch
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    gen = torch.Generator().manual_seed(10_000 + seed)
    seen: set[int] = set()
    with torch.no_grad():
        for module in model.modules():
            for param in module.parameters(recurse=False):
                if id(param) in seen or not param.is_floating_point():
                    continue
                seen.add(id(param))
                noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
                if isinstance(module, nn.Embedding):
                    param.copy_(noise * EMBEDDING_STD)
                elif param.ndim >= 2:
                    fan_in = param.shape[0] if isinstance(module, Conv1D) else param.shape[-1]
                    param.copy_(noise / math.sqrt(max(fan_in, 1)))
                else:
                    param.add_(noise * VECTOR_NOISE)


def build_checkpoint(zoo_type: ZooType, tokens: Tokens, tokenizer_dir: Path, out: Path) -> Built:
    """Write the tiny checkpoint of `zoo_type` into `out`; a failure raises `BuildError`."""
    try:
        config, shrunk = tiny_config(zoo_type, tokens)
    except Exception as exc:  # noqa: BLE001 - any failure is reported with its stage
        raise BuildError("config", one_line(exc)) from exc
    try:
        model = tiny_model(zoo_type, config)
    except Exception as exc:  # noqa: BLE001
        raise BuildError("model", one_line(exc)) from exc
    try:
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        for path in tokenizer_files(tokenizer_dir):
            shutil.copy2(path, out / path.name)
    except Exception as exc:  # noqa: BLE001
        raise BuildError("save", one_line(exc)) from exc
    num_params = sum(p.numel() for p in model.parameters())
    return Built(out, num_params, shrunk.num_layers, shrunk.overrides)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else ""
    return f"{type(exc).__name__}: {first}"[:300]
