"""Find, validate and read a checkpoint's weight files.

Safetensors are read header-first (no tensor data) for the index, and one tensor at a time for
the data. Pickled `pytorch_model*.bin` files are only ever opened with
`torch.load(weights_only=True)`, and only when the user opted in with `--allow-pickle`.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from hf2kh.errors import SourceError
from hf2kh.source.hub import one_line
from hf2kh.source.safetensors_header import read_header

if TYPE_CHECKING:
    import torch

    from hf2kh.source.checkpoint import Checkpoint

SAFETENSORS = "safetensors"
PICKLE = "pickle"
NO_WEIGHTS = "none"

SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
OTHER_FORMATS = (
    "tf_model.h5",
    "flax_model.msgpack",
    "model.ckpt.index",
    "consolidated.safetensors",
)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "float32", "bfloat16", ... (torch dtype name without the "torch." prefix)
    file: Path


# -- discovery --------------------------------------------------------------------------------


def find_weights(
    directory: Path, *, allow_pickle: bool, label: str
) -> tuple[tuple[Path, ...], str]:
    """Locate and validate the weight files in `directory`; return (files, format).

    Safetensors win over pickle. Every file is checked (headers, index, shard membership) so that a
    broken checkpoint is reported here, naming the file, rather than halfway through a conversion.
    """
    files = _validated(directory, SAFETENSORS_SINGLE, SAFETENSORS_INDEX, _safetensors_names)
    if files:
        return files, SAFETENSORS
    pickled = (directory / PICKLE_INDEX).is_file() or (directory / PICKLE_SINGLE).is_file()
    if pickled and not allow_pickle:
        raise SourceError(
            f"{label} has only pickled weights ({PICKLE_SINGLE}); pickle can run code, so pass "
            "--allow-pickle if you trust it (then loaded with torch.load(weights_only=True)), or "
            "convert it to safetensors"
        )
    files = _validated(directory, PICKLE_SINGLE, PICKLE_INDEX, _pickle_names)
    if files:
        return files, PICKLE

    others = sorted(
        p.name
        for p in directory.iterdir()
        if p.name in OTHER_FORMATS or p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".h5"}
    )
    found = f" (found only {', '.join(others)})" if others else ""
    wanted = f"{SAFETENSORS_SINGLE} or {SAFETENSORS_INDEX}"
    if allow_pickle:
        wanted += f", {PICKLE_SINGLE} or {PICKLE_INDEX}"
    raise SourceError(
        f"{label} has no PyTorch weight files{found}; expected {wanted}, as written by "
        "save_pretrained"
    )


def _read_index(index_path: Path) -> dict[str, str]:
    try:
        data = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SourceError(
            f"{index_path} is not valid JSON ({one_line(error)}); re-download or re-save the "
            "checkpoint"
        ) from error
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise SourceError(
            f"{index_path} has no valid 'weight_map' (tensor name -> shard file); re-download or "
            "re-save the checkpoint"
        )
    if not weight_map:
        raise SourceError(f"{index_path} lists no tensors; re-download or re-save the checkpoint")
    for file_name in set(weight_map.values()):
        parts = PurePosixPath(file_name).parts
        if PurePosixPath(file_name).is_absolute() or ".." in parts or "\\" in file_name:
            raise SourceError(
                f"{index_path} names shard '{file_name}' outside the checkpoint directory; "
                "refusing it, fix the index"
            )
    return weight_map


def _validated(
    directory: Path, single: str, index_name: str, names_of: Callable[[Path], list[str]]
) -> tuple[Path, ...]:
    """The weight files of one format (sharded index first, then the single file), validated.

    Returns () when the format is absent. Every shard the index names must exist, every tensor it
    names must be in a shard, and no tensor may appear in two shards.
    """
    index_path = directory / index_name
    if index_path.is_file():
        weight_map: Mapping[str, str] = _read_index(index_path)
        files = []
        for file_name in sorted(set(weight_map.values())):
            if not (directory / file_name).is_file():
                raise SourceError(
                    f"{index_path} names shard '{file_name}', which is missing; re-download the "
                    "checkpoint (all shards are needed)"
                )
            files.append(directory / file_name)
    elif (directory / single).is_file():
        weight_map, files = {}, [directory / single]
    else:
        return ()
    found: dict[str, Path] = {}
    for path in files:
        for name in names_of(path):
            if name in found:
                raise SourceError(
                    f"tensor '{name}' appears in both {found[name].name} and {path.name}; the "
                    "shards contradict each other, re-download the checkpoint"
                )
            found[name] = path
    for name, file_name in weight_map.items():
        if name not in found:
            raise SourceError(
                f"{index_path} maps tensor '{name}' to '{file_name}', but no shard contains it; "
                "re-download the checkpoint"
            )
    return tuple(files)


def _safetensors_names(path: Path) -> list[str]:
    return [entry.name for entry in read_header(path)]


def _pickle_names(path: Path) -> list[str]:
    return list(_load_pickle(path))


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    """`torch.load(weights_only=True)`, memory-mapped where the file format allows it."""
    import torch

    try:
        state = torch.load(
            path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
        )
    except pickle.UnpicklingError as error:
        raise SourceError(
            f"{path} holds objects other than tensors, which weights_only loading refuses; "
            "refusing to load it, convert the checkpoint to safetensors in a trusted environment"
        ) from error
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise SourceError(
            f"{path} cannot be loaded ({one_line(error)}); re-download or re-save the checkpoint"
        ) from error
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise SourceError(
            f"{path} is not a flat state dict of tensors; re-save it with "
            "save_pretrained or convert it to safetensors"
        )
    return state


# -- reading ----------------------------------------------------------------------------------


def _require_weights(ckpt: Checkpoint) -> None:
    if not ckpt.weight_files:
        raise SourceError(
            f"{ckpt.repo} was opened without its weights; open it with need_weights=True"
        )


def tensor_index(ckpt: Checkpoint) -> dict[str, TensorInfo]:
    """Name -> TensorInfo for every tensor in the checkpoint, without loading tensor data."""
    _require_weights(ckpt)
    index: dict[str, TensorInfo] = {}
    for path in ckpt.weight_files:
        if ckpt.weight_format == SAFETENSORS:
            for entry in read_header(path):
                index[entry.name] = TensorInfo(entry.name, entry.shape, entry.dtype, path)
        else:
            for name, tensor in _load_pickle(path).items():
                dtype = str(tensor.dtype).removeprefix("torch.")
                index[name] = TensorInfo(name, tuple(tensor.shape), dtype, path)
    return index


def iter_tensors(ckpt: Checkpoint) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) one at a time, shard by shard; each tensor exactly once."""
    _require_weights(ckpt)
    if ckpt.weight_format == SAFETENSORS:
        from safetensors import SafetensorError, safe_open

        for path in ckpt.weight_files:
            try:
                with safe_open(path, framework="pt") as handle:
                    for name in handle.keys():
                        yield name, handle.get_tensor(name)
            except SafetensorError as error:
                raise SourceError(
                    f"{path} cannot be read ({one_line(error)}); re-download the checkpoint"
                ) from error
    else:
        for path in ckpt.weight_files:
            state = _load_pickle(path)
            for name in list(state):
                yield name, state.pop(name)
            del state


def check_shapes(ckpt: Checkpoint, expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise if a checkpoint tensor's shape contradicts `expected` (the model built from config).

    Only names present on both sides are compared: missing and extra tensors are the weight audit's
    business. The first mismatch in `expected`'s order is reported.
    """
    index = tensor_index(ckpt)
    for name, shape in expected.items():
        info = index.get(name)
        if info is None:
            continue
        want = tuple(int(d) for d in shape)
        if info.shape != want:
            raise SourceError(
                f"tensor '{name}' in {info.file.name} has shape {list(info.shape)} but config.json "
                f"implies {list(want)}; the weights do not belong to this config, fix config.json "
                "or use the matching weights"
            )
