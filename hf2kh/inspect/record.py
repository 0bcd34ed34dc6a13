"""Record one forward pass: module calls via hooks, every torch call via a TorchFunctionMode.

Each tensor that appears is given a value id the first time it is seen (by object identity; the
recorder keeps a reference to every tensor so identities are never reused). A call's inputs and
outputs are value ids, so the recorded list of calls is the model's dataflow graph, including the
functional code between modules (residual adds, rotary, scaling, masks).

The recorder works on any device, `meta` included: there a forward costs no memory and gives the
exact shapes of a model of any size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from hf2kh.inspect.graph import Call, Value

# Tensor methods/properties that only read metadata; they carry no dataflow.
_METADATA_CALLS = {
    "__get__",
    "__set__",
    "size",
    "dim",
    "numel",
    "is_floating_point",
    "is_complex",
    "_set_grad_enabled",
    "__len__",
    "__bool__",
    "__format__",
    "__repr__",
    "element_size",
    "get_device",
    "is_contiguous",
    "data_ptr",
    "stride",
    "__torch_function__",
}


def _leaves(obj: Any) -> list[Any]:
    """The leaves of a (nested) structure of tuples, lists, dicts and ModelOutputs, in order."""
    found: list[Any] = []
    stack = [obj]
    while stack:
        item = stack.pop(0)
        if isinstance(item, (list, tuple)):
            stack[0:0] = list(item)
        elif isinstance(item, dict):
            stack[0:0] = list(item.values())
        elif not isinstance(item, torch.Tensor) and callable(getattr(item, "to_tuple", None)):
            stack[0:0] = list(item.to_tuple())
        else:
            found.append(item)
    return found


def flatten_tensors(obj: Any) -> list[torch.Tensor]:
    """All tensors in a (nested) structure of tuples, lists, dicts and ModelOutputs."""
    return [leaf for leaf in _leaves(obj) if isinstance(leaf, torch.Tensor)]


@dataclass
class Recording:
    calls: list[Call] = field(default_factory=list)
    values: list[Value] = field(default_factory=list)
    # Value id -> the tensor itself (kept alive so identities stay unique; meta tensors are free).
    tensors: dict[int, torch.Tensor] = field(default_factory=dict)


class _Recorder(TorchFunctionMode):
    def __init__(self, named_tensors: dict[int, str]):
        super().__init__()
        self.rec = Recording()
        self._ids: dict[int, int] = {}
        self._sources = named_tensors  # id(tensor) -> "param:..."/"buffer:..."/"input:..."
        self.scope: list[str] = [""]
        self._open: list[int] = []  # indices of the module calls still running
        self.active = True

    # -- values ------------------------------------------------------------------------------
    def value_id(self, tensor: torch.Tensor, producer: int | None = None) -> int:
        key = id(tensor)
        if key in self._ids:
            return self._ids[key]
        vid = len(self.rec.values)
        if producer is not None:
            source = f"call:{producer}"
        else:
            source = self._sources.get(key, "external")
        self._ids[key] = vid
        self.rec.tensors[vid] = tensor
        self.rec.values.append(
            Value(
                vid,
                tuple(int(s) for s in tensor.shape),
                str(tensor.dtype).removeprefix("torch."),
                source,
            )
        )
        return vid

    def _known(self, tensor: torch.Tensor) -> bool:
        return id(tensor) in self._ids

    # -- torch functions ---------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", None) or str(func)
        if not self.active or name in _METADATA_CALLS:
            return out
        in_tensors = flatten_tensors((args, kwargs))
        out_tensors = [t for t in flatten_tensors(out) if not any(t is i for i in in_tensors)]
        if not in_tensors and not out_tensors:
            return out
        index = len(self.rec.calls)
        call = Call(
            index=index,
            kind="function",
            target=name,
            scope=self.scope[-1],
            inputs=[self.value_id(t) for t in in_tensors],
            outputs=[],
            constants=_constants((args, kwargs)),
        )
        self.rec.calls.append(call)
        for t in out_tensors:
            if not self._known(t):
                call.outputs.append(self.value_id(t, producer=index))
            else:
                call.outputs.append(self.value_id(t))
        target = args[0] if args else None
        if _mutates(name) and isinstance(target, torch.Tensor):
            # `x.add_(y)`, `x += y`, `x[i] = y`: x now holds a new value, made by this call.
            # Later reads of x must depend on it, not on x's value before the call.
            self._ids.pop(id(target), None)
            call.outputs.append(self.value_id(target, producer=index))
        return out

    # -- module hooks ------------------------------------------------------------------------
    def pre_hook(self, path: str):
        def hook(module, args, kwargs):
            if not self.active:
                return None
            index = len(self.rec.calls)
            tensors = flatten_tensors((args, kwargs))
            self.rec.calls.append(
                Call(
                    index=index,
                    kind="module",
                    target=path,
                    scope=self.scope[-1],
                    inputs=[self.value_id(t) for t in tensors],
                    outputs=[],
                )
            )
            self._open.append(index)
            self.scope.append(path)
            return None

        return hook

    def post_hook(self, path: str):
        def hook(module, args, kwargs, output):
            if not self.active:
                return None
            self.scope.pop()
            index = self._open.pop()
            call = self.rec.calls[index]
            for t in flatten_tensors(output):
                call.outputs.append(self.value_id(t, producer=None if self._known(t) else index))
            return None

        return hook


_INPLACE_DUNDERS = {
    "__setitem__",
    "__iadd__",
    "__isub__",
    "__imul__",
    "__itruediv__",
    "__ifloordiv__",
    "__imod__",
    "__ipow__",
    "__iand__",
    "__ior__",
    "__ixor__",
    "__ilshift__",
    "__irshift__",
}


def _mutates(name: str) -> bool:
    """True for torch's in-place ops (`add_`, `masked_fill_`, `__iadd__`, `__setitem__`...)."""
    return name in _INPLACE_DUNDERS or (name.endswith("_") and not name.endswith("__"))


def _constants(obj: Any) -> list[str]:
    """Short reprs of the non-tensor scalar arguments (e.g. the 0.5 of `x * 0.5`)."""
    scalars = [
        repr(leaf)
        for leaf in _leaves(obj)
        if isinstance(leaf, (int, float)) and not isinstance(leaf, bool)
    ]
    return scalars[:8]


def record_forward(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
) -> tuple[Recording, Any]:
    """Run `model(**inputs)` once and record its calls. Returns the recording and the output."""
    named: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        named.setdefault(id(p), f"param:{name}")
    for name, b in model.named_buffers():
        named.setdefault(id(b), f"buffer:{name}")
    for name, t in inputs.items():
        named[id(t)] = f"input:{name}"
    recorder = _Recorder(named)
    handles = []
    for path, module in model.named_modules():
        if path == "":
            continue
        handles.append(module.register_forward_pre_hook(recorder.pre_hook(path), with_kwargs=True))
        handles.append(module.register_forward_hook(recorder.post_hook(path), with_kwargs=True))
    for t in inputs.values():
        recorder.value_id(t)
    try:
        with torch.no_grad(), recorder:
            output = model(**inputs)
    finally:
        recorder.active = False
        for h in handles:
            h.remove()
    return recorder.rec, output
