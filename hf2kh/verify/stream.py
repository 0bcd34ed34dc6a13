"""Streamed verification: both models held a piece at a time, for models that do not fit twice.

HF side: the model is built with its parameters on the `meta` device (buffers real, computed by
its own constructor), and each *unit* (a decoder block, or a module outside the blocks that holds
parameters itself: the token embedding, the final norm, the LM head) gets a forward pre-hook that
reads its weights from the safetensors files (one tensor at a time, cast to float32) and a forward
hook that puts them back on `meta`. A forward therefore holds one block at most, besides the
activations; tied parameters are read again under the name the checkpoint stores.

Keras side: the task is built from the preset with its variables left without values (inside
`keras.StatelessScope(initialize_variables=False)`), and each variable's initializer is pointed
at its dataset in the preset's weight file(s). A variable without a value is read through its
initializer every time a layer uses it (`KerasVariable.value`), so each dataset is read from the
h5 file when its layer runs and dropped after: the port holds one variable at a time.

The comparisons are the in-memory path's (`hf2kh.verify.decoder.verify_decoder`): the same rows,
tolerances and localization, on one short batch; greedy generation is skipped (each generated
token would read the whole model from disk again), and the report says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hf2kh.errors import Hf2khError
from hf2kh.verify.layer_checks import Case

# The one batch a streamed verification compares: two right-padded rows.
STREAMED_CASES = (Case((7, 4)),)
GREEDY_SKIPPED = (
    "streamed verification: greedy generation was not compared (each token would read the "
    "whole model from disk again); every layer and the logits were, on one batch of 2x7 tokens"
)


# -- when to stream ------------------------------------------------------------------------------

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# What the processes need besides the weights: torch, keras, keras_hub and transformers imported.
IMPORTS_BYTES = int(1.5e9)


@dataclass(frozen=True)
class MemoryEstimate:
    """The in-memory verification's need (the float32 HF model and the port in its dtype) and
    the memory available, in bytes."""

    needed: int
    available: int | None

    @property
    def fits(self) -> bool:
        return self.available is None or self.needed <= self.available

    def describe(self) -> str:
        gb = 1e9
        have = "unknown" if self.available is None else f"{self.available / gb:.1f} GB"
        return f"needs about {self.needed / gb:.1f} GB in memory, {have} available"


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def estimate(num_params: int, dtype: str, available: int | None = None) -> MemoryEstimate:
    """The in-memory verification of a model of `num_params` parameters converted in `dtype`:
    HF's float32 copy, the port's copy, the imports."""
    needed = num_params * (4 + BYTES.get(dtype, 4)) + IMPORTS_BYTES
    return MemoryEstimate(needed, available if available is not None else available_memory())


def checkpoint_params(index) -> int:
    """The number of parameters the checkpoint stores (`hf2kh.source.tensor_index`)."""
    return sum(int(np.prod(info.shape)) for info in index.values())


# -- HF side -------------------------------------------------------------------------------------


def streamed_hf_model(ckpt, config, block_paths: list[str], device: str = "cpu"):
    """The HF reference with its parameters on `meta`, each unit's weights read from the
    checkpoint just before it runs and dropped after (see the module docstring)."""
    from accelerate import init_empty_weights

    from hf2kh.inspect.build import instantiate
    from hf2kh.source import tensor_index
    from hf2kh.source.names import stored_names

    with init_empty_weights(include_buffers=False):
        model = instantiate(config, "cpu", torch.float32, trust_remote_code=ckpt.trust_remote_code)
    index = tensor_index(ckpt)
    names = stored_names(model, index)
    if device != "cpu":  # the parameters stay on meta until their unit runs
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        for module in model.modules():
            for key, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[key] = buffer.to(device)
    sources = _tensor_sources(model, names, index)
    _load_buffers(model, sources, device)
    StreamHooks(model, block_paths, sources, device)
    model.hf2kh_device = torch.device(device)  # where its inputs go (`layer_checks.hf_device`)
    return model.eval()


@dataclass(frozen=True)
class TensorSource:
    """Where a checkpoint tensor is: its file and stored name."""

    file: Path
    name: str


def _tensor_sources(model, names: dict[str, str], index) -> dict[str, TensorSource]:
    """Model parameter or buffer name -> where the checkpoint stores it; a tied parameter the
    checkpoint does not store is read under the name of the one it is tied to."""
    sources = {}
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    for members in groups.values():
        stored = [names.get(m, m) for m in members if names.get(m, m) in index]
        for member in members:
            own = names.get(member, member)
            chosen = own if own in index else (stored[0] if stored else None)
            if chosen is None:
                raise Hf2khError(
                    f"streamed verification: the checkpoint has no tensor for {member}"
                )
            sources[member] = TensorSource(Path(index[chosen].file), chosen)
    for name, _ in model.named_buffers(remove_duplicate=False):
        stored = names.get(name, name)
        if stored in index:
            sources[name] = TensorSource(Path(index[stored].file), stored)
    return sources


def read_tensor(source: TensorSource) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(source.file), framework="pt") as handle:
        return handle.get_tensor(source.name)


def _load_buffers(model, sources, device) -> None:
    """Buffers the checkpoint stores replace the constructor's (they are small)."""
    for name, buffer in list(model.named_buffers()):
        if name in sources and buffer is not None:
            owner, _, key = name.rpartition(".")
            module = model.get_submodule(owner)
            module._buffers[key] = read_tensor(sources[name]).to(device, buffer.dtype)


class StreamHooks:
    """Pre-hooks that read each unit's parameters, hooks that drop them after it ran."""

    def __init__(self, model, block_paths: list[str], sources, device: str):
        self.sources = sources
        self.device = device
        blocks = list(dict.fromkeys(block_paths))
        units: list[tuple[str, bool]] = [(p, True) for p in blocks]
        for path, module in model.named_modules():
            inside = any(path == b or path.startswith(f"{b}.") for b in blocks)
            if not inside and any(True for _ in module.parameters(recurse=False)):
                units.append((path, False))
        self.handles = []
        for path, recurse in units:
            module = model.get_submodule(path)
            self.handles.append(
                module.register_forward_pre_hook(self._loader(path, module, recurse))
            )
            self.handles.append(module.register_forward_hook(self._dropper(module, recurse)))

    def _loader(self, path, module, recurse):
        prefix = f"{path}." if path else ""

        def load(mod, args):
            for name, param in list(module.named_parameters(recurse=recurse)):
                owner, _, key = name.rpartition(".")
                target = module.get_submodule(owner) if owner else module
                value = read_tensor(self.sources[prefix + name]).to(self.device, torch.float32)
                if tuple(value.shape) != tuple(param.shape):
                    raise Hf2khError(
                        f"streamed verification: {prefix + name} is {tuple(value.shape)} in the "
                        f"checkpoint, {tuple(param.shape)} in the model"
                    )
                target._parameters[key] = torch.nn.Parameter(value, requires_grad=False)

        return load

    def _dropper(self, module, recurse):
        def drop(mod, args, output):
            for name, param in list(module.named_parameters(recurse=recurse)):
                owner, _, key = name.rpartition(".")
                target = module.get_submodule(owner) if owner else module
                target._parameters[key] = torch.nn.Parameter(
                    torch.empty(param.shape, dtype=param.dtype, device="meta"),
                    requires_grad=False,
                )

        return drop


# -- Keras side ----------------------------------------------------------------------------------


def streamed_causal_lm(preset: Path):
    """The preset's CausalLM with every variable read from the preset's weight file(s) each time
    a layer uses it (see the module docstring)."""
    import keras
    import keras_hub

    from hf2kh.verify.terminal import native_stderr_silenced

    with keras.StatelessScope(initialize_variables=False), native_stderr_silenced():
        # not compiled: compiling makes an optimizer, whose variables need values
        task = keras_hub.models.CausalLM.from_preset(str(preset), load_weights=False, compile=False)
    forget_uninitialized(task.weights)
    backbone_ids = {id(v) for v in task.backbone.weights}
    own = [v for v in task.weights if id(v) not in backbone_ids]
    if own:
        raise Hf2khError(
            f"streamed verification reads the backbone's weights file only; the task has "
            f"{len(own)} variable(s) of its own ({own[0].path})"
        )
    datasets = _weight_datasets(task.backbone, Path(preset))
    for variable in task.backbone.weights:
        variable._initializer = PresetValue(datasets[id(variable)], variable.dtype)
    return task


def forget_uninitialized(variables) -> None:
    """Keep Keras from initializing these variables the next time any `StatelessScope` closes
    (their values are read on use, never held)."""
    from keras.src.backend.common import global_state

    ours = {id(v) for v in variables}
    pending = global_state.get_global_attribute("uninitialized_variables", [])
    global_state.set_global_attribute(
        "uninitialized_variables", [v for v in pending if id(v) not in ours]
    )


@dataclass(frozen=True)
class Dataset:
    """One variable's dataset in a preset: the h5 file and the path inside it."""

    file: Path
    path: str


class PresetValue:
    """A variable's initializer that reads its value from the preset's h5 file on every call."""

    def __init__(self, dataset: Dataset, dtype: str):
        self.dataset = dataset
        self.dtype = dtype

    def __call__(self, shape, dtype=None):
        import h5py
        import keras
        import ml_dtypes

        with h5py.File(self.dataset.file, "r") as f:
            ds = f[self.dataset.path]
            value = (
                np.array(ds, dtype=ml_dtypes.bfloat16)
                if ds.attrs.get("dtype") == "bfloat16"
                else ds[()]
            )
        if str(value.dtype) != self.dtype:  # as `from_preset` loads it: in the variable's dtype
            value = value.astype(ml_dtypes.bfloat16 if self.dtype == "bfloat16" else self.dtype)
        return keras.ops.convert_to_tensor(value, dtype=self.dtype)


def _weight_datasets(backbone, preset: Path) -> dict[int, Dataset]:
    """`{id(variable): Dataset}` for every backbone variable: where Keras' own weight saving
    puts it (its object walk, recorded without writing), resolved in the preset's file(s)."""
    from keras.src.saving import saving_lib

    class Recorder(saving_lib.H5IOStore):
        def __init__(self):  # no file: records where each variable would be written
            self.mode = "w"
            self.where: dict[int, tuple[str, str]] = {}
            self._h5_entry_path = ""

        def __bool__(self):
            return True

        def make(self, path, metadata=None):
            self._h5_entry_path = path
            return self

        def __setitem__(self, key, value):
            self.where[id(value)] = (self._h5_entry_path, key)

    recorder = Recorder()
    saving_lib._save_state(backbone, recorder, None, "", set())
    sharded = preset / "model.weights.json"
    shard_of = json.loads(sharded.read_text())["weight_map"] if sharded.exists() else None
    datasets = {}
    for variable in backbone.weights:
        if id(variable) not in recorder.where:
            raise Hf2khError(
                f"streamed verification: cannot tell where the preset stores {variable.path}"
            )
        group, key = recorder.where[id(variable)]
        vars_path = f"/{group}/vars" if group else "/vars"
        if shard_of is None:
            file = preset / "model.weights.h5"
        else:
            files = shard_of.get(vars_path) or shard_of.get(group)
            files = files if isinstance(files, list) else [files]
            file = next(
                (preset / f for f in files if f and _has(preset / f, f"{vars_path}/{key}")), None
            )
            if file is None:
                raise Hf2khError(f"streamed verification: {variable.path} is in no shard")
        datasets[id(variable)] = Dataset(file, f"{vars_path}/{key}")
    return datasets


def _has(file: Path, path: str) -> bool:
    import h5py

    if not os.path.exists(file):
        return False
    with h5py.File(file, "r") as f:
        return path in f
